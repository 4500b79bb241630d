from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from nodeflow.graph import Graph
from nodeflow.node import Registry
from tests import nodepack


@pytest.fixture
def registry() -> Registry:
    reg = Registry()
    reg.add_module(nodepack, source="test pack")
    return reg


def make_graph(nodes: dict[str, tuple[str, dict]], edges: list[str], name: str = "test") -> Graph:
    """``edges`` as 'src.port->dst.port' strings keep the tests readable."""
    parsed = []
    for text in edges:
        left, right = text.split("->")
        source, source_port = left.strip().split(".")
        target, target_port = right.strip().split(".")
        parsed.append({"source": source, "source_port": source_port, "target": target, "target_port": target_port})
    return Graph.from_data({
        "format": "nodeflow.graph", "version": 1, "name": name,
        "nodes": [{"id": i, "type": t, "params": p, "position": {"x": 0, "y": 0}} for i, (t, p) in nodes.items()],
        "edges": parsed,
    })


@pytest.fixture
def chain() -> Graph:
    """a, b -> sum -> text -> length, plus an independent branch c."""
    return make_graph(
        {"a": ("test.constant", {"value": 2}), "b": ("test.constant", {"value": 3}),
         "sum": ("test.add", {}), "text": ("test.describe", {}), "length": ("test.length", {}),
         "c": ("test.constant", {"value": 7})},
        ["a.value->sum.a", "b.value->sum.b", "sum.value->text.value", "text.text->length.text"],
    )


# -- the command line in this process (tests whose subject is not a process of its own) -------------------------

PACK = str(Path(__file__).resolve().parents[1] / "nodepack.py")


@pytest.fixture
def cli(capsys, monkeypatch):
    """``nodeflow --nodes tests/nodepack.py ARGS`` called in this process (``env`` set for the call):
    a CompletedProcess with the exit code and what it printed, as a finished process gives them."""
    from tests.clirun import nodeflow_here

    def call(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        done = nodeflow_here(capsys, ["--nodes", PACK, *args])
        return subprocess.CompletedProcess(list(args), done.returncode, done.stdout, done.stderr)
    return call
