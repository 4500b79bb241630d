"""Copy and paste as graph documents, and the group library."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeflow.fragments import (CARD_HEIGHT, CARD_WIDTH, NothingToPaste, fragment_of, library, load_group, paste_ops,
                                read_fragment, save_group)
from nodeflow.session import Session

from .conftest import make_graph


@pytest.fixture
def session(registry, workspace, chain):
    session = Session(registry, workspace, graph=chain)
    session.document.edits([{"op": "move", "id": "a", "x": 100, "y": 40}, {"op": "move", "id": "b", "x": 100, "y": 200},
                   {"op": "move", "id": "sum", "x": 400, "y": 120}, {"op": "rename", "id": "sum", "title": "Total"},
                   {"op": "set_params", "id": "sum", "params": {"offset": 1.5}},
                   {"op": "group", "members": ["a", "b"], "title": "Inputs"}])
    return session


def test_a_copy_holds_the_nodes_the_wires_between_them_and_whole_groups(session):
    part = fragment_of(session.document.graph, ["a", "b", "sum", "ghost"])
    assert [n.id for n in part.nodes] == ["a", "b", "sum"]
    assert [str(e) for e in part.edges] == ["a.value -> sum.a", "b.value -> sum.b"]  # not sum -> text
    assert [g.title for g in part.groups] == ["Inputs"]
    assert fragment_of(session.document.graph, ["a", "sum"]).groups == []  # half a group is no group
    assert read_fragment(part.dumps()) == part


def test_paste_adds_a_copy_with_fresh_ids_as_one_undo_step(session):
    text = fragment_of(session.document.graph, ["a", "b", "sum"]).dumps()
    before = session.document.graph
    ops, ids = paste_ops(read_fragment(text), session.document.graph, at={"x": 1000, "y": 500})
    session.document.edits(ops)
    assert ids == ["a_2", "b_2", "sum_2"]
    graph = session.document.graph
    assert [str(e) for e in graph.edges if e.target == "sum_2"] == ["a_2.value -> sum_2.a", "b_2.value -> sum_2.b"]
    assert graph.node("sum_2").params == {"offset": 1.5} and graph.node("sum_2").title == "Total"
    assert (graph.node("a_2").position.x, graph.node("a_2").position.y) == (1000, 500)  # top left at the point
    assert (graph.node("sum_2").position.x, graph.node("sum_2").position.y) == (1300, 580)
    assert [(g.id, g.members) for g in graph.groups] == [("inputs", ["a", "b"]), ("inputs_2", ["a_2", "b_2"])]
    assert session.document.undo() and session.document.graph == before


def test_duplicating_lands_beside_the_original_and_keeps_a_disabled_node_disabled(session):
    session.document.edit("disable", id="sum")
    ops, ids = paste_ops(fragment_of(session.document.graph, ["sum"]), session.document.graph)
    session.document.edits(ops)
    copy = session.document.graph.node(ids[0])
    # sum's card spans x 400..600: the copy starts a gap to its right, on the same row
    assert ids == ["sum_2"] and copy.disabled and (copy.position.x, copy.position.y) == (640, 120)


def test_a_duplicate_goes_below_when_a_card_is_beside_and_past_cards_in_its_way(session):
    session.document.edits([{"op": "move", "id": "text", "x": 700, "y": 150}])  # right beside sum (400..600)
    ops, ids = paste_ops(fragment_of(session.document.graph, ["sum"]), session.document.graph)
    assert [op["position"] for op in ops if op["op"] == "add_node"] == [{"x": 400, "y": 500}]  # below: nearer
    session.document.edits([{"op": "move", "id": "c", "x": 400, "y": 480}])  # something below too
    ops, ids = paste_ops(fragment_of(session.document.graph, ["sum"]), session.document.graph)
    assert [op["position"] for op in ops if op["op"] == "add_node"] == [{"x": 940, "y": 120}]  # past text's card
    ops, ids = paste_ops(fragment_of(session.document.graph, ["a", "b"]), session.document.graph)  # beside them: sum, then text
    assert [op["position"] for op in ops if op["op"] == "add_node"] == [{"x": 100, "y": 580}, {"x": 100, "y": 740}]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-800, 800), st.integers(-800, 800)), min_size=1, max_size=12),
       st.data())
def test_a_duplicate_lands_clear_of_every_card_beside_or_below_its_originals(spots, data):
    """Whatever the layout and whichever cards are duplicated: no copy overlaps a card (as wide as
    the editor draws them, and as tall as a card with a warning), the copies keep their layout, and
    they sit wholly right of or wholly below the originals' bounding box."""
    graph = make_graph({f"n{i}": ("test.constant", {}) for i in range(len(spots))}, [])
    graph = graph.model_copy(update={"nodes": [n.model_copy(update={"position": n.position.model_copy(
        update={"x": float(x), "y": float(y)})}) for n, (x, y) in zip(graph.nodes, spots)]})
    chosen = data.draw(st.lists(st.sampled_from([n.id for n in graph.nodes]), min_size=1, unique=True))
    ops, ids = paste_ops(fragment_of(graph, chosen), graph)
    added = {op["id"]: op["position"] for op in ops if op["op"] == "add_node"}
    originals = {n.id: n.position for n in graph.nodes if n.id in chosen}
    for node in graph.nodes:
        for copy in added.values():
            assert abs(copy["x"] - node.position.x) >= CARD_WIDTH or abs(copy["y"] - node.position.y) >= CARD_HEIGHT
    shifts = {(added[new]["x"] - originals[old].x, added[new]["y"] - originals[old].y)
              for old, new in zip([n.id for n in graph.nodes if n.id in chosen], ids)}
    assert len(shifts) == 1  # one move for all: the copies keep their layout
    dx, dy = shifts.pop()
    width = max(p.x for p in originals.values()) - min(p.x for p in originals.values()) + CARD_WIDTH
    height = max(p.y for p in originals.values()) - min(p.y for p in originals.values()) + CARD_HEIGHT
    assert (dy == 0 and dx >= width) or (dx == 0 and dy >= height)


