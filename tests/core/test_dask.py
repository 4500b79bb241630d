"""Independent branches on a real local Dask cluster (two worker processes), with the test node pack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nodeflow.executor import Executor
from nodeflow.node import Event

from .conftest import make_graph

pytest.importorskip("distributed")

from nodeflow.parallel import DaskBackend, resources_of, threads_per_worker  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PACK = str(ROOT / "tests" / "nodepack.py")


@pytest.fixture(scope="module")
def shared_log(tmp_path_factory):
    """Where the node pack notes each execution; set before the workers start, as they copy the environment."""
    log = tmp_path_factory.mktemp("dask") / "runs.log"
    before = os.environ.get("NODEPACK_RUN_LOG")
    os.environ["NODEPACK_RUN_LOG"] = str(log)
    yield log
    if before is None:
        os.environ.pop("NODEPACK_RUN_LOG", None)
    else:
        os.environ["NODEPACK_RUN_LOG"] = before


@pytest.fixture(scope="module")
def dispatcher(shared_log):
    with DaskBackend(jobs=2) as d:
        yield d


@pytest.fixture
def run_log(shared_log):
    shared_log.unlink(missing_ok=True)
    return shared_log


def runs(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def executor(registry, workspace, dispatcher, events=None):
    ex = Executor(registry, workspace)
    ex.backend = dispatcher
    if events is not None:
        ex.subscribe(events.append)
    return ex


def test_two_independent_branches_run_at_once_on_two_workers(registry, tmp_path, dispatcher, run_log):
    graph = make_graph({"a": ("test.slow", {"steps": 10, "delay": 0.15}),
                        "b": ("test.slow", {"steps": 11, "delay": 0.15}), "sum": ("test.add", {})},
                       ["a.value->sum.a", "b.value->sum.b"])
    events: list[Event] = []
    report = executor(registry, tmp_path / "ws", dispatcher, events).run(graph)
    assert report.ok, report.to_json()
    assert {n: r.status for n, r in report.nodes.items()} == {"a": "ran", "b": "ran", "sum": "ran"}
    assert report.nodes["sum"].metrics["sum"] == 21.0  # read from the cache entries the workers wrote
    # the branches overlapped: each one's progress streamed in while the other was still running (one after
    # the other, every event of one would come before the other's first); read from the events' order, not
    # from two timings a busy machine can upset
    order = [(e.kind, e.node_id) for e in events]
    for one, other in (("a", "b"), ("b", "a")):
        assert order.index(("progress", one)) < order.index(("node_finished", other)), order
    where = {e.node_id: e.data["message"] for e in events if e.kind == "log" and "running on" in e.data["message"]}
    assert where["a"] != where["b"]  # two worker processes
    # progress streams from the worker while the node runs, before its result comes back
    progress = [e.data for e in events if e.kind == "progress" and e.node_id == "a"]
    assert len(progress) >= 2 and progress[-1] == {"done": 10, "total": 10, "message": ""}
    assert order.index(("progress", "a")) < order.index(("node_finished", "a"))
    # the run history sees what a plain run sees: every node finished, with its key
    finished = {e.node_id for e in events if e.kind == "node_finished"}
    assert finished == {"a", "b", "sum"}
    assert sorted(runs(run_log)) == ["a", "b", "sum"]


def test_a_second_run_finds_everything_cached_without_a_task(registry, tmp_path, dispatcher, run_log):
    graph = make_graph({"a": ("test.constant", {"value": 4}), "t": ("test.describe", {})}, ["a.value->t.value"])
    ws = tmp_path / "ws"
    assert executor(registry, ws, dispatcher).run(graph).ok
    again = executor(registry, ws, dispatcher).run(graph)
    assert {r.status for r in again.nodes.values()} == {"cached"}
    assert sorted(runs(run_log)) == ["a", "t"]


def test_a_value_that_cannot_be_persisted_is_computed_with_its_consumer(registry, tmp_path, dispatcher, run_log):
    graph = make_graph({"h": ("test.handle", {}), "u": ("test.use_handle", {})}, ["h.handle->u.handle"])
    report = executor(registry, tmp_path / "ws", dispatcher).run(graph)
    assert report.ok and report.nodes["h"].status == "ran" and report.nodes["u"].status == "ran"
    assert runs(run_log) == ["h", "u"]  # once, in the consumer's task, not a task of its own


def test_a_failure_skips_what_depends_on_it_and_the_rest_still_runs(registry, tmp_path, dispatcher, run_log):
    graph = make_graph({"f": ("test.fail", {"message": "no data"}), "after": ("test.add", {}),
                        "c": ("test.constant", {"value": 2})}, ["f.value->after.a"])
    events: list[Event] = []
    report = executor(registry, tmp_path / "ws", dispatcher, events).run(graph)
    assert not report.ok
    assert report.nodes["f"].status == "failed" and "no data" in report.nodes["f"].error
    assert report.nodes["after"].status == "skipped" and report.nodes["c"].status == "ran"
    failed = [e for e in events if e.kind == "node_failed"]
    assert failed[0].node_id == "f" and failed[0].data["param"] == "message"


def test_twin_nodes_of_one_key_run_once(registry, tmp_path, dispatcher, run_log):
    graph = make_graph({"a": ("test.slow", {"steps": 3}), "b": ("test.slow", {"steps": 3}), "sum": ("test.add", {})},
                       ["a.value->sum.a", "b.value->sum.b"])
    report = executor(registry, tmp_path / "ws", dispatcher).run(graph)
    assert report.ok and sorted(r.status for n, r in report.nodes.items() if n != "sum") == ["cached", "ran"]
    assert sorted(runs(run_log)) == ["a", "sum"]
    assert report.nodes["sum"].metrics["sum"] == 6.0


def test_stop_reaches_the_workers_through_the_workspace(registry, tmp_path, dispatcher, run_log):
    graph = make_graph({"s": ("test.slow", {"steps": 400, "delay": 0.02}), "t": ("test.describe", {})},
                       ["s.value->t.value"])
    ex = executor(registry, tmp_path / "ws", dispatcher)
    ex.subscribe(lambda e: ex.interrupt() if e.kind == "log" and "running on" in e.data.get("message", "") else None)
    started = time.perf_counter()
    report = ex.run(graph)
    assert time.perf_counter() - started < 8.0  # 400 steps would take 8 s
    assert report.interrupted and report.nodes["s"].status == "stopped"
    assert report.nodes["t"].status == "skipped"


def test_the_editor_session_runs_its_queue_through_the_cluster(registry, tmp_path, dispatcher, run_log):
    """``nodeflow serve --jobs N``: the session's runs go to the Dask workers (no worker process of
    its own), the editor sees each node's progress and state live, the run is in the history, and
    its stop button reaches the workers."""
    from nodeflow.session import Session

    graph = make_graph({"a": ("test.slow", {"steps": 10, "delay": 0.15}),
                        "b": ("test.slow", {"steps": 11, "delay": 0.15}), "sum": ("test.add", {})},
                       ["a.value->sum.a", "b.value->sum.b"])
    session = Session(registry, tmp_path / "ws", graph=graph, isolate=True, cluster=dispatcher)
    seen: list[tuple[str, str | None]] = []
    session.subscribe(lambda e: seen.append((e.kind, e.node_id)))
    try:
        assert session.worker is None
        session.queue.run()
        report = session.queue.wait(60)
        assert report is not None and report.ok, report.to_json() if report else None
        assert {n: r.status for n, r in report.nodes.items()} == {"a": "ran", "b": "ran", "sum": "ran"}
        assert ("progress", "a") in seen and ("progress", "b") in seen
        assert {n: v["state"] for n, v in session.snapshot()["nodes"].items()} == {
            "a": "done", "b": "done", "sum": "done"}
        assert session.runs.get(session.queue.run_id)["status"] == "done"
        assert sorted(runs(run_log)) == ["a", "b", "sum"]

        slow = make_graph({"s": ("test.slow", {"steps": 400, "delay": 0.02})}, [])
        session.document.replace(slow)
        session.subscribe(lambda e: session.queue.stop() if e.kind == "progress" and e.node_id == "s" else None)
        started = time.perf_counter()
        session.queue.run()
        stopped = session.queue.wait(60)
        assert time.perf_counter() - started < 8.0  # 400 steps would take 8 s
        assert stopped.interrupted and stopped.nodes["s"].status == "stopped"
    finally:
        session.close()


def test_resources_come_from_the_node_class_and_default_to_none():
    from nodeflow.node import Node

    class Plain(Node):
        type = "test.plain"

    class Trainer(Node):
        type = "test.trainer"
        resources = {"GPU": 1}

    assert resources_of(Plain) == {} and resources_of(Trainer) == {"GPU": 1}
    assert threads_per_worker(2, cores=2) == 1 and threads_per_worker(1, cores=2) == 2
    assert threads_per_worker(4, cores=2) == 1


def test_workers_are_given_their_share_of_threads(dispatcher):
    import os as _os

    counts = dispatcher.client.run(lambda: _os.environ.get("OMP_NUM_THREADS"))
    assert set(counts.values()) == {str(dispatcher.threads)}
    assert "2 worker process(es)" in dispatcher.describe()


def test_starting_a_cluster_leaves_this_processs_environment_as_it_was():
    """Dask's nanny sets OMP_NUM_THREADS=1 (and more) in its own process before spawning workers;
    a process started here afterwards would have run torch on one thread."""
    before = dict(os.environ)
    with DaskBackend(jobs=1) as backend:
        assert backend.client.run(lambda: __import__("os").environ.get("OMP_NUM_THREADS"))
        assert dict(os.environ) == before
    assert dict(os.environ) == before


def nodeflow(*args, env=None):
    cmd = [sys.executable, "-m", "nodeflow.cli", "--nodes", PACK, *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **(env or {})},
                          timeout=120)


def test_a_plain_run_imports_no_dask(tmp_path):
    graph = make_graph({"a": ("test.constant", {})}, [])
    graph.save(tmp_path / "g.json")
    code = ("import sys; from nodeflow.cli import main\n"
            f"rc = main(['--nodes', {PACK!r}, 'run', {str(tmp_path / 'g.json')!r}, '--workspace', "
            f"{str(tmp_path / 'ws')!r}, '--quiet'])\n"
            "print(rc, sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    env = {k: v for k, v in os.environ.items() if k != "NODEFLOW_DASK_SCHEDULER"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                            timeout=120)
    assert result.stdout.strip() == "0 []", result.stdout + result.stderr


@pytest.mark.slow
def test_cli_run_with_jobs_writes_the_same_report(tmp_path):
    graph = make_graph({"a": ("test.constant", {"value": 2}), "b": ("test.constant", {"value": 3}),
                        "sum": ("test.add", {})}, ["a.value->sum.a", "b.value->sum.b"])
    graph.save(tmp_path / "g.json")
    result = nodeflow("run", str(tmp_path / "g.json"), "--workspace", str(tmp_path / "ws"), "--jobs", "2",
                      "--report", str(tmp_path / "r.json"))
    assert result.returncode == 0, result.stderr
    assert "a local Dask cluster: 2 worker process(es)" in result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["ok"] and report["nodes"]["sum"]["status"] == "ran" and report["nodes"]["sum"]["metrics"] == {"sum": 5.0}


@pytest.mark.slow
def test_an_unreachable_scheduler_is_one_line_naming_the_option(tmp_path):
    graph = make_graph({"a": ("test.constant", {})}, [])
    graph.save(tmp_path / "g.json")
    run = [sys.executable, "-m", "nodeflow.cli", "--nodes", PACK, "run", str(tmp_path / "g.json"), "--workspace"]
    # both processes at once: each waits out the client's connect timeout
    given = subprocess.Popen([*run, str(tmp_path / "ws"), "--scheduler", "tcp://127.0.0.1:9"], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # the same from the environment variable
    from_env = subprocess.Popen([*run, str(tmp_path / "ws2")], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "NODEFLOW_DASK_SCHEDULER": "tcp://127.0.0.1:9"})
    _, err = given.communicate(timeout=120)
    assert given.returncode == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --scheduler tcp://127.0.0.1:9: cannot reach the Dask "
                                                   "scheduler"), err
    _, err = from_env.communicate(timeout=120)
    assert from_env.returncode == 1 and "--scheduler tcp://127.0.0.1:9: cannot reach" in err


@pytest.mark.parametrize("command", ["run", "serve"])
def test_jobs_below_one_is_refused(tmp_path, command):
    graph = make_graph({"a": ("test.constant", {})}, [])
    graph.save(tmp_path / "g.json")
    result = nodeflow(command, str(tmp_path / "g.json"), "--workspace", str(tmp_path / "ws"), "--jobs", "0")
    assert result.returncode == 1 and result.stderr.strip() == "error: --jobs 0: give 1 or more worker processes"


def test_a_local_cluster_hands_out_the_visible_gpus(monkeypatch):
    from nodeflow.parallel import local_gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1, 3")
    assert local_gpus() == ["1", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert local_gpus() == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert local_gpus() == []


@pytest.mark.slow
def test_an_editor_sweep_on_serve_jobs_2_trains_two_branches_at_once(tmp_path):
    """``nodeflow serve --jobs 2``: a sweep from the editor is one run over its branches on the Dask
    workers, so two of its four trainings run at the same time, as ``nodeflow sweep --jobs 2`` does."""
    from tests.ui.conftest import Server
    from tests.waiting import wait_for

    graph = make_graph({"a": ("test.constant", {"value": 1}), "train": ("test.epochs", {"epochs": 3, "delay": 0.3})},
                       ["a.value->train.value"], name="sweep")
    graph_file = tmp_path / "sweep.json"
    graph.save(graph_file)
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    server = Server(workspace, command=(sys.executable, "-m", "nodeflow.cli", "--nodes", PACK, "serve",
                                        str(graph_file), "--jobs", "2"))
    try:
        started = server.api("POST", "/api/sweep", json={"grid": {"train.epochs": [3, 4, 5, 6]}})
        assert started.status_code == 200, started.text
        sweep = started.json()["id"]
        assert wait_for(lambda: server.api("GET", f"/api/sweeps/{sweep}").json()["status"] == "done", timeout=180)
        branches = server.api("GET", f"/api/sweeps/{sweep}").json()["branches"]
        spans = []
        for branch in branches:
            node = server.api("GET", f"/api/runs/{branch['run']}").json()["nodes"]["train"]
            assert node["status"] == "ran"
            spans.append((node["started"], node["finished"]))
        overlapping = [(i, j) for i in range(4) for j in range(i + 1, 4)
                       if spans[i][0] < spans[j][1] and spans[j][0] < spans[i][1]]
        assert overlapping, spans  # at least two trainings ran at the same time
    finally:
        server.stop()
