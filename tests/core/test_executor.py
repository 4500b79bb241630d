import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nodeflow.errors import GraphCycleError, GraphInvalid, PortTypeError, UnknownTypeError
from nodeflow.executor import Executor
from nodeflow.graph import Graph

from .conftest import make_graph

ROOT = Path(__file__).resolve().parents[2]


def statuses(report):
    return {k: v.status for k, v in report.nodes.items()}


def with_params(graph: Graph, node_id: str, **params) -> Graph:
    data = graph.model_dump(mode="json")
    for node in data["nodes"]:
        if node["id"] == node_id:
            node["params"].update(params)
    return Graph.from_data(data)


# -- validation ---------------------------------------------------------------------------------


def test_validation_collects_every_problem_with_its_node(registry):
    graph = make_graph(
        {"a": ("test.constant", {"value": "lots"}), "b": ("test.constnt", {}),
         "sum": ("test.add", {"offset": 1, "colour": "red"}), "len": ("test.length", {}),
         "x": ("test.add", {}), "y": ("test.add", {}), "lonely": ("test.add", {})},
        ["a.value->len.text", "x.value->y.a", "y.value->x.a", "a.value->sum.nope"],
    )
    problems = Executor(registry).validate(graph)
    by_kind = {(type(p).__name__, p.node_id, p.param or p.port) for p in problems}
    assert ("ParamError", "a", "value") in by_kind
    assert ("UnknownTypeError", "b", None) in by_kind
    assert ("ParamError", "sum", "colour") in by_kind
    assert ("PortTypeError", "len", "text") in by_kind
    assert ("UnknownPortError", "sum", "nope") in by_kind
    assert ("MissingInputError", "lonely", "a") in by_kind
    cycle = next(p for p in problems if isinstance(p, GraphCycleError))
    assert set(cycle.loop) == {"x", "y"} and "x -> y -> x" in str(cycle) or "y -> x -> y" in str(cycle)
    unknown = next(p for p in problems if isinstance(p, UnknownTypeError))
    assert "did you mean 'test.constant'" in str(unknown)
    mismatch = next(p for p in problems if isinstance(p, PortTypeError))
    assert "expects Text" in str(mismatch) and "a.value gives Number" in str(mismatch)
    assert mismatch.other_node == "a"


def test_subtype_fits_where_parent_expected(registry):
    graph = make_graph({"n": ("test.count", {}), "s": ("test.add", {})}, ["n.value->s.a"])
    assert Executor(registry).validate(graph) == []


def test_static_infer_blames_node_before_running(registry, workspace):
    graph = make_graph({"a": ("test.constant", {"value": 1}), "zero": ("test.constant", {"value": 0}),
                        "div": ("test.divide", {})}, ["a.value->div.a", "zero.value->div.b"])
    with pytest.raises(GraphInvalid) as info:
        Executor(registry, workspace).run(graph)
    assert "div:b: the divisor is the constant 0" in str(info.value)


def test_nothing_runs_when_the_needed_part_is_invalid(registry, workspace, tmp_path, monkeypatch):
    log = tmp_path / "runs.log"
    monkeypatch.setenv("NODEPACK_RUN_LOG", str(log))
    graph = make_graph({"a": ("test.constant", {}), "s": ("test.add", {})}, [])
    with pytest.raises(GraphInvalid):
        Executor(registry, workspace).run(graph)
    assert not log.exists()
    # ...but a target whose ancestors are fine runs even if another branch is broken
    report = Executor(registry, workspace).run(graph, target="a")
    assert statuses(report) == {"a": "ran"}


# -- caching ------------------------------------------------------------------------------------


