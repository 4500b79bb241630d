"""One word per way a run ends, wherever it is read: a run stopped on request is "stopped" and a run
whose process died (kill -9) is "interrupted", in ``GET /api/runs``, ``nodeflow runs``, ``runs show``
and on the node's card (``GET /api/status``), before and after the editor's server starts again; a
stopped node's curves stay in its Output tab after the restart; and a store written when a stop was
called "interrupted" reads "stopped"."""

from __future__ import annotations

import io
import json
import signal
import sqlite3
from contextlib import redirect_stderr, redirect_stdout

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodeflow.cli import main
from nodeflow.graph import Graph
from nodeflow.runs import FORMAT, RunStore
from nodeflow.session import Session
from tests.ui.conftest import Server
from tests.ui.server import demo_graph, pack_registry
from tests.waiting import wait_for


def long_graph(path) -> Graph:
    """The test pack's demo graph with a slow node that goes on until it is stopped or killed."""
    data = demo_graph().model_dump(mode="json")
    next(n for n in data["nodes"] if n["id"] == "slow")["params"] = {"steps": 100_000, "delay": 0.01}
    graph = Graph.from_data(data)
    graph.save(path)
    return graph


def cli(*args: str) -> str:
    """What ``nodeflow ARGS`` prints, run in this process (reading the run store is not about a process)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    assert code == 0, err.getvalue()
    return out.getvalue()


def runs_listed(workspace) -> list[str]:
    """The STATUS column of ``nodeflow runs``, newest first, as a person reads it."""
    header, *rows = cli("runs", "--workspace", str(workspace)).splitlines()
    column = header.index("STATUS")
    return [row[column:].split()[0] for row in rows]


def run_shown(workspace, run_id: int) -> str:
    return cli("runs", "show", str(run_id), "--workspace", str(workspace))


def start_slow_run(server: Server) -> int:
    answer = server.api("POST", "/api/run", json={"target": "slow"}).json()
    assert answer["status"] == "running", answer
    assert wait_for(lambda: len(server.api("GET", f"/api/runs/{answer['id']}").json()["curves"]
                                .get("slow", {}).get("step_loss", [])) >= 3)
    return answer["id"]


def test_a_stop_on_request_reads_stopped_everywhere_and_keeps_its_curves_after_a_restart(tmp_path):
    workspace, path = tmp_path / "workspace", tmp_path / "slow.json"
    graph = long_graph(path)
    server = Server(workspace, "--graph", str(path))
    try:
        run_id = start_slow_run(server)
        assert server.api("POST", "/api/stop").status_code == 200
        assert wait_for(lambda: server.api("GET", f"/api/runs/{run_id}").json()["status"] != "running")
        assert [r["status"] for r in server.api("GET", "/api/runs").json()] == ["stopped"]
        run = server.api("GET", f"/api/runs/{run_id}").json()
        assert run["status"] == "stopped" and run["error"] is None
        assert run["nodes"]["slow"]["status"] == "stopped" and run["nodes"]["add"]["status"] == "ran"
        card = server.api("GET", "/api/status").json()["nodes"]["slow"]
        assert card["state"] == "stopped" and card["words"].startswith("stopped")
        assert runs_listed(workspace) == ["stopped"]
        shown = run_shown(workspace, run_id).splitlines()
        assert shown[0].startswith(f"run {run_id}: stopped")
        assert any(line.split()[:2] == ["slow", "stopped"] for line in shown)
        curves = run["curves"]["slow"]["step_loss"]
    finally:
        server.stop()
    again = Server(workspace, "--graph", str(path))
    try:
        assert [r["status"] for r in again.api("GET", "/api/runs").json()] == ["stopped"]
        assert again.api("GET", "/api/status").json()["nodes"]["slow"]["state"] == "stopped"
    finally:
        again.stop()
    # the Output tab after the restart: the curves the stopped run drew, from the run store
    session = Session(pack_registry(), workspace, graph=graph, device="cpu")
    try:
        shown = session.snapshot()["nodes"]["slow"]
        assert shown["state"] == "stopped"
        assert [[p["step"], p["value"]] for p in shown["series"]["step_loss"]] == curves
        assert shown["run"]["started"] == run["started"]
    finally:
        session.close()


def test_a_kill_9_of_the_process_running_it_reads_interrupted_everywhere(tmp_path):
    workspace, path = tmp_path / "workspace", tmp_path / "slow.json"
    graph = long_graph(path)
    server = Server(workspace, "--graph", str(path))
    try:
        run_id = start_slow_run(server)
    finally:
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
    assert runs_listed(workspace) == ["interrupted"]  # found dead when the store is opened
    shown = run_shown(workspace, run_id).splitlines()
    assert shown[0].startswith(f"run {run_id}: interrupted")
    assert any(line.split()[:2] == ["slow", "interrupted"] for line in shown)
    again = Server(workspace, "--graph", str(path))
    try:
        run = again.api("GET", f"/api/runs/{run_id}").json()
        assert [r["status"] for r in again.api("GET", "/api/runs").json()] == ["interrupted"]
        assert run["status"] == "interrupted" and "killed" in run["error"]
        assert run["nodes"]["slow"]["status"] == "interrupted"
        assert all(node["status"] != "running" for node in run["nodes"].values())
        card = again.api("GET", "/api/status").json()["nodes"]["slow"]
        assert card["state"] == "interrupted" and card["words"].startswith("interrupted")
    finally:
        again.stop()
    session = Session(pack_registry(), workspace, graph=graph, device="cpu")
    try:
        shown = session.snapshot()["nodes"]["slow"]
        assert shown["state"] == "interrupted"
        assert [[p["step"], p["value"]] for p in shown["series"]["step_loss"]] == run["curves"]["slow"]["step_loss"]
    finally:
        session.close()


def test_a_store_that_called_a_stop_interrupted_reads_stopped(workspace):
    """Before runs stopped on request were "stopped", they and their stopped node were recorded
    "interrupted"; runs whose process died kept an error and the node they were running."""
    RunStore(workspace).close()
    graph = demo_graph().model_dump(mode="json")
    stopped = {"slow": {"status": "interrupted", "epoch": 2, "epochs": 9}, "add": {"status": "ran"}}
    old = [("interrupted", None, stopped),
           ("interrupted", "the process running it stopped (killed or power lost)", {"slow": {"status": "running"}}),
           ("interrupted", "the worker process was killed by SIGKILL", {"slow": {"status": "failed"}}),
           ("done", None, {"slow": {"status": "ran"}})]
    with sqlite3.connect(workspace / "runs.sqlite") as db:
        db.execute("PRAGMA user_version = 0")
        for status, error, nodes in old:
            db.execute("INSERT INTO runs (graph_name, graph_hash, graph, source, status, requested, error, nodes) "
                       "VALUES ('demo', 'h', ?, 'cli', ?, 0, ?, ?)", (json.dumps(graph), status, error,
                                                                      json.dumps(nodes)))
    store = RunStore(workspace)
    runs = {r["id"]: r for r in store.list()}
    assert [runs[i]["status"] for i in (1, 2, 3, 4)] == ["stopped", "interrupted", "interrupted", "done"]
    assert runs[1]["nodes"]["slow"] == {"status": "stopped", "epoch": 2, "epochs": 9}
    assert runs[2]["nodes"]["slow"]["status"] == "running" and runs[3]["nodes"]["slow"]["status"] == "failed"
    store.close()
    with sqlite3.connect(workspace / "runs.sqlite") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == FORMAT
        db.execute("UPDATE runs SET status = 'interrupted' WHERE id = 1")  # as a run that died later would be
    assert RunStore(workspace).get(1)["status"] == "interrupted"  # read as it is: the store is in the new format


OLD_NODE_STATUSES = st.sampled_from(["ran", "cached", "failed", "skipped", "interrupted", "running", "planned"])


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.sampled_from(["queued", "running", "done", "failed", "interrupted", "cancelled"]),
                          st.one_of(st.none(), st.text(min_size=1, max_size=20)),
                          st.dictionaries(st.sampled_from(["a", "b", "slow"]), OLD_NODE_STATUSES, max_size=3)),
                min_size=1, max_size=6))
def test_any_old_store_reads_in_the_new_words_once(tmp_path_factory, rows):
    """Whatever an old store holds: a stop (no error, or a node that then read "interrupted") reads
    "stopped" with its nodes, every other row is as it was, and opening it again changes nothing."""
    workspace = tmp_path_factory.mktemp("old")
    RunStore(workspace).close()
    with sqlite3.connect(workspace / "runs.sqlite") as db:
        db.execute("PRAGMA user_version = 0")
        for status, error, nodes in rows:  # pid 0: no process owns a running row, as after a reboot
            db.execute("INSERT INTO runs (graph_name, graph_hash, graph, source, status, requested, error, nodes, "
                       "pid) VALUES ('g', 'h', '{}', 'cli', ?, 0, ?, ?, 0)",
                       (status, error, json.dumps({n: {"status": s} for n, s in nodes.items()})))
    store = RunStore(workspace)
    found = {r["id"]: r for r in store.list()}
    for run_id, (status, error, nodes) in enumerate(rows, start=1):
        run = found[run_id]
        stop = status == "interrupted" and (error is None or "interrupted" in nodes.values())
        if stop:
            assert run["status"] == "stopped" and "interrupted" not in {n["status"] for n in run["nodes"].values()}
        elif status == "running":  # its process is gone: recovered as interrupted, its running node too
            assert run["status"] == "interrupted" and "running" not in {n["status"] for n in run["nodes"].values()}
        else:
            assert run["status"] == status and run["nodes"] == {n: {"status": s} for n, s in nodes.items()}
    store.close()
    assert {r["id"]: r for r in RunStore(workspace).list()} == found
