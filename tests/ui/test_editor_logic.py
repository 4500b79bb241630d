"""Editor logic through NiceGUI's simulated user: no browser, milliseconds per test."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from nodeflow.session import Session
from nodeflow.ui.flow_editor import FlowEditor
from nodeflow.ui.forms import human_count, resolve, widget_kind
from nodeflow.ui.state import Hub, status_delta

from .server import demo_graph, pack_registry


def editor_element(user) -> FlowEditor:
    return next(iter(user.find(FlowEditor).elements))


async def test_page_shows_graph_palette_and_run_bar(editor):
    user, session, hub = editor
    await user.open("/")
    await user.should_see("Run all")
    await user.should_see("Run selected")
    await user.should_see("Constant")  # palette
    await user.should_see("test.constant · tests.nodepack")  # where each node type came from
    canvas = editor_element(user)
    ids = [n["id"] for n in canvas.props["graph"]["nodes"]]
    assert ids == [n.id for n in session.document.graph.nodes]
    assert set(canvas.props["catalogue"]) == {entry["type"] for entry in hub.catalogue_list}
    add = canvas.props["catalogue"]["test.add"]
    assert [p["name"] for p in add["inputs"]] == ["a", "b"] and add["inputs"][0]["color"].startswith("#")


async def test_canvas_edits_reach_the_session_and_undo(editor):
    user, session, _ = editor
    await user.open("/")
    canvas = editor_element(user)
    v = session.document.version
    user.find(FlowEditor).trigger("edit", {"rid": 1, "kind": "move", "base": v,
                                           "ops": [{"op": "move", "id": "c1", "x": 11, "y": 22}]})
    assert session.document.graph.node("c1").position.x == 11 and session.document.version == v + 1
    user.find(FlowEditor).trigger("edit", {"rid": 2, "kind": "connect", "base": v + 1, "ops": [
        {"op": "connect", "source": "c1", "source_port": "value", "target": "add2", "target_port": "a"}]})
    assert any(e.target == "add2" for e in session.document.graph.edges)
    # an incompatible wire is refused by the session too, and changes nothing
    before = session.document.graph
    user.find(FlowEditor).trigger("edit", {"rid": 3, "kind": "connect", "base": v + 2, "ops": [
        {"op": "connect", "source": "desc", "source_port": "text", "target": "add2", "target_port": "b"}]})
    assert session.document.graph is before
    await user.should_see("Refused")
    # a deleted selection is one undo step
    user.find(FlowEditor).trigger("edit", {"rid": 4, "kind": "delete", "base": session.document.version, "ops": [
        {"op": "remove_node", "id": "add"}, {"op": "disconnect", "target": "desc", "target_port": "value"}]})
    assert not session.document.graph.has_node("add") and not session.document.graph.incoming("desc")
    user.find(FlowEditor).trigger("command", {"name": "undo"})
    assert session.document.graph.has_node("add") and session.document.graph.incoming("desc")
    user.find(FlowEditor).trigger("command", {"name": "redo"})
    assert not session.document.graph.has_node("add")
    assert canvas is editor_element(user)


async def test_selecting_a_node_shows_its_form_and_refuses_bad_values(editor):
    user, session, _ = editor
    await user.open("/")
    user.find(FlowEditor).trigger("select", {"ids": ["slow"]})
    await user.should_see("Steps [1 … 100000]")
    steps = next(iter(user.find(marker="param-steps").elements))
    steps.set_value(5)
    assert session.document.graph.node("slow").params["steps"] == 5
    steps.set_value(0)  # below the bound
    await user.should_see("Refused")
    assert session.document.graph.node("slow").params["steps"] == 5
    user.find(FlowEditor).trigger("select", {"ids": ["desc"]})
    select = next(iter(user.find(marker="param-style").elements))
    assert set(select.options) == {"plain", "fancy"}
    select.set_value("fancy")
    assert session.document.graph.node("desc").params["style"] == "fancy"


async def test_canvas_commands_copy_paste_duplicate_and_refuse_what_they_cannot_use(editor):
    user, session, hub = editor
    await user.open("/")
    canvas = user.find(FlowEditor)
    canvas.trigger("command", {"name": "copy", "ids": ["c1", "c2", "add", "ghost"]})
    assert [n["id"] for n in json.loads(hub.clipboard)["nodes"]] == ["c1", "c2", "add"]
    canvas.trigger("command", {"name": "paste", "text": None, "at": {"x": 10, "y": 900}})  # no system clipboard
    assert [session.document.graph.node(i).position.y for i in ("c1_2", "c2_2")] == [900, 1060]
    canvas.trigger("command", {"name": "duplicate", "ids": ["slow"]})
    assert session.document.graph.node("slow_2").params == session.document.graph.node("slow").params
    before, version = session.document.graph, session.document.version
    for args in ({"name": "paste", "text": "hello"}, {"name": "paste", "text": 5, "at": "here"},
                 {"name": "duplicate", "ids": "slow"}, {"name": "duplicate", "ids": [None, {}]},
                 {"name": "insert_group", "group": "../../etc/passwd", "at": {"x": float("nan"), "y": 0}},
                 {"name": "save_group", "group": "nobody"}, {"name": "copy"}, {"name": "explode"}, {}):
        canvas.trigger("command", args)
        assert session.document.graph == before and session.document.version == version, args
    await user.should_see("The clipboard holds no nodeflow nodes (copy some with Ctrl+C first)")
    await user.should_see("no saved group named '../../etc/passwd'")


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=4),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from("xyz"), c, max_size=3),
                    max_leaves=8))
def test_a_point_from_the_page_is_two_finite_numbers_or_none(value):
    from nodeflow.ui.clipboard import canvas_point

    point = canvas_point(value)
    assert point is None or (set(point) == {"x", "y"} and all(abs(v) < 1e9 for v in point.values()))


async def test_run_to_a_node_updates_badges_and_outputs(editor):
    user, session, hub = editor
    session.document.edit("set_params", id="slow", params={"steps": 3, "delay": 0.0})
    await user.open("/")
    user.find(FlowEditor).trigger("run", {"target": "slow"})
    session.queue.wait(10)
    states = hub.status_of(hub.snapshot())
    assert states["slow"]["state"] == "done" and states["add"]["state"] == "done"
    assert states["desc"]["state"] == "idle"
    session.queue.run("slow")  # everything it needs is cached now
    session.queue.wait(10)
    states = hub.status_of(hub.snapshot())
    assert states["slow"]["state"] == "cached" and states["c1"]["state"] == "cached"
    session.document.edit("set_params", id="slow", params={"steps": 4})
    states = hub.status_of(hub.snapshot())
    assert states["slow"]["state"] == "stale" and states["c1"]["state"] == "cached"


async def test_http_api_shares_the_session(editor):
    user, session, _ = editor
    await user.open("/")
    import httpx
    from nicegui import app

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as http:
        graph = (await http.get("/api/graph")).json()
        assert [n["id"] for n in graph["nodes"]] == [n.id for n in session.document.graph.nodes]
        graph["nodes"] = [n for n in graph["nodes"] if n["id"] != "add2"]
        assert (await http.put("/api/graph", json=graph)).status_code == 200
        assert not session.document.graph.has_node("add2")
        nodes = (await http.get("/api/nodes")).json()
        assert any(n["type"] == "test.slow" for n in nodes)
        plan = (await http.post("/api/run", json={"target": "add"})).json()["plan"]
        assert plan == {"c1": "run", "c2": "run", "add": "run"}
        session.queue.wait(10)
        status = (await http.get("/api/status")).json()
        assert status["nodes"]["add"]["state"] == "done" and status["nodes"]["add"]["metrics"]["sum"] == 3.0
        bad = await http.put("/api/graph", json={"format": "nope"})
        assert bad.status_code == 422
        assert (await http.post("/api/stop")).status_code == 200


def test_status_delta_sends_only_changes():
    old = {"a": {"state": "idle"}, "b": {"state": "idle"}}
    new = {"a": {"state": "idle"}, "c": {"state": "running"}}
    assert status_delta(old, new) == {"c": {"state": "running"}, "b": None}


def test_schema_widgets():
    schema = {"properties": {
        "lr": {"type": "number", "minimum": 0}, "n": {"type": "integer"}, "on": {"type": "boolean"},
        "mode": {"enum": ["a", "b"]}, "root": {"anyOf": [{"type": "string"}, {"type": "null"}], "x-nodeflow-path": "folder"},
        "unfreeze": {"type": "array", "items": {"type": "string"}, "x-widget": "layers"}, "name": {"type": "string"},
        "m": {"$ref": "#/$defs/M"}}, "$defs": {"M": {"enum": ["x", "y"]}}}
    kinds = {n: widget_kind(n, resolve(schema, p)[0]) for n, p in schema["properties"].items()}
    assert kinds == {"lr": "number", "n": "int", "on": "switch", "mode": "select", "root": "folder",
                     "unfreeze": "layers", "name": "text", "m": "select"}
    assert resolve(schema, schema["properties"]["root"])[1] is True
    # the schema's hint decides, not the param's name
    assert widget_kind("unfreeze", {"type": "array", "items": {"type": "string"}}) == "list"
    assert widget_kind("blocks", {"type": "array", "items": {"type": "string"}, "x-widget": "layers"}) == "layers"
    assert human_count(138_357_544) == "138.4M" and human_count(512) == "512"


def test_summary_prefers_changed_params(workspace):
    from nodeflow.session import Session

    from .server import demo_graph, pack_registry

    hub = Hub(Session(pack_registry(), workspace, graph=demo_graph()))
    assert hub.summary("test.slow", {"delay": 0.5}).startswith("delay=0.5")
    assert "unknown" in hub.summary("nope", {})


def test_cards_follow_the_params_with_the_real_catalogue(workspace):
    """Titles from a type's template, summaries of the values the node will use (an output layer's
    activation), block names read as names, and the bare words a JSON field takes."""
    from nodeflow.graph import Graph
    from nodeflow.node import Registry
    from nodeflow.session import Session
    from nodeflow.templates import template_path
    from nodeflow.ui.forms import bare_words

    registry = Registry.discover(plugins=False)
    hub = Hub(Session(registry, workspace, graph=Graph.load(template_path("cats_vs_dogs_finetune"))))
    cards = {n["id"]: n["data"] for n in hub.canvas_graph()["nodes"]}
    assert cards["input"]["title"] == "Input layer (150×150×3)" and cards["dense"]["title"] is None
    assert hub.title("model.input", None, {"height": 64, "width": 64}) == "Input layer (64×64×3)"
    assert hub.title("data.format", "My own title", {"height": 64}) == "My own title"
    assert "unfreeze=block3, block4, block5" in hub.summary("train.finetune", {"unfreeze": ["block3", "block4", "block5"]})
    assert "activation=none" in hub.summary("model.dense", {"units": "auto"})
    assert "activation=relu" in hub.summary("model.dense", {"units": 64})
    schema = registry.get("model.dense").Params.model_json_schema()
    assert bare_words(schema, "units") == ["auto"] and bare_words(schema, "dropout") == []


def test_a_new_run_keeps_the_previous_output_apart(workspace, monkeypatch):
    """While a node runs again, its metrics are only the new run's, and the old curves and numbers
    are kept as ``previous`` until the run ends."""
    from nodeflow.events import Metric, NodeFinished, NodeStarted
    from nodeflow.runqueue import RunQueue

    session = Session(pack_registry(), workspace, graph=demo_graph(), device="cpu")
    hub = Hub(session)
    feed = session._tell  # the path the worker's events take
    key = session.executor.keys(session.document.graph)["slow"]
    feed(NodeStarted(node_id="slow", key=key))
    for epoch in range(3):
        feed(Metric(node_id="slow", name="loss", value=1.0 / (epoch + 1), step=epoch))
    feed(Metric(node_id="slow", name="trainable_params", value=100))
    feed(NodeFinished(node_id="slow", key=key, seconds=1.0, metrics={"loss": 1.0 / 3, "trainable_params": 100}))
    first = hub.snapshot()["nodes"]["slow"]
    assert set(first["metrics"]) == {"loss", "trainable_params"} and first["run"]["finished"]

    feed(NodeStarted(node_id="slow", key=key))
    feed(Metric(node_id="slow", name="trainable_params", value=200))
    monkeypatch.setattr(RunQueue, "running", property(lambda self: True))  # as while its run thread lives
    live = hub.snapshot()["nodes"]["slow"]
    assert live["state"] == "running"
    assert live["metrics"] == {"trainable_params": 200}  # not the old loss beside it
    assert live["previous"]["metrics"] == {"loss": 1.0 / 3, "trainable_params": 100}
    assert [p["value"] for p in live["previous"]["series"]["loss"]] == [1.0, 0.5, 1.0 / 3]
    assert live["run"]["started"] > first["run"]["started"] and live["run"]["finished"] is None
    monkeypatch.undo()
    session.close()


def test_editor_words_and_names():
    from nodeflow.ui.file_dialogs import default_file_name, file_name_problem
    from nodeflow.ui.forms import auto_title, bounds_text
    from nodeflow.ui.outputs import error_param

    assert default_file_name("Cats vs dogs: feature extraction, then fine-tuning") == \
        "cats_vs_dogs_feature_extraction_then_fine-tuning.json"
    assert default_file_name(":: ") == "graph.json"
    assert "NUL" in file_name_problem("a\x00b") and "':'" in file_name_problem("a:b")
    assert file_name_problem("../x") and file_name_problem("") and file_name_problem("x" * 300)
    assert file_name_problem("runs/my graph.json") is None
    assert bounds_text({"exclusiveMinimum": 0, "maximum": 10}) == " (0 … 10]"
    assert bounds_text({"minimum": 1, "maximum": 10000}) == " [1 … 10000]"
    assert bounds_text({"minimum": 0}) == " [0 … ∞)" and bounds_text({}) == ""
    assert error_param("parameter 'weights': could not download") == "weights"
    assert error_param("no images", "root") == "root" and error_param("out of memory") is None
    entry = {"params_schema": {"properties": {
        "unfreeze": {"type": "array", "items": {"type": "string"}, "x-widget": "layers", "x-last-n": "last_n"},
        "last_n": {"type": "integer"}}}}
    assert auto_title(entry, {"unfreeze": [], "last_n": 1}) == "Unfreeze the last block"
    assert auto_title(entry, {"unfreeze": [], "last_n": 2}) == "Unfreeze the last 2 blocks"
    assert auto_title(entry, {"unfreeze": ["block4", "block5"], "last_n": 1}) == "Unfreeze block4, block5"
    assert auto_title({"params_schema": {"properties": {"n": {"type": "integer"}}}}, {}) is None


def test_a_card_shows_what_a_node_costs_but_not_a_quick_nodes_zero():
    from nodeflow.ui.run_controls import estimate_line

    trainer = {"seconds": 42.0, "epochs": 3, "device": "cpu (2 threads)", "feature_cache": "hit", "note": ""}
    assert estimate_line(trainer) == "≈ 42 s · 3 epochs · CPU · feature cache: hit"
    assert estimate_line({"seconds": 0.004, "note": "quick: ran it now (not cached)"}) == ""
    slow_scan = {"seconds": 3.0, "note": "quick: ran it now (not cached)"}
    assert estimate_line(slow_scan).startswith("≈ 3")
    assert estimate_line({"seconds": None, "note": "quick; not measured"}) == ""


def test_a_collapsed_groups_card_shows_the_ports_that_cross_its_edge(workspace):
    session = Session(pack_registry(), workspace, graph=demo_graph())
    session.document.edits([{"op": "group", "id": "sum", "members": ["c1", "c2", "add"], "collapsed": True},
                   {"op": "group", "id": "end", "members": ["slow", "desc", "add2"]}])
    groups = {g["id"]: g for g in Hub(session).canvas_graph()["groups"]}
    summed = groups["sum"]
    assert summed["collapsed"] and summed["members"] == ["c1", "c2", "add"]
    assert summed["inputs"] == []  # the constants feed the adder inside the group
    assert [(p["handle"], p["label"], p["type"]) for p in summed["outputs"]] == [("add.value", "value", "Number")]
    end = groups["end"]
    # fed from outside (slow.value), or needing a wire (add2.a); an optional unwired input (add2.b) is left out
    assert [(p["handle"], p["label"]) for p in end["inputs"]] == [("slow.value", "value"), ("add2.a", "a")]
    # outputs that go nowhere are the group's results; two of one name say whose they are
    assert [(p["handle"], p["label"]) for p in end["outputs"]] == [("desc.text", "text"), ("add2.value", "value")]
    session.document.edit("ungroup", id="end")
    session.document.edit("group", id="both", members=["slow", "add2"])
    both = Hub(session).canvas_graph()["groups"][1]
    assert [(p["handle"], p["label"]) for p in both["outputs"]] == [("slow.value", "slow.value"),
                                                                    ("add2.value", "add2.value")]


def test_help_text_is_plain_words():
    from pydantic import Field

    from nodeflow.node import Node, NodeParams, plain_text

    assert plain_text("its images (:meth:`cell_gallery`), see :class:`~nodeflow.node.Node` and :ref:`the page "
                      "<pages>`; ``last_n`` blocks, :py:func:`nodeflow.cli.main`") == \
        "its images (cell_gallery), see Node and the page; last_n blocks, nodeflow.cli.main"

    class Documented(Node):
        """Shows a cell's images (:meth:`cell_gallery`)."""

        type = "test.documented"

        class Params(NodeParams):
            depth: int = Field(1, description="Like :attr:`Trainer.epochs`, in ``blocks``")

    entry = Documented.describe()  # what the palette, the inspector and `nodeflow nodes` show
    assert entry["description"] == "Shows a cell's images (cell_gallery)."
    assert entry["params_schema"]["properties"]["depth"]["description"] == "Like Trainer.epochs, in blocks"


