"""What one person may hold on a shared server (nodeflow.server with nodeflow.limits): a job over the
memory limit fails alone, naming the limit, while another person's job finishes; an estimate is
measured in a process of its own, never the server's; and nobody can keep more projects open, or
more estimates measuring, than the limits allow. Real sessions of the test pack, with real worker
processes."""

from __future__ import annotations

import os
import threading

import pytest

from nodeflow.graph import Graph
from nodeflow.limits import JobLimits
from nodeflow.server import ClassServer, WorkRefused
from nodeflow.users import Accounts
from tests.core.test_classroom_server import CHEAP, Clock, gate_graph, pack
from tests.waiting import wait_for

MiB = 2**20
GiB = 2**30
#: a job's limit as a real server sets it (at least MIN_JOB_MEMORY): every job process starts from the fork
#: server with torch already imported, about 0.9 GB of its data segment, so a limit under 1 GiB fits no job
LIMIT = 2 * GiB


def allocate_graph(count: int) -> Graph:
    return Graph.from_data({"format": "nodeflow.graph", "version": 1, "name": "allocate",
                            "nodes": [{"id": "take", "type": "test.allocate", "params": {"bytes": count}}],
                            "edges": []})


def class_server(tmp_path, names=("alice", "bob"), **args) -> tuple[ClassServer, dict]:
    accounts = Accounts(tmp_path / "root", hasher=CHEAP)
    server = ClassServer(tmp_path / "root", pack(), accounts, device="cpu", **args)
    users = {name: accounts.add(name, f"{name}-password") for name in names}
    return server, users


def test_a_job_over_the_memory_limit_fails_alone_naming_the_limit(tmp_path):
    server, users = class_server(tmp_path, isolate=True, limits=JobLimits(memory_bytes=LIMIT))
    try:
        alice = server.session(server.projects.create(users["alice"], "big"))
        bob = server.session(server.projects.create(users["bob"], "small"))
        alice.document.replace(allocate_graph(2 * LIMIT))
        bob.document.replace(allocate_graph(16 * MiB))
        alice.queue.submit()
        bob.queue.submit()
        assert wait_for(lambda: alice.runs.get(1)["status"] in ("done", "failed")
                        and bob.runs.get(1)["status"] in ("done", "failed"), timeout=60)
        assert bob.runs.get(1)["status"] == "done"
        failed = alice.runs.get(1)
        assert failed["status"] == "failed"
        error = failed["nodes"]["take"]["error"]
        assert "over this server's memory limit per job, 2 GiB (serve --job-memory)" in error, error
        assert "MemoryError" in error and "worker process" not in error  # the node failed; its worker did not die
        assert alice.snapshot()["nodes"]["take"]["state"] == "failed"
    finally:
        server.close()


def test_an_estimate_on_a_class_server_is_measured_in_a_process_of_its_own(tmp_path):
    server, users = class_server(tmp_path, isolate=False, limits=JobLimits(memory_bytes=LIMIT))
    try:
        session = server.session(server.projects.create(users["alice"], "p"))
        session.document.replace(allocate_graph(64 * MiB))
        found = session.estimator.estimate()
        entry = found["nodes"]["take"]
        assert entry["status"] == "stale" and entry["bytes"] == 64 * MiB
        assert entry["pid"] != os.getpid()  # the server process allocated nothing of it
        assert session.estimator.worker.pid is None  # and that process has ended, its memory given back
        session.document.replace(allocate_graph(2 * LIMIT))
        over = session.estimator.estimate()["nodes"]["take"]
        assert over["status"] == "error"
        assert "over this server's memory limit per job, 2 GiB (serve --job-memory)" in over["error"]
    finally:
        server.close()


