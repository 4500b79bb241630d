"""Tables in the run report: what a node puts there through ``ctx.table`` reaches the report's JSON,
is kept with the cached result (a later executor on the same workspace reports it from the cache),
and stays in memory for a node whose outputs are not written."""

from __future__ import annotations

from nodeflow.executor import Executor, RunReport
from nodeflow.graph import Graph
from nodeflow.node import Node, NodeParams, Port, Registry
from tests.nodepack import NUMBER, OPAQUE


class Worst(Node):
    type = "test.worst"
    outputs = (Port("value", NUMBER),)

    class Params(NodeParams):
        n: int = 3

    def run(self, ctx, params):
        ctx.table("worst", ({"file": f"img{i}.png", "loss": 10.0 - i} for i in range(params.n)))
        ctx.table("empty", [], columns=["file"])
        ctx.log_metric("count", params.n)
        return {"value": params.n}


class InMemory(Worst):
    type = "test.worst_in_memory"
    outputs = (Port("value", OPAQUE),)


def graph(node_type: str) -> Graph:
    return Graph.from_data({"format": "nodeflow.graph", "version": 1,
                            "nodes": [{"id": "w", "type": node_type, "params": {"n": 2}}], "edges": []})


EXPECTED = {"worst": {"columns": ["file", "loss"], "rows": [{"file": "img0.png", "loss": 10.0},
                                                            {"file": "img1.png", "loss": 9.0}]},
            "empty": {"columns": ["file"], "rows": []}}


def test_tables_reach_the_report_and_come_back_from_the_cache(tmp_path):
    registry = Registry([Worst, InMemory])
    first = Executor(registry, tmp_path).run(graph("test.worst"))
    assert first.nodes["w"].status == "ran" and first.nodes["w"].tables == EXPECTED
    data = first.to_json()
    assert data["nodes"]["w"]["tables"] == EXPECTED and data["nodes"]["w"]["metrics"] == {"count": 2.0}
    assert RunReport.from_json(data).nodes["w"].tables == EXPECTED
    # a new process on the same workspace: the node comes from the cache, with its tables
    second = Executor(registry, tmp_path).run(graph("test.worst"))
    assert second.nodes["w"].status == "cached" and second.nodes["w"].tables == EXPECTED
    assert second.to_json()["nodes"]["w"]["tables"] == EXPECTED


def test_tables_of_an_unwritten_result_stay_in_memory(tmp_path):
    executor = Executor(Registry([Worst, InMemory]), tmp_path)
    assert executor.run(graph("test.worst_in_memory")).nodes["w"].tables == EXPECTED
    again = executor.run(graph("test.worst_in_memory"))
    assert again.nodes["w"].status == "cached" and again.nodes["w"].tables == EXPECTED
    assert Executor(Registry([Worst, InMemory]), tmp_path).run(graph("test.worst_in_memory")).nodes["w"].status \
        == "ran"  # nothing on disk for it: another process computes it again


def test_a_node_without_tables_reports_none(tmp_path):
    class Plain(Node):
        type = "test.plain"
        outputs = (Port("value", NUMBER),)

        def run(self, ctx, params):
            return {"value": 1}

    report = Executor(Registry([Plain]), tmp_path).run(Graph.from_data(
        {"format": "nodeflow.graph", "version": 1, "nodes": [{"id": "p", "type": "test.plain"}], "edges": []}))
    assert report.nodes["p"].tables == {} and "tables" not in report.to_json()["nodes"]["p"]
