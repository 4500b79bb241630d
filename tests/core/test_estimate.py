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
