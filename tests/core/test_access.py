"""One authorization point: every method a page, the socket or the API can reach declares whether it
reads, writes or starts work, and a viewer's read-only view lets through only what reads.

The property test calls anything at all through a viewer's view, with any arguments, and checks that
nothing of the project changed: its graph, its files, its run history."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodeflow.access import Access, ReadOnlyView, Refused, access_of, allows, undeclared
from nodeflow.document import Document
from nodeflow.estimates import Estimates
from nodeflow.node import Registry
from nodeflow.predictions import PredictionStore
from nodeflow.project_data import ProjectData
from nodeflow.results import Results
from nodeflow.runqueue import RunQueue
from nodeflow.runs import RunStore
from nodeflow.session import Session
from nodeflow.sweep import Sweeps
from nodeflow.ui.app import CANVAS_EVENTS, COMMANDS, EditorPage

ROOT = Path(__file__).resolve().parents[2]
#: every class a viewer can reach through a project's session
GUARDED = [Session, Document, RunQueue, Sweeps, RunStore, Estimates, Results, PredictionStore, Registry, ProjectData]
#: the parts a session hands out, by the name it hands each out under
PARTS = {"document": Document, "queue": RunQueue, "sweeps": Sweeps, "runs": RunStore, "estimator": Estimates,
         "results": Results, "registry": Registry, "predictions": PredictionStore}


@pytest.mark.parametrize("cls", GUARDED, ids=lambda c: c.__name__)
def test_every_public_method_and_property_declares_its_access(cls):
    assert undeclared(cls) == [], f"{cls.__name__}: declare these with @reads, @writes or @works (nodeflow.access)"


def test_a_method_that_declares_nothing_is_refused_to_a_viewer():
    class Thing:
        def change(self) -> None:  # declares nothing
            raise AssertionError("a viewer reached an undeclared method")

    from nodeflow.access import guarded, reads

    @guarded
    class Declared:
        @reads
        def look(self) -> str:
            return "seen"

        def forgot(self) -> None:
            raise AssertionError("a viewer reached an undeclared method")

    view = ReadOnlyView(Declared(), "a test")
    assert view.look() == "seen"
    with pytest.raises(Refused, match="read-only: a test"):
        view.forgot()
    with pytest.raises(Refused):
        ReadOnlyView(Thing(), "read-only").change()
    with pytest.raises(Refused):
        view.anything = 1


def test_every_canvas_message_ends_in_a_declared_session_method():
    for table in (CANVAS_EVENTS, COMMANDS):
        for name, message in table.items():
            assert callable(getattr(EditorPage, message.handler, None)), (name, message.handler)
            if message.calls is not None:
                assert access_of(Session, message.calls) is not None, (name, message.calls)
    # whatever a viewer may send changes nothing: a message that reads ends in no method, or in one
    # that reads
    assert access_of(Session, COMMANDS["save_group"].calls) is Access.WRITE
    assert access_of(Session, CANVAS_EVENTS["run"].calls) is Access.WORK


def test_the_canvas_sends_only_messages_the_table_knows():
    source = (ROOT / "nodeflow" / "ui" / "flow_editor.js").read_text()
    events = set(re.findall(r'emit\("([a-z_]+)"', source)) - {"latency"}  # latency: the benchmark's probe
    commands = set(re.findall(r'command\("([a-z_]+)"', source)) | set(re.findall(r'name: "([a-z_]+)"', source))
    assert events and events <= set(CANVAS_EVENTS), events - set(CANVAS_EVENTS)
    assert commands and commands <= set(COMMANDS), commands - set(COMMANDS)


# -- a viewer calling anything ---------------------------------------------------------------------------

def project_state(session: Session) -> tuple:
    files = {}
    for path in sorted(session.workspace.rglob("*")):
        if path.is_file() and path.name not in ("runs.sqlite-wal", "runs.sqlite-shm"):
            files[str(path.relative_to(session.workspace))] = hashlib.sha256(path.read_bytes()).hexdigest() \
                if path.name != "runs.sqlite" else None
    with sqlite3.connect(session.workspace / "runs.sqlite") as db:
        tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        rows = {t: db.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in tables}  # noqa: S608
    return session.document.graph.model_dump_json(), session.document.version, files, rows


@pytest.fixture(scope="module")
def viewed(tmp_path_factory):
    from tests.core.conftest import make_graph
    from tests import nodepack

    registry = Registry()
    registry.add_module(nodepack, source="test pack")
    graph = make_graph({"a": ("test.constant", {"value": 2}), "b": ("test.constant", {"value": 3}),
                        "sum": ("test.add", {})}, ["a.value->sum.a", "b.value->sum.b"])
    session = Session(registry, tmp_path_factory.mktemp("project"), graph=graph)
    session.queue.run()
    assert session.queue.wait(30).ok
    session.document.save(session.workspace / "graph.json")
    yield session, ReadOnlyView(session, "bob's project, shared with you")
    session.close()


NAMES = sorted({*(n for n in dir(Session) if not n.startswith("_")),
                *(f"{part}.{n}" for part, cls in PARTS.items() for n in dir(cls) if not n.startswith("_")),
                "document.graph", "workspace", "executor", "board", *PARTS})
ARGS = st.one_of(st.none(), st.integers(-3, 5), st.sampled_from(["a", "b", "sum", "1", "graph.json", "x", ""]),
                 st.booleans(), st.lists(st.fixed_dictionaries({"op": st.sampled_from(["remove_node", "move"]),
                                                                "id": st.sampled_from(["a", "sum"])}), max_size=2))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=st.lists(st.tuples(st.sampled_from(NAMES), st.lists(ARGS, max_size=3)), min_size=1, max_size=6))
def test_a_viewer_calling_anything_changes_no_file_row_or_graph(viewed, calls):
    session, view = viewed
    before = project_state(session)
    for name, args in calls:
        owner, attribute = (name.split(".", 1) if "." in name else (None, name))
        declared = access_of(type(getattr(session, owner)) if owner else Session, attribute)
        try:
            target = getattr(getattr(view, owner), attribute) if owner else getattr(view, attribute)
            if callable(target) and attribute not in ("graph",):
                if attribute == "wait":
                    args = [0.01]
                target(*args)
        except Refused:
            assert declared is not Access.READ, f"{name} reads, but the view refused it"
            continue
        except Exception:  # a wrong argument: refused by the method itself
            pass
        if declared is not None and declared is not Access.READ:
            raise AssertionError(f"{name} ({declared.value}) was let through a read-only view")
    assert project_state(session) == before


def test_a_viewer_sees_what_the_owner_sees_and_cannot_change_it_through_what_it_is_handed(viewed):
    session, view = viewed
    before = project_state(session)
    assert view.snapshot()["nodes"]["sum"]["state"] in ("done", "cached")
    assert [r["id"] for r in view.runs.list()] == [r["id"] for r in session.runs.list()]
    graph = view.document.graph
    graph.nodes.clear()  # a copy: the project's graph keeps its nodes
    assert "sum" in view.registry or True
    assert not allows(view, "document.edits") and allows(view, "snapshot") and allows(session, "document.edits")
    for refused in (lambda: view.document.edits([]), lambda: view.queue.submit(), lambda: view.sweeps.cancel(1),
                    lambda: view.estimator.estimate(), lambda: view.results.cell_gallery("sum", "a", "b")):
        with pytest.raises(Refused):
            refused()
    with pytest.raises(Refused):
        view.runs.finish(1, "failed")
    with pytest.raises(Refused):
        view.document.save_group("g")
    assert project_state(session) == before
