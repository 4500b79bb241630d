"""Run history and model lineage: what a run records, what survives a kill, and the CLI over it."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import Field

from nodeflow.executor import Executor
from nodeflow.node import Node, NodeParams, Port, PortType, Registry
from nodeflow.runs import Recording, RunNotFound, RunStore, param_changes

from tests.clirun import nodeflow_here

from .conftest import make_graph

ROOT = Path(__file__).resolve().parents[2]
PACK = str(ROOT / "tests" / "nodepack.py")

# -- a tiny model pack: data -> init -> train -> finetune -> train again ---------------------------
DATA = PortType("Data")
MODEL = PortType("Model")
TRAINED = PortType("TrainedModel", parents=(MODEL,))


class Data(Node):
    type = "lt.data"
    outputs = (Port("data", DATA),)

    class Params(NodeParams):
        size: int = Field(10, ge=1)

    @classmethod
    def fingerprint(cls, params):
        return f"{params.size} items"

    def run(self, ctx, params):
        return {"data": list(range(params.size))}


class Init(Node):
    type = "lt.init"
    outputs = (Port("model", MODEL),)

    def run(self, ctx, params):
        return {"model": {"layers": ["block4", "block5"], "trainable": [], "skill": 0.5}}


class Train(Node):
    """'Learns' a little per epoch, more with more unfrozen layers: curves that differ by params."""

    type = "lt.train"
    inputs = (Port("model", MODEL), Port("data", DATA))
    outputs = (Port("model", TRAINED),)

    class Params(NodeParams):
        epochs: int = Field(3, ge=1)

    def run(self, ctx, params, model, data):
        skill = model["skill"]
        for epoch in range(1, params.epochs + 1):
            skill += (1 - skill) * 0.1 * (1 + len(model["trainable"]))
            ctx.log_metric("val_accuracy", skill, step=epoch)
            ctx.log_metric("batch_loss", 1 - skill, step=epoch * 10)
        return {"model": {**model, "skill": skill}}


class Finetune(Node):
    type = "lt.finetune"
    inputs = (Port("model", TRAINED),)
    outputs = (Port("model", MODEL),)

    class Params(NodeParams):
        unfreeze: list[str] = []

    def run(self, ctx, params, model):
        return {"model": {**model, "trainable": list(params.unfreeze)}}


@pytest.fixture
def lt_registry() -> Registry:
    registry = Registry()
    for node in (Data, Init, Train, Finetune):
        registry.add(node, source="test")
    return registry


def lt_graph(unfreeze=(), epochs=3):
    return make_graph({"data": ("lt.data", {"size": 10}), "init": ("lt.init", {}),
                       "train": ("lt.train", {"epochs": epochs}),
                       "finetune": ("lt.finetune", {"unfreeze": list(unfreeze)}),
                       "train_finetuned": ("lt.train", {"epochs": epochs})},
                      ["init.model->train.model", "data.data->train.data", "train.model->finetune.model",
                       "finetune.model->train_finetuned.model", "data.data->train_finetuned.data"], name="course")


_EXECUTORS: dict = {}


def recorded(registry, workspace, graph, target=None):
    """Run and record, with one executor per workspace (the pack's values live in memory)."""
    executor = _EXECUTORS.setdefault((id(registry), workspace), Executor(registry, workspace))
    store = RunStore(workspace)
    with Recording(store, executor, graph, target) as rec:
        rec.report = executor.run(graph, target)
    return store, rec.run_id, rec.report


def test_a_run_records_graph_nodes_metrics_curves_and_models(lt_registry, workspace):
    store, run_id, report = recorded(lt_registry, workspace, lt_graph(["block5"]))
    assert report.ok
    run = store.get(run_id)
    assert run["status"] == "done" and run["source"] == "cli" and run["changes"] == {}
    assert run["ended"] >= run["started"] and len(run["graph_hash"]) == 64
    assert run["graph"]["nodes"][3]["params"] == {"unfreeze": ["block5"]}
    assert {n: v["status"] for n, v in run["nodes"].items()} == dict.fromkeys(
        ["data", "init", "train", "finetune", "train_finetuned"], "ran")
    final = run["nodes"]["train_finetuned"]["metrics"]["val_accuracy"]
    curve = run["curves"]["train_finetuned"]["val_accuracy"]
    assert [s for s, _ in curve] == [1, 2, 3] and curve[-1][1] == pytest.approx(final)
    assert "batch_loss" not in run["curves"]["train"]  # per-batch noise is not a curve
    # model versions: what outputs a Model, by cache key
    keys = Executor(lt_registry, workspace).keys(lt_graph(["block5"]))
    assert run["models"] == [keys["init"], keys["train"], keys["finetune"], keys["train_finetuned"]]


def test_second_run_records_what_changed_and_what_was_cached(lt_registry, workspace):
    store, first, _ = recorded(lt_registry, workspace, lt_graph(["block5"]))
    _, second, _ = recorded(lt_registry, workspace, lt_graph(["block4", "block5"]), target="train_finetuned")
    run = store.get(second)
    assert run["changes"] == {"finetune.unfreeze": {"from": ["block5"], "to": ["block4", "block5"]}}
    statuses = {n: v["status"] for n, v in run["nodes"].items()}
    assert statuses == {"data": "cached", "init": "cached", "train": "cached", "finetune": "ran",
                        "train_finetuned": "ran"}
    diff = store.diff(first, second)
    assert list(diff["params"]) == ["finetune.unfreeze"]
    acc = diff["metrics"]["train_finetuned.val_accuracy"]
    assert acc["b"] > acc["a"] and acc["delta"] == pytest.approx(acc["b"] - acc["a"])
    assert diff["metrics"]["train.val_accuracy"]["delta"] == 0  # cached: the same model


def test_lineage_walks_back_through_finetune_to_the_first_training(lt_registry, workspace):
    store, _, _ = recorded(lt_registry, workspace, lt_graph(["block5"]))
    lineage = store.lineage("train_finetuned")
    assert [v["node"] for v in lineage["chain"]] == ["init", "train", "finetune", "train_finetuned"]
    assert lineage["chain"][2]["params"] == {"unfreeze": ["block5"]}
    assert lineage["data"] == [{"key": lineage["data"][0]["key"], "node": "data", "type": "lt.data",
                                "fingerprint": "10 items", "params": {"size": 10}}]
    # by key prefix too, and the same answer
    assert store.lineage(lineage["version"]["key"][:10])["chain"] == lineage["chain"]
    # the other way: what changed from version A to version B, and what it did
    a = lineage["version"]["key"]
    recorded(lt_registry, workspace, lt_graph(["block4", "block5"]))
    b = store.version("train_finetuned")["key"]
    assert a != b
    diff = store.compare_versions(a, b)
    assert diff["params"] == {"finetune.unfreeze": {"from": ["block5"], "to": ["block4", "block5"]}}
    assert diff["metrics"]["train_finetuned.val_accuracy"]["delta"] > 0
    with pytest.raises(KeyError, match="no recorded version of 'nope'"):
        store.version("nope")


def test_param_changes_name_added_and_removed_nodes():
    before = {"nodes": [{"id": "a", "params": {"x": 1}}, {"id": "b", "params": {}}]}
    after = {"nodes": [{"id": "a", "params": {"x": 2, "y": 0}}, {"id": "c", "params": {}}]}
    assert param_changes(before, after) == {"a.x": {"from": 1, "to": 2}, "a.y": {"from": None, "to": 0},
                                            "c": {"from": None, "to": "added"}, "b": {"from": "removed", "to": None}}


def test_a_failing_node_is_recorded_as_failed(registry, workspace):
    graph = make_graph({"a": ("test.constant", {}), "f": ("test.fail", {})}, ["a.value->f.value"])
    store, run_id, report = recorded(registry, workspace, graph)
    run = store.get(run_id)
    assert run["status"] == "failed" and run["nodes"]["f"]["status"] == "failed"
    assert run["nodes"]["f"]["error"] and run["nodes"]["a"]["status"] == "ran"


def test_a_running_row_whose_process_is_gone_is_interrupted_on_open(workspace):
    store = RunStore(workspace)
    graph = make_graph({"a": ("test.constant", {})}, [])
    run_id = store.create(graph)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with sqlite3.connect(workspace / "runs.sqlite") as db:
        db.execute("UPDATE runs SET pid = ? WHERE id = ?", (dead.pid, run_id))
    store.close()
    assert RunStore(workspace).get(run_id)["status"] == "interrupted"


@pytest.fixture
def nodeflow(capsys):
    """``nodeflow ARGS`` in this process (the history is read from the workspace's database, whichever process
    wrote it): the exit code and what it printed."""
    return lambda *args: nodeflow_here(capsys, ["--nodes", PACK, *args])


def test_kill_9_of_the_cli_mid_run_leaves_an_interrupted_run_with_what_it_did(nodeflow, tmp_path, workspace):
    graph = make_graph({"a": ("test.constant", {"value": 2}), "slow": ("test.slow", {"steps": 2000, "delay": 0.01})},
                       ["a.value->slow.value"])
    path = tmp_path / "g.json"
    graph.save(path)
    proc = subprocess.Popen([sys.executable, "-m", "nodeflow.cli", "--nodes", PACK, "run", str(path), "--workspace",
                             str(workspace), "--quiet"], cwd=ROOT)
    db = workspace / "runs.sqlite"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if db.exists() and RunStore(workspace).curves(1).get("slow", {}).get("step_loss"):
            break
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run = RunStore(workspace).get(1)
    assert run["status"] == "interrupted" and run["error"]
    assert run["nodes"]["a"]["status"] == "ran" and run["nodes"]["slow"]["status"] == "interrupted"
    assert len(run["curves"]["slow"]["step_loss"]) >= 1
    listed = json.loads(nodeflow("runs", "--json", "--workspace", str(workspace)).stdout)
    assert [r["status"] for r in listed] == ["interrupted"]


@pytest.mark.slow
def test_cli_lists_shows_diffs_restores_and_traces_runs(nodeflow, tmp_path, workspace):
    graph = make_graph({"a": ("test.constant", {"value": 2}), "b": ("test.constant", {"value": 3}),
                        "sum": ("test.add", {})}, ["a.value->sum.a", "b.value->sum.b"], name="sums")
    path = tmp_path / "g.json"
    graph.save(path)
    ws = ["--workspace", str(workspace)]
    assert nodeflow("run", str(path), *ws, "--quiet").returncode == 0
    assert nodeflow("run", str(path), *ws, "--quiet", "--set", "b.value=10").returncode == 0
    runs = json.loads(nodeflow("runs", "--json", *ws).stdout)
    assert [(r["id"], r["status"]) for r in runs] == [(2, "done"), (1, "done")]
    assert runs[0]["changes"] == {"b.value": {"from": 3, "to": 10}}
    table = nodeflow("runs", *ws).stdout.splitlines()
    assert "STATUS" in table[0] and "b.value" in table[1] and "sum.sum=12" in table[1]
    diff = nodeflow("runs", "diff", "1", "2", *ws)
    assert diff.returncode == 0
    assert "b.value: 3 -> 10" in diff.stdout and "sum.sum: 5 -> 12 (+7)" in diff.stdout
    shown = nodeflow("runs", "show", "2", *ws).stdout
    assert "changed b.value: 3 -> 10" in shown and "sum" in shown
    restored = nodeflow("runs", "restore", "1", "-o", str(tmp_path / "back.json"), *ws)
    assert restored.returncode == 0
    back = json.loads((tmp_path / "back.json").read_text())
    assert [n["params"] for n in back["nodes"]] == [{"value": 2.0}, {"value": 3.0}, {}]
    lineage = nodeflow("lineage", "sum", *ws)
    assert lineage.returncode == 0 and "sum" in lineage.stdout
    for bad, message in ((("runs", "show", "9"), "error: no run 9"), (("runs", "diff", "1", "x"), "error: no run 'x'"),
                         (("lineage", "nothing"), "error: no recorded version of 'nothing'")):
        result = nodeflow(*bad, *ws)
        assert result.returncode == 1 and result.stderr.strip().startswith(message), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    empty = nodeflow("runs", "--workspace", str(tmp_path / "none"))
    assert empty.returncode == 1 and "no runs recorded" in empty.stderr


def test_run_ids_beyond_the_database_range_are_not_found(workspace):
    store = RunStore(workspace)
    for bad in ("9" * 30, -1, 0, "x\x00"):
        with pytest.raises(RunNotFound):
            store.get(bad)
        with pytest.raises(RunNotFound):
            store.cancel(bad)