def test_param_change_reruns_exactly_that_node_and_descendants(registry, workspace, chain):
    ex = Executor(registry, workspace)
    assert set(statuses(ex.run(chain)).values()) == {"ran"}
    assert set(statuses(ex.run(chain)).values()) == {"cached"}
    changed = with_params(chain, "b", value=30)
    report = ex.run(changed)
    assert statuses(report) == {"a": "cached", "b": "ran", "sum": "ran", "text": "ran", "length": "ran", "c": "cached"}
    assert report.nodes["sum"].metrics == {"sum": 32.0}


def test_param_equal_to_default_keeps_the_cache(registry, workspace, chain):
    ex = Executor(registry, workspace)
    ex.run(chain)
    explicit = with_params(chain, "sum", offset=0.0)
    assert statuses(ex.run(explicit))["sum"] == "cached"


def test_target_runs_only_ancestors_and_reuses_cache(registry, workspace, chain):
    ex = Executor(registry, workspace)
    assert statuses(ex.run(chain, target="sum")) == {"a": "ran", "b": "ran", "sum": "ran"}
    report = ex.run(with_params(chain, "text", style="fancy"), target="length")
    assert statuses(report) == {"a": "cached", "b": "cached", "sum": "cached", "text": "ran", "length": "ran"}
    assert report.outputs["length"]["value"] == len("*5.0*")


def test_cached_target_returns_its_value(registry, workspace, chain):
    ex = Executor(registry, workspace)
    ex.run(chain)
    report = ex.run(chain, target="text")
    assert report.outputs["text"]["text"] == "5.0"


def test_status_reports_stale_after_an_edit(registry, workspace, chain):
    ex = Executor(registry, workspace)
    assert set(ex.status(chain).values()) == {"idle"}
    ex.run(chain)
    status = ex.status(with_params(chain, "sum", offset=1))
    # the same state names as every view: computed by the latest run is "done"
    assert status == {"a": "done", "b": "done", "sum": "stale", "text": "stale", "length": "stale", "c": "done"}


def test_cached_outputs_are_not_mutated_downstream(registry, workspace):
    graph = make_graph({"n": ("test.constant", {"value": 1}), "l": ("test.list", {}),
                        "x": ("test.append", {"item": 2}), "y": ("test.append", {"item": 3})},
                       ["n.value->l.value", "l.items->x.items", "l.items->y.items"])
    report = Executor(registry, workspace).run(graph)
    assert report.outputs["l"]["items"] == [1.0]
    assert report.outputs["x"]["items"] == [1.0, 2.0] and report.outputs["y"]["items"] == [1.0, 3.0]


RUNNER = """
import json, sys
sys.path.insert(0, {root!r})
from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodeflow.node import Registry
from tests import nodepack
reg = Registry(); reg.add_module(nodepack)
report = Executor(reg, {workspace!r}).run(Graph.load({graph!r}), target={target!r})
print(json.dumps(report.to_json()))
"""


def run_in_new_process(workspace, graph: Graph, tmp_path, target=None):
    path = tmp_path / f"graph-{time.monotonic_ns()}.json"
    graph.save(path)
    code = RUNNER.format(root=str(ROOT), workspace=str(workspace), graph=str(path), target=target)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {k: v["status"] for k, v in json.loads(out.stdout)["nodes"].items()}


def test_persisted_cache_survives_the_process(registry, workspace, chain, tmp_path):
    assert set(run_in_new_process(workspace, chain, tmp_path).values()) == {"ran"}
    changed = with_params(chain, "text", style="fancy")
    assert run_in_new_process(workspace, changed, tmp_path, target="length") == {
        "a": "cached", "b": "cached", "sum": "cached", "text": "ran", "length": "ran"}


def test_values_without_a_codec_rerun_in_a_new_process(registry, workspace, tmp_path):
    graph = make_graph({"h": ("test.handle", {}), "u": ("test.use_handle", {})}, ["h.handle->u.handle"])
    run_in_new_process(workspace, graph, tmp_path)
    ex = Executor(registry, workspace)
    # 'u' is on disk, so the in-memory-only 'h' is not recomputed just to feed nothing
    assert statuses(ex.run(graph, target="u")) == {"u": "cached"}
    # running everything brings 'h' back, and a forced 'u' re-runs on it
    assert statuses(ex.run(graph)) == {"h": "ran", "u": "cached"}
    assert statuses(ex.run(graph, target="u", force=["u"])) == {"h": "cached", "u": "ran"}


