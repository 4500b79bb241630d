"""A shared server on a real local Dask cluster (``serve --users --jobs 2``): the machine's two slots
are the two workers, so two people's jobs run at once, each project on a backend of its own that
shares the one client, and each editor hears the live progress of its own run only."""

from __future__ import annotations

import time

import pytest
from argon2 import PasswordHasher

from nodeflow.server import ClassServer
from nodeflow.users import Accounts

from .conftest import make_graph

pytest.importorskip("distributed")

from nodeflow.parallel import DaskBackend  # noqa: E402

CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def test_two_peoples_jobs_run_at_once_each_hearing_only_its_own(registry, tmp_path):
    accounts = Accounts(tmp_path / "root", hasher=CHEAP)
    people = {name: accounts.add(name, f"{name}-password") for name in ("alice", "bob")}
    with DaskBackend(jobs=2) as cluster:
        server = ClassServer(tmp_path / "root", registry, accounts, device="cpu", cluster=cluster, slots=2)
        try:
            sessions, heard = {}, {}
            for name, user in people.items():
                session = server.session(server.projects.create(user, "p"))
                session.document.replace(make_graph({f"slow_{name}": ("test.slow", {"steps": 25, "delay": 0.1})}, []))
                heard[name] = []
                session.subscribe(lambda e, seen=heard[name]: seen.append((e.kind, e.node_id, time.time())))
                sessions[name] = session
            assert sessions["alice"].queue.backend is not sessions["bob"].queue.backend
            assert sessions["alice"].worker is None  # the Dask workers are the worker processes
            for session in sessions.values():
                assert session.queue.submit()["status"] == "running"  # two slots: nobody waits
            runs = {}
            for name, session in sessions.items():
                report = session.queue.wait(90)
                assert report is not None and report.ok, report.to_json() if report else None
                runs[name] = session.runs.get(1)
            a, b = runs["alice"], runs["bob"]
            assert a["started"] < b["ended"] and b["started"] < a["ended"]  # at once, not one after the other
            for name, seen in heard.items():
                progress = [when for kind, node, when in seen if kind == "progress" and node == f"slow_{name}"]
                assert progress and progress[0] < runs[name]["ended"] - 1.0  # live from the worker, not at the end
                assert {node for _, node, _ in seen if node} == {f"slow_{name}"}  # and nothing of the other's
        finally:
            server.close()
    assert cluster.client is None  # the shares left the cluster to its owner, which closed it
