"""Thousands of malformed documents and edits: every one is refused with a GraphFileError or a
list of problems, never an unexpected exception."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodeflow.executor import Executor
from nodeflow.fragments import NothingToPaste, paste_ops, read_fragment
from nodeflow.graph import Graph, GraphFileError, GroupSpec
from nodeflow.session import EditError, Session

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
IDS = st.sampled_from(["a", "b", "sum", "text", "ghost", "", "1x", "a b"])
TYPES = st.sampled_from(["test.constant", "test.add", "test.describe", "test.length", "test.slow", "nope", ""])
PORTS = st.sampled_from(["value", "a", "b", "text", "items", "zzz"])
NODE = st.fixed_dictionaries(
    {"id": IDS | JSON, "type": TYPES | JSON},
    optional={"params": st.dictionaries(st.sampled_from(["value", "offset", "style", "steps", "x"]), JSON, max_size=3) | JSON,
              "position": st.fixed_dictionaries({"x": JSON, "y": JSON}) | JSON, "title": JSON},
)
EDGE = st.fixed_dictionaries({"source": IDS, "source_port": PORTS, "target": IDS, "target_port": PORTS}) | JSON
GROUP = st.fixed_dictionaries(
    {"id": IDS | JSON, "members": st.lists(IDS, max_size=3) | JSON},
    optional={"title": JSON, "collapsed": JSON, "position": st.fixed_dictionaries({"x": JSON, "y": JSON}) | JSON},
)
DOC = st.fixed_dictionaries(
    {"format": st.sampled_from(["nodeflow.graph", "other"]) | JSON, "version": st.sampled_from([1, 2, 3]) | JSON},
    optional={"name": JSON, "nodes": st.lists(NODE, max_size=6) | JSON, "edges": st.lists(EDGE, max_size=6) | JSON,
              "groups": st.lists(GROUP, max_size=3) | JSON},
)
FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))


@FUZZ
@given(DOC)
def test_loader_and_validator_refuse_cleanly(registry, doc):
    try:
        text = json.dumps(doc, allow_nan=True)
    except (TypeError, ValueError):
        return
    try:
        graph = Graph.loads(text, "fuzz.json")
    except GraphFileError as exc:
        assert str(exc).startswith("fuzz.json: ")
        return
    problems = Executor(registry).validate(graph)
    assert all(p.node_id is None or graph.has_node(p.node_id) for p in problems)
    assert all(str(p) for p in problems)


@FUZZ
@given(st.binary(max_size=200))
def test_loader_refuses_arbitrary_bytes(data):
    try:
        Graph.loads(data, "bytes.json")
    except GraphFileError:
        pass


EDIT = st.fixed_dictionaries({"op": st.sampled_from(["add_node", "remove_node", "set_params", "move", "rename",
                                                     "connect", "disconnect", "disable", "group", "ungroup",
                                                     "set_group", "explode"])},
                             optional={"id": IDS | st.sampled_from(["g", "part"]) | JSON, "type": TYPES,
                                       "params": JSON, "x": JSON, "y": JSON, "title": JSON, "source": IDS,
                                       "source_port": PORTS, "target": IDS, "target_port": PORTS, "position": JSON,
                                       "members": st.lists(IDS, max_size=3) | JSON, "collapsed": JSON,
                                       "disabled": JSON})


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(EDIT, min_size=1, max_size=5))
def test_edits_apply_whole_or_not_at_all(registry, tmp_path_factory, ops):
    from tests.core.conftest import make_graph

    graph = make_graph({"a": ("test.constant", {}), "b": ("test.constant", {}), "sum": ("test.add", {}),
                        "text": ("test.describe", {})}, ["a.value->sum.a", "sum.value->text.value"])
    graph = graph.model_copy(update={"groups": [GroupSpec(id="g", members=["text"])]})  # for ungroup, set_group
    session = Session(registry, tmp_path_factory.mktemp("ws"), graph=graph)
    before = session.document.graph
    try:
        session.document.edits(ops)
    except EditError:
        assert session.document.graph == before and not session.document.can_undo
        return
    Graph.loads(session.document.graph.dumps())  # whatever was accepted is a valid document
    session.validate()


CLIPBOARD = st.text(max_size=40) | DOC.map(lambda d: json.dumps(d, allow_nan=True))


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(CLIPBOARD, st.none() | st.fixed_dictionaries({"x": st.floats(-2e9, 2e9), "y": st.floats(-2e9, 2e9)}))
def test_a_paste_of_any_clipboard_applies_whole_or_says_why(registry, tmp_path_factory, text, at):
    """Whatever the clipboard holds (any text, any document), a paste adds all of it as one undo
    step or is refused with a reason, the graph as it was."""
    from tests.core.conftest import make_graph

    graph = make_graph({"a": ("test.constant", {}), "sum": ("test.add", {})}, ["a.value->sum.a"])
    session = Session(registry, tmp_path_factory.mktemp("ws"), graph=graph)
    try:
        fragment = read_fragment(text)
    except NothingToPaste as exc:
        assert "clipboard" in str(exc)
        return
    ops, ids = paste_ops(fragment, session.document.graph, at)
    try:
        session.document.edits(ops)
    except EditError as exc:
        assert str(exc) and session.document.graph == graph and not session.document.can_undo
        return
    assert {n.id for n in session.document.graph.nodes} == {"a", "sum", *ids}
    assert session.document.undo() and session.document.graph == graph
