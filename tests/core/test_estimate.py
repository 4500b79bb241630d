"""Executor.estimate, the rule of the cost preview, with toy nodes: cached nodes cost nothing,
quick nodes that a measured node needs run for real but are not cached, measured nodes answer
from their inputs, a stand-in carries an estimate past a stale trainer, and a failure stays local."""

from __future__ import annotations

import pytest
from pydantic import Field

from nodeflow.errors import GraphInvalid
from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodeflow.node import Node, NodeParams, Port, PortType, Registry
from tests.nodepack import JsonCodec

NUMBER = PortType("EstNumber", codec=JsonCodec())
RAN: list[str] = []


class Source(Node):
    type = "est.source"
    outputs = (Port("value", NUMBER),)

    class Params(NodeParams):
        value: float = 3.0

    def run(self, ctx, params):
        RAN.append(ctx.node_id)
        return {"value": params.value}


class Train(Node):
    """Costs ``epochs`` × its input seconds; stands in for its output with its input."""
    type = "est.train"
    inputs = (Port("value", NUMBER),)
    outputs = (Port("value", NUMBER),)

    class Params(NodeParams):
        epochs: int = Field(2, ge=1)
        stand_in: bool = True
        broken: bool = False

    def run(self, ctx, params, value):
        RAN.append(ctx.node_id)
        return {"value": value * 10}

    def estimate(self, ctx, params, value):
        if params.broken:
            raise ValueError("cannot profile this")
        found = {"seconds": params.epochs * value, "epochs": params.epochs, "epoch_seconds": value, "device": "cpu"}
        if params.stand_in:
            found["stand_in"] = {"value": value}
        return found


class Score(Node):
    type = "est.score"
    inputs = (Port("value", NUMBER),)
    outputs = (Port("value", NUMBER),)

    class Params(NodeParams):
        factor: float = 1.0

    def run(self, ctx, params, value):
        RAN.append(ctx.node_id)
        return {"value": value * params.factor}

    def estimate(self, ctx, params, value):
        return {"seconds": value * params.factor, "device": "cpu"}


class Export(Node):
    """Quick, with a side effect: a preview must not run it."""
    type = "est.export"
    inputs = (Port("value", NUMBER),)
    outputs = (Port("value", NUMBER),)

    def run(self, ctx, params, value):
        RAN.append(ctx.node_id)
        return {"value": value}


def graph(**params) -> Graph:
    nodes = [{"id": "src", "type": "est.source"}, {"id": "train", "type": "est.train"},
             {"id": "score", "type": "est.score"}, {"id": "export", "type": "est.export"}]
    for node in nodes:
        node["params"] = params.get(node["id"], {})
    edges = [{"source": "src", "source_port": "value", "target": "train", "target_port": "value"},
             {"source": "train", "source_port": "value", "target": "score", "target_port": "value"},
             {"source": "train", "source_port": "value", "target": "export", "target_port": "value"}]
    return Graph.from_data({"format": "nodeflow.graph", "version": 1, "nodes": nodes, "edges": edges})


@pytest.fixture
def executor(tmp_path):
    RAN.clear()
    return Executor(Registry([Source, Train, Score, Export]), tmp_path / "ws")


def test_nothing_cached_runs_only_the_quick_inputs_and_caches_nothing(executor):
    found = executor.estimate(graph())
    nodes = found["nodes"]
    assert RAN == ["src"]  # the source ran for real (train's estimate needs its value); nothing else ran
    assert nodes["src"]["status"] == "stale" and nodes["src"]["seconds"] >= 0
    assert nodes["train"]["seconds"] == 6.0 and nodes["train"]["epochs"] == 2 and "after" not in nodes["train"]
    # score is estimated with train's stand-in (its input, 3.0), and says so
    assert nodes["score"]["seconds"] == 3.0 and nodes["score"]["after"] == ["train"]
    assert nodes["export"]["status"] == "quick" and nodes["export"]["seconds"] is None
    assert found["total_seconds"] == pytest.approx(9.0 + nodes["src"]["seconds"], abs=1e-3)
    assert found["complete"]
    assert executor.status(graph()) == {"src": "idle", "train": "idle", "score": "idle", "export": "idle"}


def test_cached_nodes_cost_nothing_and_real_outputs_replace_stand_ins(executor):
    assert executor.run(graph()).ok
    RAN.clear()
    changed = graph(score={"factor": 2.0})
    found = executor.estimate(changed)
    nodes = found["nodes"]
    assert RAN == []
    assert {k: v["status"] for k, v in nodes.items()} == {"src": "cached", "train": "cached", "score": "stale",
                                                        "export": "cached"}
    assert nodes["src"]["seconds"] == nodes["train"]["seconds"] == 0.0
    assert nodes["score"]["seconds"] == 60.0 and "after" not in nodes["score"]  # train's real output: 30 × 2
    assert found["total_seconds"] == 60.0


