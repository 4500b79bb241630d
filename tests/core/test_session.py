import pytest

from nodeflow.errors import GraphInvalid
from nodeflow.session import EditError, Session
from tests.waiting import wait_for


@pytest.fixture
def session(registry, workspace, chain):
    return Session(registry, workspace, graph=chain)


def test_edits_are_all_or_nothing_and_undoable(session):
    v0 = session.document.version
    session.document.edit("set_params", id="sum", params={"offset": 2})
    assert session.document.graph.node("sum").params == {"offset": 2}
    with pytest.raises(EditError, match="sum: offset: Input should be a valid number"):
        session.document.edit("set_params", id="sum", params={"offset": "lots"})
    with pytest.raises(EditError, match="expects Text"):
        session.document.edit("connect", source="a", source_port="value", target="length", target_port="text")
    assert session.document.graph.node("sum").params == {"offset": 2}
    assert session.document.version == v0 + 1
    assert session.document.undo() and session.document.graph.node("sum").params == {}
    assert session.document.redo() and session.document.graph.node("sum").params == {"offset": 2}


def test_bulk_edit_is_one_undo_step(session):
    session.document.edits([{"op": "move", "id": "a", "x": 10, "y": 20}, {"op": "move", "id": "b", "x": 30, "y": 40},
                   {"op": "add_node", "type": "test.add", "position": {"x": 5, "y": 5}}])
    assert session.document.graph.node("add").position.x == 5
    session.document.undo()
    assert not session.document.graph.has_node("add") and session.document.graph.node("a").position.x == 0


def test_connect_replaces_an_inputs_old_edge_and_remove_drops_edges(session):
    session.document.edit("connect", source="c", source_port="value", target="sum", target_port="b")
    assert [str(e) for e in session.document.graph.incoming("sum")] == ["a.value -> sum.a", "c.value -> sum.b"]
    session.document.edit("remove_node", id="sum")
    assert all("sum" not in (e.source, e.target) for e in session.document.graph.edges)


def test_fresh_ids_do_not_collide(session):
    session.document.edit("add_node", type="test.constant")
    session.document.edit("add_node", type="test.constant")
    assert {"constant", "constant_2"} <= {n.id for n in session.document.graph.nodes}


def test_run_on_worker_thread_and_snapshot_follows(session):
    plan = session.queue.run(target="text")
    assert plan == {"a": "run", "b": "run", "sum": "run", "text": "run"}
    report = session.queue.wait(10)
    assert report.ok
    snap = session.snapshot()
    assert snap["nodes"]["sum"]["state"] == "done"
    assert snap["nodes"]["sum"]["series"]["sum"][0]["value"] == 5.0
    assert snap["nodes"]["length"]["state"] == "idle"
    session.document.edit("set_params", id="b", params={"value": 4})
    snap = session.snapshot()
    assert [snap["nodes"][n]["state"] for n in ("a", "b", "sum", "text")] == ["done", "stale", "stale", "stale"]


def test_failed_state_sticks_until_the_node_changes(registry, workspace):
    from .conftest import make_graph

    graph = make_graph({"bad": ("test.fail", {"message": "nope"})}, [])
    session = Session(registry, workspace, graph=graph)
    session.queue.run()
    session.queue.wait(10)
    snap = session.snapshot()["nodes"]["bad"]
    assert snap["state"] == "failed" and snap["error"] == "parameter 'message': nope"
    session.document.edit("set_params", id="bad", params={"message": "other"})
    assert session.snapshot()["nodes"]["bad"]["state"] == "idle"


def test_run_refuses_an_invalid_graph(session):
    session.document.edit("disconnect", target="sum", target_port="a")
    with pytest.raises(GraphInvalid, match="input 'a'"):
        session.queue.run()


def test_save_and_open(session, tmp_path):
    path = tmp_path / "saved.json"
    session.document.save(path)
    assert not session.document.dirty
    session.document.edit("remove_node", id="c")
    session.document.open(path)
    assert session.document.graph.has_node("c")


def test_autosave_keeps_the_newest_versions(registry, workspace, chain):
    from nodeflow.session import AUTOSAVE_KEEP

    session = Session(registry, workspace, graph=chain, autosave_delay=0.01)
    for i in range(AUTOSAVE_KEEP + 3):
        session.document.edit("move", id="a", x=i, y=0)
        session.document.autosave()
    saved = session.document.autosaves()
    assert len(saved) == AUTOSAVE_KEEP
    from nodeflow.graph import Graph

    assert Graph.load(saved[0]).node("a").position.x == AUTOSAVE_KEEP + 2
    session.close()  # the autosave the last edit set off is not left to fire after the test


