"""Groups and disabled nodes in the document and the executor: the edit ops that make them, a group
that changes no cache key, and a disabled node that a run leaves out, with the nodes that need it."""

import pytest

from nodeflow.errors import DisabledInputError, GraphInvalid
from nodeflow.session import EditError, Session


@pytest.fixture
def session(registry, workspace, chain):
    return Session(registry, workspace, graph=chain)


def test_group_ops_make_rename_collapse_and_dissolve_a_group_in_one_undo_step_each(session):
    session.document.edits([{"op": "move", "id": "a", "x": 100, "y": 50}, {"op": "move", "id": "b", "x": 90, "y": 200}])
    session.document.edit("group", members=["a", "b", "sum"], title="Inputs and sum")
    group = session.document.graph.groups[0]
    assert (group.id, group.title, group.members, group.collapsed) == ("inputs_and_sum", "Inputs and sum",
                                                                        ["a", "b", "sum"], False)
    assert (group.position.x, group.position.y) == (0, 0)  # the members' top left corner (sum sits at 0, 0)
    session.document.edit("set_group", id=group.id, title="Sum", collapsed=True, position={"x": 7, "y": 8})
    group = session.document.graph.groups[0]
    assert (group.title, group.collapsed, group.position.x, group.members) == ("Sum", True, 7, ["a", "b", "sum"])
    session.document.edit("ungroup", id=group.id)
    assert session.document.graph.groups == []
    assert session.document.undo() and session.document.graph.groups[0].title == "Sum"
    assert session.document.undo() and session.document.graph.groups[0].title == "Inputs and sum"


@pytest.mark.parametrize("op, message", [
    ({"op": "group", "members": ["a", "ghost"]}, "no node with id 'ghost'"),
    ({"op": "group", "members": ["text"]}, "node 'text' is already in group 'g': ungroup it first"),
    ({"op": "group", "members": ["c"], "id": "g"}, "there is already a group with id 'g'"),
    ({"op": "group", "members": []}, "members: List should have at least 1 item"),
    ({"op": "ungroup", "id": "nope"}, "no group with id 'nope'"),
    ({"op": "set_group", "id": "g", "title": ""}, "title: String should have at least 1 character"),
    ({"op": "disable", "id": "ghost"}, "no node with id 'ghost'"),
])
def test_a_refused_group_or_disable_op_names_what_is_wrong_and_changes_nothing(session, op, message):
    session.document.edit("group", members=["text", "length"], id="g")
    before, version = session.document.graph, session.document.version
    with pytest.raises(EditError, match=message.replace("(", r"\(").replace(")", r"\)")):
        session.document.edits([op])
    assert session.document.graph == before and session.document.version == version


def test_removing_a_node_takes_it_out_of_its_group_and_an_emptied_group_goes(session):
    session.document.edits([{"op": "group", "members": ["text", "length"], "id": "g"},
                   {"op": "group", "members": ["c"], "id": "lonely"}])
    session.document.edits([{"op": "remove_node", "id": "text"}, {"op": "remove_node", "id": "c"}])
    assert [(g.id, g.members) for g in session.document.graph.groups] == [("g", ["length"])]


def test_grouping_a_cached_part_leaves_it_cached(session):
    session.queue.run()
    session.queue.wait(10)
    keys = session.executor.keys(session.document.graph)
    assert set(session.executor.status(session.document.graph).values()) == {"done"}  # computed by the latest run
    session.document.edit("group", members=["a", "b", "sum"], title="Part")
    session.document.edit("set_group", id="part", collapsed=True)
    assert session.executor.keys(session.document.graph) == keys
    assert set(session.executor.status(session.document.graph).values()) == {"done"}  # computed by the latest run
    assert session.executor.plan(session.document.graph) == {n: "cached" for n in keys}


def test_a_disabled_node_and_what_needs_it_are_left_out_of_a_run(session):
    keys = session.executor.keys(session.document.graph)
    session.document.edit("disable", id="sum")
    assert session.document.graph.node("sum").disabled
    assert session.executor.keys(session.document.graph) == keys  # bypassing is no change to what a node computes
    problems = session.validate()
    assert [(type(p), p.node_id, p.port, p.other_node) for p in problems] == [
        (DisabledInputError, "text", "value", "sum"), (DisabledInputError, "length", "text", "sum")]
    assert str(problems[0]) == ("text:value: input 'value' needs sum.value, which is disabled: enable 'sum', "
                                "or disable this node too")
    assert "which cannot run while 'sum' is disabled" in str(problems[1])

    plan = session.queue.run()  # running everything runs the rest
    assert plan == {"a": "run", "b": "run", "c": "run"}
    report = session.queue.wait(10)
    assert report.ok and set(report.nodes) == {"a", "b", "c"}
    status = session.executor.status(session.document.graph)
    assert [status[n] for n in ("sum", "text", "length", "a")] == ["disabled", "invalid", "invalid", "done"]
    snap = session.snapshot()["nodes"]
    assert snap["sum"]["state"] == "disabled" and "which is disabled" in snap["text"]["problems"][0]

    with pytest.raises(GraphInvalid, match="input 'text' needs text.text, which cannot run while 'sum' is disabled"):
        session.queue.run("length")  # a run aimed below it is refused, naming the input that waits
    with pytest.raises(GraphInvalid, match="sum: is disabled: enable it to run it"):
        session.queue.run("sum")

    session.document.edit("disable", id="sum", disabled=False)
    assert session.document.graph.node("sum").disabled is None and session.validate() == []
    assert session.queue.run("length") == {"a": "cached", "b": "cached", "sum": "run", "text": "run", "length": "run"}
    assert session.queue.wait(10).ok


def test_a_failed_node_that_is_disabled_shows_disabled(registry, workspace):
    from .conftest import make_graph

    session = Session(registry, workspace, graph=make_graph({"bad": ("test.fail", {"message": "nope"})}, []))
    session.queue.run()
    session.queue.wait(10)
    assert session.snapshot()["nodes"]["bad"]["state"] == "failed"
    session.document.edit("disable", id="bad")
    shown = session.snapshot()["nodes"]["bad"]
    assert shown["state"] == "disabled" and shown["error"] is None