def test_one_person_may_have_one_estimate_measuring_at_a_time(tmp_path):
    server, users = class_server(tmp_path, isolate=False)
    try:
        first = server.session(server.projects.create(users["alice"], "first"))
        second = server.session(server.projects.create(users["alice"], "second"))
        theirs = server.session(server.projects.create(users["bob"], "bob's"))
        for session in (first, second, theirs):
            session.document.replace(allocate_graph(MiB))
        with server.estimating("alice"):  # one of alice's estimates is being measured
            with pytest.raises(WorkRefused) as refused:
                second.estimator.estimate()
            assert refused.value.status == 429 and "the most one person may have at once (1)" in str(refused.value)
            assert theirs.estimator.estimate()["nodes"]["take"]["status"] == "stale"  # bob is not held up by alice
        assert first.estimator.estimate()["nodes"]["take"]["status"] == "stale"
    finally:
        server.close()


def test_over_the_open_projects_limit_the_idle_one_closes_else_the_next_is_refused(tmp_path):
    clock = Clock()
    server, users = class_server(tmp_path, names=("alice", "bob"), isolate=False, max_open_projects=2, clock=clock)
    try:
        projects = [server.projects.create(users["alice"], f"p{i}") for i in range(4)]
        bobs = server.projects.create(users["bob"], "bob's")
        first = server.session(projects[0])
        clock.now += 1
        server.session(projects[1])
        clock.now += 60
        server.session(projects[2])  # the least recently used idle one makes room
        open_now = server.open_sessions()
        assert projects[0].id not in open_now and {projects[1].id, projects[2].id} <= set(open_now)
        assert first.queue.closing  # closed (its graph and runs are on disk, for when it opens again)
        assert server.session(bobs).owner == "bob"  # another person is never refused for alice's projects

        server.hold(projects[1].id)  # shown on a page
        busy = server.session(projects[2])
        busy.document.replace(gate_graph(tmp_path / "never"))
        busy.queue.submit()  # running
        clock.now += 60
        with pytest.raises(WorkRefused) as refused:
            server.session(projects[3])
        assert refused.value.status == 429
        assert "the most one person may have at once (2; serve --max-open-projects)" in str(refused.value)
        assert projects[3].id not in server.open_sessions() and len(
            [s for s in server.open_sessions().values() if s.owner == "alice"]) == 2
        server.session(bobs)  # still fine for bob
    finally:
        server.close()


def test_projects_opened_at_once_never_exceed_the_limit(tmp_path):
    clock = Clock()
    server, users = class_server(tmp_path, names=("alice",), isolate=False, max_open_projects=3, clock=clock)
    try:
        projects = [server.projects.create(users["alice"], f"p{i}") for i in range(8)]
        for project in projects:
            server.hold(project.id)  # every page shown: nothing may be closed to make room
        answers: list[str] = []

        def open_one(project):
            try:
                server.session(project)
                answers.append("opened")
            except WorkRefused:
                answers.append("refused")

        threads = [threading.Thread(target=open_one, args=(p,)) for p in projects]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(answers) == ["opened"] * 3 + ["refused"] * 5
        assert len(server.open_sessions()) == 3
    finally:
        server.close()


def test_runs_queued_before_a_restart_are_resumed_whatever_the_open_projects_limit(tmp_path):
    from nodeflow.runs import RunStore

    server, users = class_server(tmp_path, names=("alice",), isolate=False, max_open_projects=1)
    projects = [server.projects.create(users["alice"], f"p{i}") for i in range(2)]
    server.close()
    for project in projects:
        RunStore(project.path).create(gate_graph(tmp_path / "open"), None, "api", status="queued")
    (tmp_path / "open").touch()
    again = ClassServer(tmp_path / "root", pack(), Accounts(tmp_path / "root", hasher=CHEAP), device="cpu",
                        isolate=False, max_open_projects=1)
    try:
        assert sorted(again.resume_queued()) == sorted(p.id for p in projects)
        stores = [again.open_sessions()[p.id].runs for p in projects]
        assert wait_for(lambda: all(store.get(1)["status"] == "done" for store in stores), timeout=30)
    finally:
        again.close()