def test_unreadable_cache_entry_is_set_aside_and_recomputed_in_the_same_run(registry, workspace, chain):
    ex = Executor(registry, workspace)
    ex.run(chain)
    key = ex.keys(chain)["text"]
    (workspace / "cache" / key[:2] / key / "text" / "value.json").write_text("{broken")
    fresh = Executor(registry, workspace)
    logs = []
    fresh.subscribe(lambda e: logs.append((e.node_id, e.data.get("message", ""))) if e.kind == "log" else None)
    report = fresh.run(chain, target="length", force=["length"])
    assert report.ok and report.nodes["text"].status == "ran" and report.nodes["length"].status == "ran"
    assert report.outputs["length"]["value"] == 3  # len("5.0"), from the recomputed 'text'
    assert any(node == "text" and "cached outputs could not be read" in message and "computing them again" in message
               for node, message in logs), logs
    assert list((workspace / "cache" / key[:2]).glob(f"{key}.damaged-*"))  # kept for a post-mortem
    again = fresh.run(chain, target="text")
    assert statuses(again) == {"a": "cached", "b": "cached", "sum": "cached", "text": "cached"}
    assert again.outputs["text"]["text"] == "5.0"


def test_a_damaged_entry_that_cannot_be_recomputed_fails_the_consumer_with_the_reason(registry, workspace, monkeypatch):
    from tests import nodepack

    graph = make_graph({"a": ("test.constant", {}), "after": ("test.add", {})}, ["a.value->after.a"])
    ex = Executor(registry, workspace)
    ex.run(graph)
    key = ex.keys(graph)["a"]
    (workspace / "cache" / key[:2] / key / "value" / "value.json").write_text("{broken")

    def broken(self, ctx, params):
        raise RuntimeError("disk gone")

    monkeypatch.setattr(nodepack.Constant, "run", broken)
    report = Executor(registry, workspace).run(graph, target="after", force=["after"])
    assert report.nodes["after"].status == "failed" and report.nodes["a"].status == "failed"
    error = report.nodes["after"].error
    assert "cached outputs of 'a' could not be read" in error and "disk gone" in error


# -- failures and interruption ------------------------------------------------------------------


def test_a_failing_node_leaves_other_results_cached(registry, workspace):
    graph = make_graph({"a": ("test.constant", {}), "bad": ("test.fail", {"message": "no good"}),
                        "after": ("test.add", {}), "other": ("test.add", {})},
                       ["a.value->bad.value", "bad.value->after.a", "a.value->other.a"])
    events = []
    ex = Executor(registry, workspace, listeners=[events.append])
    report = ex.run(graph)
    assert statuses(report) == {"a": "ran", "bad": "failed", "after": "skipped", "other": "ran"}
    assert report.nodes["bad"].error == "parameter 'message': no good"
    assert not report.ok
    failed = next(e for e in events if e.kind == "node_failed")
    assert failed.node_id == "bad" and "Traceback" in failed.data["traceback"]
    assert ex.status(graph) == {"a": "done", "bad": "failed", "after": "idle", "other": "done"}