def test_pasting_into_another_graph_keeps_ids_that_are_free_there(registry, workspace, session):
    from .conftest import make_graph

    text = fragment_of(session.document.graph, ["a", "b", "sum"]).dumps()
    other = Session(registry, workspace / "other", graph=make_graph({"x": ("test.constant", {})}, []))
    ops, ids = paste_ops(read_fragment(text), other.document.graph, at={"x": 0, "y": 0})
    other.document.edits(ops)
    assert ids == ["a", "b", "sum"] and len(other.document.graph.nodes) == 4


@pytest.mark.parametrize("text, reason", [
    (None, r"copy some with Ctrl\+C"),
    ("", r"copy some with Ctrl\+C"),
    ("some words from a web page", r"copy some with Ctrl\+C"),
    ('{"a": 1}', "'format' must be"),
    ('{"format": "nodeflow.graph", "version": 2, "nodes": []}', "has no nodes"),
    ('{"format": "nodeflow.graph", "version": 2, "nodes": [{"id": "1 bad", "type": "x"}]}', "not a usable id"),
])
def test_a_clipboard_without_nodes_says_so(text, reason):
    with pytest.raises(NothingToPaste, match=reason):
        read_fragment(text)


def test_a_pasted_unknown_type_is_refused_whole(session):
    text = json.dumps({"format": "nodeflow.graph", "version": 2,
                       "nodes": [{"id": "k", "type": "test.constant"}, {"id": "z", "type": "elsewhere.node"}]})
    before = session.document.graph
    ops, _ = paste_ops(read_fragment(text), session.document.graph, at={"x": 0, "y": 0})
    with pytest.raises(Exception, match="unknown node type 'elsewhere.node'"):
        session.document.edits(ops)
    assert session.document.graph == before


def test_a_saved_group_is_in_the_library_and_inserts_as_a_copy(session, workspace):
    name = save_group(workspace, session.document.graph, "inputs")
    assert name == "Inputs" and list(library(workspace)) == ["Inputs"]
    (workspace / "groups" / "notes.json").write_text('{"not": "a graph"}')  # not offered
    assert list(library(workspace)) == ["Inputs"]
    saved = load_group(workspace, "Inputs")
    assert [n.id for n in saved.nodes] == ["a", "b"] and saved.groups[0].members == ["a", "b"]
    ops, ids = paste_ops(saved, session.document.graph, at={"x": 0, "y": 600})
    session.document.edits(ops)
    assert ids == ["a_2", "b_2"] and session.document.graph.groups[-1].title == "Inputs"
    with pytest.raises(KeyError, match="no saved group named '../runs'"):
        load_group(workspace, "../runs")
