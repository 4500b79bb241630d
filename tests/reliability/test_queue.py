"""The run queue: runs asked for while one runs wait their turn, can be cancelled, and outlive a
killed worker and a killed server."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from nodeflow.session import Session
from tests.core.conftest import make_graph
from tests.waiting import wait_for


def slow_graph(steps=100_000, delay=0.01):
    return make_graph({"a": ("test.constant", {"value": 2}), "slow": ("test.slow", {"steps": steps, "delay": delay}),
                       "after": ("test.add", {})},
                      ["a.value->slow.value", "slow.value->after.a"], name="queue")


def test_killed_worker_leaves_the_run_interrupted_and_the_queued_run_behind_it_runs(registry, workspace):
    session = Session(registry, workspace, graph=slow_graph(), isolate=True)
    try:
        first = session.queue.submit()
        assert first["status"] == "running" and first["plan"] == {"a": "run", "slow": "run", "after": "run"}
        assert wait_for(lambda: session.snapshot()["nodes"]["slow"]["state"] == "running")
        session.document.edit("set_params", id="slow", params={"steps": 3, "delay": 0})
        second = session.queue.submit(source="api")
        assert second["status"] == "queued" and second["position"] == 1
        assert [r["id"] for r in session.queue.queued()] == [second["id"]]
        os.kill(session.worker.pid, signal.SIGKILL)
        assert wait_for(lambda: session.runs.get(second["id"])["status"] == "done", timeout=60)
        killed = session.runs.get(first["id"])
        assert killed["status"] == "interrupted" and "SIGKILL" in killed["error"]
        assert killed["nodes"]["a"]["status"] == "ran" and killed["nodes"]["slow"]["status"] == "failed"
        after = session.runs.get(second["id"])
        assert after["nodes"]["slow"]["status"] == "ran" and after["nodes"]["after"]["metrics"] == {"sum": 5.0}
        assert after["graph"]["nodes"][1]["params"] == {"steps": 3, "delay": 0}  # the graph as it was queued
        assert after["changes"] == {"slow.delay": {"from": 0.01, "to": 0}, "slow.steps": {"from": 100_000, "to": 3}}
    finally:
        session.close()


def test_queued_runs_can_be_cancelled_and_survive_a_restart(registry, workspace):
    session = Session(registry, workspace, graph=slow_graph())
    try:
        first = session.queue.submit()
        second = session.queue.submit()
        session.document.edit("set_params", id="a", params={"value": 7})
        third = session.queue.submit()
        assert (second["position"], third["position"]) == (1, 2)
        assert session.queue.cancel(second["id"]) == "cancelled"
        assert session.runs.get(third["id"])["position"] == 1
        with pytest.raises(KeyError, match="no run 99"):
            session.queue.cancel(99)
    finally:
        session.close()  # stops the running one; the queued one waits for the next start
    assert session.runs.get(first["id"])["status"] == "stopped"  # on request: closing stops it cleanly
    assert session.runs.get(third["id"])["status"] == "queued"
    restarted = Session(registry, workspace, graph=slow_graph(steps=1))
    try:
        assert wait_for(lambda: restarted.runs.get(third["id"])["status"] == "running")
        assert restarted.queue.cancel(third["id"]) == "cancelling"
        restarted.queue.wait(30)
        assert restarted.runs.get(third["id"])["status"] == "cancelled"
        assert restarted.runs.get(second["id"])["status"] == "cancelled"
        assert [r["status"] for r in restarted.runs.list()] == ["cancelled", "cancelled", "stopped"]
    finally:
        restarted.close()


def test_a_cancelled_sweep_ends_every_running_branch_cancelled_however_slowly_the_store_answers(registry, workspace):
    """Cancelling a sweep stops its job once every branch of it is marked: a stop sent after the first
    branch alone let the job end before the second was marked, and that one ended ``stopped``."""
    session = Session(registry, workspace, graph=slow_graph())
    ended, asked, store_cancel = threading.Event(), [], session.queue.store.cancel

    def slow_store_cancel(run_id):  # the store answers the second branch only once the job ended,
        if asked:                   # or after 3 s when nothing ends it before every branch is marked
            ended.wait(3)
        asked.append(run_id)
        return store_cancel(run_id)

    try:
        sweep = session.sweeps.submit([("slow.steps", [99_999, 100_000])])
        session.queue.finished_hooks.append(lambda run_id: ended.set())
        assert wait_for(lambda: session.sweeps.get(sweep["id"])["progress"] == "branch 1 of 2")
        session.queue.store.cancel = slow_store_cancel
        session.sweeps.cancel(sweep["id"])
        session.queue.wait(30)
        assert [b["status"] for b in session.sweeps.get(sweep["id"])["branches"]] == ["cancelled", "cancelled"]
    finally:
        session.close()


def test_server_killed_with_a_queue_resumes_it_on_start(tmp_path):
    """A real server process: two runs asked for over HTTP, the server killed with SIGKILL; the
    next server on the same workspace shows the first interrupted and runs the second."""
    from tests.ui.conftest import Server

    workspace = tmp_path / "workspace"
    server = Server(workspace)
    try:
        graph = server.api("GET", "/api/graph").json()
        slow = next(n for n in graph["nodes"] if n["id"] == "slow")
        slow["params"] = {"steps": 100_000, "delay": 0.01}
        assert server.api("PUT", "/api/graph", json=graph).status_code == 200
        first = server.api("POST", "/api/run", json={"target": "slow"}).json()
        slow["params"] = {"steps": 5, "delay": 0}
        assert server.api("PUT", "/api/graph", json=graph).status_code == 200
        second = server.api("POST", "/api/run", json={"target": "desc"}).json()
        assert (first["status"], second["status"], second["position"]) == ("running", "queued", 1)
        listed = server.api("GET", "/api/runs").json()
        assert [(r["id"], r["status"], r["source"]) for r in listed] == [(second["id"], "queued", "api"),
                                                                        (first["id"], "running", "api")]
        assert server.api("GET", "/api/runs/nope").status_code == 404
        assert server.api("POST", "/api/runs/77/cancel").status_code == 404
        for too_big in ("9" * 30, "-1", "0"):  # beyond what SQLite stores, or no run id at all
            assert server.api("GET", f"/api/runs/{too_big}").status_code == 404
            assert server.api("POST", f"/api/runs/{too_big}/cancel").status_code == 404
        assert wait_for(lambda: server.api("GET", f"/api/runs/{first['id']}").json()["curves"].get("slow"))
    finally:
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
    again = Server(workspace)
    try:
        assert wait_for(lambda: again.api("GET", f"/api/runs/{second['id']}").json()["status"] == "done", 60)
        done = again.api("GET", f"/api/runs/{second['id']}").json()
        assert done["nodes"]["desc"]["status"] == "ran" and done["target"] == "desc"
        killed = again.api("GET", f"/api/runs/{first['id']}").json()
        assert killed["status"] == "interrupted" and killed["nodes"]["slow"]["status"] == "interrupted"
    finally:
        again.stop()