def test_interrupt_stops_at_next_check_and_caches_nothing_for_that_node(registry, workspace):
    graph = make_graph({"slow": ("test.slow", {"steps": 10_000, "delay": 0.005}), "after": ("test.add", {})},
                       ["slow.value->after.a"])
    ex = Executor(registry, workspace)
    started = threading.Event()
    ex.subscribe(lambda e: e.kind == "progress" and started.set())
    result = {}
    worker = threading.Thread(target=lambda: result.update(report=ex.run(graph)))
    worker.start()
    assert started.wait(10)
    t0 = time.monotonic()
    ex.interrupt()
    worker.join(10)
    assert time.monotonic() - t0 < 1.0
    report = result["report"]
    assert report.interrupted and statuses(report) == {"slow": "stopped", "after": "skipped"}
    assert ex.status(graph)["slow"] == "stopped"  # needs a run; nothing half-done was cached
    # the next run starts afresh, not interrupted
    quick = make_graph({"slow": ("test.slow", {"steps": 2, "delay": 0}), "after": ("test.add", {})},
                       ["slow.value->after.a"])
    assert statuses(ex.run(quick)) == {"slow": "ran", "after": "ran"}


def test_events_describe_a_run(registry, workspace, chain):
    events = []
    ex = Executor(registry, workspace, listeners=[events.append])
    ex.run(chain, target="sum")
    kinds = [(e.kind, e.node_id) for e in events]
    assert kinds[0] == ("run_started", None) and kinds[-1] == ("run_finished", None)
    assert ("node_started", "sum") in kinds and ("metric", "sum") in kinds
    finished = [e for e in events if e.kind == "node_finished"]
    assert all(e.data["from_cache"] is False and e.data["seconds"] >= 0 for e in finished)
    events.clear()
    ex.run(chain, target="sum")
    assert all(e.data["from_cache"] for e in events if e.kind == "node_finished")


def test_one_run_at_a_time(registry, workspace):
    graph = make_graph({"slow": ("test.slow", {"steps": 200, "delay": 0.01})}, [])
    ex = Executor(registry, workspace)
    worker = threading.Thread(target=lambda: ex.run(graph))
    worker.start()
    time.sleep(0.1)
    with pytest.raises(RuntimeError, match="already in progress"):
        ex.run(graph)
    ex.interrupt()
    worker.join(10)


def test_files_a_node_writes_move_into_its_cache_entry(registry, workspace):
    graph = make_graph({"a": ("test.constant", {"value": 4}), "w": ("test.write_note", {})}, ["a.value->w.value"])
    logs = []
    ex = Executor(registry, workspace, listeners=[lambda e: e.kind == "log" and logs.append(e.data["message"])])
    ex.run(graph)
    key = ex.keys(graph)["w"]
    kept = workspace / "cache" / key[:2] / key / "files" / "note.txt"
    assert kept.read_text() == "value=4.0"
    assert any(f"files written: note.txt (in {kept.parent})" == line for line in logs)
    assert not (workspace / "scratch" / key).exists()


def test_memory_keeps_only_recent_results(registry, workspace, monkeypatch):
    import nodeflow.cache as cache_module

    monkeypatch.setattr(cache_module, "MEMORY_ENTRIES", 3)
    ex = Executor(registry, workspace)
    handle = make_graph({"h": ("test.handle", {})}, [])
    ex.run(handle)
    for value in range(4):
        ex.run(make_graph({"n": ("test.constant", {"value": value})}, []))
    assert len(ex.cache._memory) == 3
    # an evicted value that lives only in memory is recomputed; a persisted one comes from disk
    assert statuses(ex.run(handle)) == {"h": "ran"}
    assert statuses(ex.run(make_graph({"n": ("test.constant", {"value": 0})}, []))) == {"n": "cached"}


def test_status_reads_fingerprints_afresh_so_changed_files_show_at_once(registry, workspace, chain, monkeypatch):
    from tests import nodepack

    calls = []
    monkeypatch.setattr(nodepack.Constant, "fingerprint", classmethod(lambda cls, params: calls.append(1)))
    ex = Executor(registry, workspace)
    ex.status(chain)
    assert len(calls) == 3  # a, b, c
    ex.status(chain)
    assert len(calls) == 6  # no time-based memo: a node memoises its own fingerprint if it is costly
    ex.run(chain, target="a")
    assert len(calls) == 9  # a run always fingerprints what it runs on