def test_without_a_stand_in_the_nodes_after_it_wait_for_it(executor):
    nodes = executor.estimate(graph(train={"stand_in": False}))["nodes"]
    assert nodes["train"]["seconds"] == 6.0
    assert nodes["score"]["status"] == "after upstream" and nodes["score"]["after"] == ["train"]
    assert nodes["score"]["seconds"] is None


def test_a_failing_estimate_is_reported_and_the_rest_goes_on(executor):
    found = executor.estimate(graph(train={"broken": True}))
    nodes = found["nodes"]
    assert nodes["train"]["status"] == "error" and "cannot profile this" in nodes["train"]["error"]
    assert nodes["score"]["status"] == "after upstream"
    assert not found["complete"]


def test_target_limits_the_estimate_and_bad_requests_raise(executor):
    nodes = executor.estimate(graph(), target="train")["nodes"]
    assert list(nodes) == ["src", "train"]
    with pytest.raises(KeyError, match="nope"):
        executor.estimate(graph(), target="nope")
    with pytest.raises(GraphInvalid):
        executor.estimate(graph(train={"epochs": 0}))


# -- nodeflow run --dry-run -----------------------------------------------------------------------


@pytest.mark.slow
def test_dry_run_prints_the_estimate_table_and_runs_nothing_heavy(tmp_path, capsys, monkeypatch):
    """``nodeflow run --dry-run`` called in this process (main prints and returns what the command would)."""
    import json

    from tests.clirun import nodeflow_here
    from tests.core.conftest import make_graph
    from tests.core.test_cli import PACK

    graph = make_graph({"a": ("test.constant", {"value": 2}), "b": ("test.constant", {}), "sum": ("test.add", {}),
                        "slow": ("test.timed", {"steps": 40, "delay": 0.5}), "text": ("test.describe", {})},
                       ["a.value->sum.a", "b.value->sum.b", "sum.value->slow.value", "slow.value->text.value"])
    path, workspace, report, log = tmp_path / "g.json", tmp_path / "ws", tmp_path / "est.json", tmp_path / "ran.log"
    graph.save(path)
    monkeypatch.setenv("NODEPACK_RUN_LOG", str(log))

    def nodeflow_run(*extra):
        return nodeflow_here(capsys, ["--nodes", PACK, "run", path, "--workspace", workspace, *extra])

    def dry_run(*extra):
        return nodeflow_run("--dry-run", *extra)

    done = dry_run("--report", str(report))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("estimate")
    assert lines[1].split() == ["NODE", "STATUS", "DEVICE", "S/EPOCH", "EPOCHS", "TOTAL", "PEAK", "MEMORY", "NOTE"]
    slow = next(line.split() for line in lines if line.startswith("slow "))
    assert slow[:7] == ["slow", "stale", "cpu", "0.50", "s", "40", "20"]
    assert lines[-1].startswith("total: ≈ 20 s for 5 node(s) to run, 0 cached")
    # the quick inputs of slow ran for real; slow and what follows it did not; nothing was cached or recorded
    assert sorted(log.read_text().split()) == ["a", "b", "sum"]
    assert not (workspace / "cache").exists() or not any((workspace / "cache").iterdir())
    assert not (workspace / "runs.sqlite").exists()
    saved = json.loads(report.read_text())["estimate"]
    assert saved["nodes"]["slow"]["seconds"] == 20.0 and saved["nodes"]["text"]["status"] == "quick"

    # after a real run of the cheap part, those nodes are cached and cost 0 s
    run = nodeflow_run("--target", "sum", "--quiet")
    assert run.returncode == 0, run.stderr
    again = dry_run("--target", "slow")
    assert again.returncode == 0, again.stderr
    rows = {line.split()[0]: line.split()[1] for line in again.stdout.splitlines()[2:-1]}
    assert rows == {"a": "cached", "b": "cached", "sum": "cached", "slow": "stale"}
    assert again.stdout.splitlines()[-1].startswith("total: ≈ 20 s for 1 node(s) to run, 3 cached")

    bad = dry_run("--target", "nope")
    assert bad.returncode == 1 and bad.stderr.startswith("error: no node with id 'nope'")
    assert "Traceback" not in bad.stderr
