"""The exporter composes what node types write (``Node.script``) and knows nothing of torch: a
pure-Python pack whose script is run here checks the order, the constants, the shared functions,
and the nodes left out with a comment, alone and downstream of another."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest
from pydantic import Field

from nodeflow.errors import GraphInvalid
from nodeflow.graph import Graph
from nodeflow.node import Node, NodeParams, ParamProblem, Port, PortType, Registry, ScriptPart
from nodeflow.script import export_script

NUMBER = PortType("Number")

TWICE = '''def twice(x):
    """Shared by every Double part; written once."""
    return 2 * x
'''


class Seed(Node):
    type = "s.seed"
    title = "Seed"
    outputs = (Port("value", NUMBER),)

    class Params(NodeParams):
        value: float = Field(1.5, description="where it starts")
        label: str = Field('say "hi"', description="a string with quotes")
        steps: list[int] = Field(default_factory=lambda: [1, 2])

    @classmethod
    def script(cls, ctx, params):
        name = ctx.name("value")
        return ScriptPart(code=f"{name} = {ctx.const('value')} + sum({ctx.const('steps')})\nprint({ctx.const('label')})",
                          outputs={"value": name})


class Double(Node):
    type = "s.double"
    title = "Double"
    inputs = (Port("value", NUMBER),)
    outputs = (Port("value", NUMBER),)

    class Params(NodeParams):
        refuse: bool = False

    @classmethod
    def script(cls, ctx, params, value):
        if params.refuse:
            raise ParamProblem("refuse=true has no script form", param="refuse")
        name = ctx.name("value")
        return ScriptPart(code=f'{name} = twice({value})\nresults["{ctx.node_id}"] = {{"value": {name}}}',
                          outputs={"value": name}, functions=(TWICE,), imports=("import math",),
                          setup=("start = math.pi",), notes=("doubles in Python, not in the graph's engine",))


class Buggy(Node):
    """A script form with a bug: left out, saying what failed, the rest written."""

    type = "s.buggy"
    title = "Buggy"
    inputs = (Port("value", NUMBER),)

    @classmethod
    def script(cls, ctx, params, value):
        return {}["nothing"]


class Opaque(Node):
    """No script form: the default."""

    type = "s.opaque"
    title = "Opaque"
    inputs = (Port("value", NUMBER),)
    outputs = (Port("value", NUMBER),)


def graph(*nodes, edges=()) -> Graph:
    return Graph.from_data({"format": "nodeflow.graph", "version": 1, "name": "chain",
                            "nodes": [{"id": i, "type": t, "params": p} for i, t, p in nodes],
                            "edges": [{"source": a, "source_port": "value", "target": b, "target_port": "value"}
                                      for a, b in edges]})


@pytest.fixture
def pack() -> Registry:
    return Registry([Seed, Double, Opaque, Buggy])


def run(text: str, tmp_path) -> dict:
    path = tmp_path / "script.py"
    path.write_text(text)
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout[done.stdout.index("{"):])


def test_parts_run_in_the_graphs_order_with_params_as_constants(pack, tmp_path):
    g = graph(("d2", "s.double", {}), ("d1", "s.double", {}), ("seed", "s.seed", {"value": 2.0}),
              edges=[("seed", "d1"), ("d1", "d2")])
    exported = export_script(g, pack)
    text = exported.text
    assert run(text, tmp_path) == {"d1": {"value": 10.0}, "d2": {"value": 20.0}}
    assert 'SEED_VALUE = 2.0\nSEED_LABEL = "say \\"hi\\""\nSEED_STEPS = [1, 2]' in text
    assert text.count("def twice(") == 1 and text.count("start = math.pi") == 1 and text.count("import math") == 1
    assert text.index("# -- seed: Seed (s.seed)") < text.index("# -- d1: Double") < text.index("# -- d2: Double")
    assert "d1, d2: doubles in Python" in text  # one note, naming both nodes
    tree = ast.parse(text)
    assert [n.name for n in tree.body if isinstance(n, ast.FunctionDef)] == ["twice", "main"]
    assert exported.left_out == {}


def test_a_node_without_a_script_form_is_left_out_with_a_comment_and_so_is_what_needs_it(pack, tmp_path):
    g = graph(("seed", "s.seed", {}), ("box", "s.opaque", {}), ("after", "s.double", {}), ("side", "s.double", {}),
              edges=[("seed", "box"), ("box", "after"), ("seed", "side")])
    exported = export_script(g, pack)
    assert exported.left_out == {"box": "this node has no script form",
                                 "after": "it needs the output of 'box', left out above"}
    assert "    # -- box: Opaque (s.opaque)\n    # left out: this node has no script form" in exported.text
    assert "- after: it needs the output of 'box'" in exported.text  # said in the docstring too
    assert run(exported.text, tmp_path) == {"side": {"value": 9.0}}


def test_params_without_a_script_form_leave_the_node_out_naming_the_param(pack):
    exported = export_script(graph(("seed", "s.seed", {}), ("d", "s.double", {"refuse": True}),
                                   ("bug", "s.buggy", {}), edges=[("seed", "d"), ("seed", "bug")]), pack)
    assert exported.left_out == {"d": "d.refuse: refuse=true has no script form",
                                 "bug": "its script form failed (KeyError: missing key 'nothing')"}


def test_a_target_exports_only_what_it_needs_and_errors_refuse(pack):
    g = graph(("seed", "s.seed", {}), ("a", "s.double", {}), ("b", "s.double", {}), edges=[("seed", "a"), ("seed", "b")])
    text = export_script(g, pack, target="a").text
    assert "# -- a: Double" in text and "# -- b: Double" not in text and "(up to 'a')" in text
    with pytest.raises(KeyError, match="no node with id 'zzz'"):
        export_script(g, pack, target="zzz")
    with pytest.raises(GraphInvalid) as caught:
        export_script(graph(("d", "s.double", {})), pack)
    assert caught.value.problems[0].port == "value"


def test_titles_and_descriptions_cannot_break_out_of_their_comments(pack, tmp_path):
    data = graph(("seed", "s.seed", {"label": '"""\nraise SystemExit(3)'}), ("d", "s.double", {}),
                 edges=[("seed", "d")]).model_dump(mode="json")
    data["description"] = 'ends in a backslash \\ and """ quotes'
    data["nodes"][1]["title"] = "two\nlines: raise SystemExit(4)"
    text = export_script(Graph.from_data(data), pack).text
    assert "# -- d: two lines: raise SystemExit(4) (s.double)" in text
    assert run(text, tmp_path) == {"d": {"value": 9.0}}