async def test_the_folder_picker_stores_a_folder_of_the_workspace_relative_to_the_workspace(editor, workspace, tmp_path,
                                                                                         monkeypatch):
    """Not relative to the folder the editor was started in: the graph then reads the same folder when
    the editor, the command line or a class server is started from anywhere else."""
    from nicegui import ui
    from nicegui.testing.user_interaction import UserInteraction

    user, session, _ = editor
    (workspace / "data" / "hotdog").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # the workspace lies below the starting folder, as in `nodeflow serve --workspace ws`
    session.document.edit("add_node", type="test.read_folder", id="r", position={"x": 0, "y": 500})
    await user.open("/")
    user.find(FlowEditor).trigger("select", {"ids": ["r"]})
    await user.should_see(marker="param-root")

    def click(elements) -> None:
        UserInteraction(user, set(elements), None).click()

    click(e for e in user.find(kind=ui.button).elements if "nf-pick-folder" in e.classes)
    for name in ("data", "hotdog"):
        await user.should_see(name)
        click(e for e in user.find(kind=ui.item).elements
              if any(isinstance(d, ui.label) and d.text == name for d in e.descendants()))
    user.find("Choose this folder").click()
    assert session.document.graph.node("r").params["root"] == "data/hotdog"


async def test_a_file_params_picker_lists_files_and_a_click_picks_one(editor, workspace):
    """A weights file is picked as a folder is, not typed: the picker of a param that names a file
    lists the files beside the folders."""
    from nicegui import ui
    from nicegui.testing.user_interaction import UserInteraction

    user, session, _ = editor
    (workspace / "weights").mkdir()
    (workspace / "weights" / "resnet18-4-classes.pth").write_bytes(b"not read by the picker")
    session.document.edit("add_node", type="test.read_folder", id="r", position={"x": 0, "y": 500})
    await user.open("/")
    user.find(FlowEditor).trigger("select", {"ids": ["r"]})
    await user.should_see(marker="param-weights")

    def click(elements) -> None:
        UserInteraction(user, set(elements), None).click()

    pickers = [e for e in user.find(kind=ui.button).elements if "nf-pick-folder" in e.classes]
    click(p for p in pickers if p.props.get("aria-label") == "Choose a file")
    await user.should_see("weights")
    click(e for e in user.find(kind=ui.item).elements
          if any(isinstance(d, ui.label) and d.text == "weights" for d in e.descendants()))
    await user.should_see("resnet18-4-classes.pth")
    click(e for e in user.find(kind=ui.item).elements if "nf-file-entry" in e.classes)
    assert session.document.graph.node("r").params["weights"] == "weights/resnet18-4-classes.pth"