def test_an_autosave_that_cannot_be_written_is_said_not_raised(registry, workspace, chain):
    import shutil
    import threading

    raised = []
    threading.excepthook, before = (lambda args: raised.append(args.exc_value)), threading.excepthook
    try:
        session = Session(registry, workspace, graph=chain, autosave_delay=0.01)
        shutil.rmtree(workspace)
        workspace.write_text("a file where the workspace folder was")  # nothing can be written under it
        session.document.edit("move", id="a", x=1, y=0)
        assert wait_for(lambda: session.document.notice is not None, timeout=10)
    finally:
        threading.excepthook = before
    assert session.document.notice.startswith("Could not autosave to autosave/") and raised == []
    assert str(workspace) not in session.document.notice  # no path of the server's
    assert session.document.dirty  # the edit is still there, unsaved


def test_nodes_the_latest_run_computed_show_done_until_they_change(session):
    session.queue.run(target="sum")
    session.queue.wait(10)
    states = {k: v["state"] for k, v in session.snapshot()["nodes"].items()}
    assert states["sum"] == "done" and states["a"] == "done"
    session.queue.run(target="text")
    session.queue.wait(10)
    states = {k: v["state"] for k, v in session.snapshot()["nodes"].items()}
    assert states["sum"] == "cached" and states["text"] == "done"
    session.document.edit("set_params", id="sum", params={"offset": 1})
    assert session.snapshot()["nodes"]["sum"]["state"] == "stale"


def test_stop_logs_what_happened_once_not_interrupted_twice(registry, workspace):
    import time

    from .conftest import make_graph

    graph = make_graph({"slow": ("test.slow", {"steps": 10_000, "delay": 0.01})}, [])
    session = Session(registry, workspace, graph=graph)
    session.queue.run()
    deadline = time.time() + 10
    while session.snapshot()["nodes"]["slow"]["state"] != "running" and time.time() < deadline:
        time.sleep(0.01)
    session.queue.stop()
    assert session.queue.wait(10).interrupted
    entry = next(e for e in session.snapshot()["log"] if e["kind"] == "stopped")
    line = f"{entry['kind']}: {entry['message']}"  # as the editor's log shows it
    assert "interrupted: interrupted" not in line and "stopped by the user" in entry["message"]


def test_edit_ops_are_typed_and_wrong_arguments_are_named(session):
    before = session.document.graph
    for ops, words in [([{"op": "set_params", "node": "sum", "params": {}}], ["ops.0.set_params.id", "ops.0.set_params.node"]),
                       (["move"], ["ops.0"]),
                       ([{"op": "teleport", "id": "a"}], ["unknown op", "add_node"]),
                       ([{"op": "move", "id": "a", "x": float("inf"), "y": 0}], ["ops.0.move.x", "finite"])]:
        with pytest.raises(EditError) as caught:
            session.document.edits(ops)
        assert all(word in str(caught.value) for word in words), str(caught.value)
        assert "_apply_" not in str(caught.value) and "keyword argument" not in str(caught.value)
    assert session.document.graph is before


def test_a_node_removed_and_added_back_under_another_type_has_its_paths_checked(registry, workspace, tmp_path):
    from .conftest import make_graph

    graph = make_graph({"x": ("test.constant", {"root": "/etc"})}, [])  # an unknown param of a constant
    session = Session(registry, workspace, graph=graph, allowed_roots=[])
    with pytest.raises(EditError, match=r"x\.root: .*outside"):
        session.document.edits([{"op": "remove_node", "id": "x"},
                       {"op": "add_node", "id": "x", "type": "test.read_folder", "params": {"root": "/etc"}}])
    with pytest.raises(EditError, match=r"already a node with id 'x'"):
        session.document.edit("add_node", id="x", type="test.constant")
    assert session.document.graph is graph


def test_run_on_an_invalid_graph_raises_the_problems_not_a_key_error(registry, workspace):
    from .conftest import make_graph

    session = Session(registry, workspace, graph=make_graph({"classifier": ("test.add", {})}, []))
    with pytest.raises(GraphInvalid) as caught:
        session.queue.run("classifier")
    assert caught.value.problems[0].node_id == "classifier" and caught.value.problems[0].port == "a"
