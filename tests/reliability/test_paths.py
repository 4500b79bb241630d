"""Paths from the browser or the API stay inside the workspace and the allowed roots."""

import pytest

from nodeflow.paths import PathNotAllowed, confine
from nodeflow.session import EditError, Session
from tests.core.conftest import make_graph


@pytest.fixture
def layout(tmp_path):
    workspace = tmp_path / "ws"
    data = tmp_path / "data"
    secret = tmp_path / "secret"
    for folder in (workspace / "inside", data / "cats", secret):
        folder.mkdir(parents=True)
    (workspace / "escape").symlink_to(secret)
    return workspace, data, secret


@pytest.fixture
def session(registry, layout, monkeypatch, tmp_path):
    workspace, data, _ = layout
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # relative paths start at the workspace, not at the folder we run in
    graph = make_graph({"r": ("test.read_folder", {"root": "inside"})}, [])
    return Session(registry, workspace, graph=graph, allowed_roots=[data])


@pytest.mark.parametrize("value", ["inside", "./inside/../inside", "DATA/cats", "DATA"])
def test_paths_inside_are_accepted(session, layout, value):
    workspace, data, _ = layout
    session.document.edit("set_params", id="r", params={"root": value.replace("DATA", str(data))})


@pytest.mark.parametrize("value", ["..", "../secret", "inside/../../secret", "SECRET", "escape", "escape/x", "/etc"])
def test_escapes_are_refused_naming_the_param(session, layout, value):
    _, _, secret = layout
    before = session.document.graph
    with pytest.raises(EditError, match=r"r\.root: .* is outside the folders this editor may use .*; to use another "
                                         r"folder, start the editor with --allow-root FOLDER"):
        session.document.edit("set_params", id="r", params={"root": value.replace("SECRET", str(secret))})
    assert session.document.graph == before


def test_file_params_keep_their_keywords_and_are_checked(session):
    session.document.edit("set_params", id="r", params={"weights": "none"})
    with pytest.raises(EditError, match=r"r\.weights"):
        session.document.edit("set_params", id="r", params={"weights": "/etc/passwd"})


def test_a_whole_document_is_checked_too(session, layout):
    _, _, secret = layout
    bad = make_graph({"r": ("test.read_folder", {"root": str(secret)})}, [])
    with pytest.raises(EditError, match="outside"):
        session.document.replace(bad)


def test_unrestricted_without_roots(registry, layout):
    workspace, _, secret = layout
    graph = make_graph({"r": ("test.read_folder", {"root": str(secret)})}, [])
    Session(registry, workspace, graph=graph).document.replace(graph)


def test_confine_resolves_symlinks(layout):
    workspace, _, _ = layout
    with pytest.raises(PathNotAllowed):
        confine("escape", [workspace], workspace)
    assert confine("inside", [workspace], workspace) == (workspace / "inside").resolve()


def test_a_nul_byte_is_refused_not_a_crash(layout):
    workspace, _, _ = layout
    with pytest.raises(PathNotAllowed, match="NUL"):
        confine("inside\x00/etc", [workspace], workspace)


def _swap_for_symlink(folder, target) -> None:
    for item in folder.iterdir():
        item.unlink()
    folder.rmdir()
    folder.symlink_to(target)


@pytest.mark.parametrize("isolate", [False, True], ids=["thread", "worker process"])
def test_paths_are_confined_where_they_are_used_at_run_time(registry, layout, monkeypatch, isolate):
    """Checked at edit time, then the folder becomes a symlink to outside: the run refuses it."""
    workspace, data, secret = layout
    (secret / "private").write_text("x")
    (data / "cats" / "one.png").write_text("x")
    monkeypatch.chdir(workspace)
    graph = make_graph({"r": ("test.read_folder", {"root": str(data / "cats")})}, [])
    session = Session(registry, workspace, graph=graph, allowed_roots=[data], isolate=isolate)
    try:
        _swap_for_symlink(data / "cats", secret)
        session.queue.run("r")
        report = session.queue.wait(60)
        assert report.nodes["r"].status == "failed"
        assert "parameter 'root'" in report.nodes["r"].error and "outside the folders" in report.nodes["r"].error
        assert session.snapshot()["nodes"]["r"]["state"] == "failed"
    finally:
        session.close()


def test_the_command_line_follows_the_same_symlink(registry, layout):
    """The CLI is the user's own shell: no confinement."""
    from nodeflow.executor import Executor

    workspace, data, secret = layout
    (secret / "private").write_text("x")
    (data / "cats" / "one.png").write_text("x")
    _swap_for_symlink(data / "cats", secret)
    graph = make_graph({"r": ("test.read_folder", {"root": str(data / "cats")})}, [])
    report = Executor(registry, workspace).run(graph)
    assert report.ok and report.nodes["r"].metrics["files"] == 1


# -- relative paths start at the workspace, whatever folder nodeflow was started in ----------------------

import json  # noqa: E402
import os  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from nodeflow.executor import Executor  # noqa: E402
from nodeflow.graph import Graph  # noqa: E402
from nodeflow.node import Registry  # noqa: E402
from nodeflow import paths  # noqa: E402
from tests.imagegen import make_image_set  # noqa: E402

#: path strings of every shape: relative, absolute, through .. and through links (escape -> secret)
SEGMENTS = st.sampled_from(["inside", "..", ".", "escape", "cats", "nope", "data", "ws", ""])
PREFIXES = st.sampled_from(["", "WS/", "DATA/", "SECRET/", "/", "~/", "./", "../"])
PATHS = st.builds(lambda head, parts: head + "/".join(parts), PREFIXES, st.lists(SEGMENTS, max_size=4))


def spelled(value: str, layout) -> str:
    workspace, data, secret = layout
    return value.replace("WS/", f"{workspace}/").replace("DATA/", f"{data}/").replace("SECRET/", f"{secret}/")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=PATHS)
def test_a_path_param_is_taken_inside_or_refused_and_a_refusal_changes_nothing(session, layout, value):
    workspace, data, _ = layout
    value = spelled(value, layout)
    before, version, notice = session.document.graph, session.document.version, session.document.notice
    try:
        session.document.edit("set_params", id="r", params={"root": value})
    except EditError as exc:
        assert "r.root" in str(exc)
        assert session.document.graph is before and session.document.version == version and session.document.notice == notice
        with pytest.raises(PathNotAllowed):
            confine(value, [workspace, data], workspace)
        return
    assert session.document.graph.node("r").params["root"] == value  # kept as written: resolved where it is used
    if value:
        confine(value, [workspace, data], workspace)  # it lies inside, links followed, from the workspace
        missing = [p for p in session.validate() if p.node_id == "r" and p.param == "root"]
        assert bool(missing) == (not paths.resolve(value, workspace).is_dir()), missing


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=PATHS)
def test_the_cache_key_follows_the_folder_not_the_spelling_nor_the_starting_folder(registry, layout, tmp_path,
                                                                                   monkeypatch, value):
    workspace, _, _ = layout
    value = spelled(value, layout)
    executor = Executor(registry, workspace)
    keys = []
    for folder in (workspace, tmp_path):
        monkeypatch.chdir(folder)
        graph = make_graph({"r": ("test.read_folder", {"root": value})}, [])
        keys.append(executor.keys(graph).get("r"))
    spelled_absolute = str(paths.resolve(value, workspace)) if value else ""
    absolute = make_graph({"r": ("test.read_folder", {"root": spelled_absolute})}, [])
    assert keys[0] == keys[1] == executor.keys(absolute).get("r"), (value, keys)


@pytest.mark.parametrize("where", ["workspace", "inside", "link", "outside", "up"])
def test_what_a_picker_stores_names_the_same_folder_relative_inside_the_workspace(layout, where):
    workspace, data, secret = layout
    (workspace / "inside" / "deep").mkdir()
    (workspace / "to_data").symlink_to(data)
    folder = {"workspace": workspace, "inside": workspace / "inside" / "deep",
              "link": (workspace / "to_data").resolve(), "outside": secret,
              "up": workspace / "inside" / ".." / "inside"}[where]
    stored = paths.stored_form(folder, workspace)
    assert os.path.samefile(paths.resolve(stored, workspace), folder)
    assert os.path.isabs(stored) == (where in ("link", "outside")), stored
    assert ".." not in stored.split("/")


@pytest.fixture(scope="module")
def catalogue() -> Registry:
    return Registry.discover(plugins=False)


def dataset_graph(root: str) -> Graph:
    return make_graph({"dataset": ("data.image_folder", {"root": root, "verify": False}),
                       "format": ("data.format", {"height": 16, "width": 16})}, ["dataset.data->format.data"])


def test_a_session_restarted_from_another_folder_reads_the_same_data_and_keeps_its_results(catalogue, tmp_path,
                                                                                          monkeypatch):
    """The one-person editor (allowed roots: the workspace) started from one folder, then from another:
    the picked folder is the same folder, nothing is invalid, and what ran stays cached."""
    workspace, first, second = tmp_path / "ws", tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    make_image_set(workspace / "data" / "hotdog", ("circle", "stripes"), per_class=5, size=16)
    path = workspace / "graphs" / "hotdog.json"
    path.parent.mkdir()
    dataset_graph("data/hotdog").save(path)
    outcomes = []
    for folder in (first, second):
        monkeypatch.chdir(folder)
        session = Session(catalogue, workspace, graph=Graph.load(path), path=path, allowed_roots=[], device="cpu")
        try:
            assert session.validate() == [] and session.document.notice is None
            plan = session.queue.run()
            report = session.queue.wait(120)
            assert report.ok, report.to_json()
            snapshot = session.snapshot()
            outcomes.append((plan, snapshot["keys"], report.nodes["dataset"].metrics["train_images"],
                             {n: v["state"] for n, v in snapshot["nodes"].items()}))
        finally:
            session.close()
    (plan1, keys1, images1, states1), (plan2, keys2, images2, states2) = outcomes
    assert plan1 == {"dataset": "run", "format": "run"} and plan2 == {"dataset": "cached", "format": "cached"}
    assert keys1 == keys2 and images1 == images2 == 6
    assert set(states1.values()) == {"done"} and set(states2.values()) <= {"done", "cached"}, states2
    assert json.loads(path.read_text())["nodes"][0]["params"]["root"] == "data/hotdog"


def test_an_old_graph_from_the_starting_folder_is_rewritten_once_with_a_notice(registry, tmp_path, monkeypatch):
    project, workspace = tmp_path / "project", tmp_path / "ws"
    (project / "data" / "hotdog").mkdir(parents=True)
    workspace.mkdir()
    path = project / "graph.json"
    make_graph({"r": ("test.read_folder", {"root": "data/hotdog"}), "w": ("test.read_folder", {"root": "ws"})},
               []).save(path)  # ws/ is in the project and in the workspace: it means the workspace's now
    (project / "ws").mkdir()
    (workspace / "ws").mkdir()
    monkeypatch.chdir(project)  # where relative paths were taken from when it was written
    session = Session(registry, workspace, graph=Graph.load(path), path=path)
    try:
        wanted = str(project / "data" / "hotdog")
        assert session.document.graph.node("r").params["root"] == wanted and session.document.graph.node("w").params["root"] == "ws"
        assert session.document.notice == (f"r.root: 'data/hotdog' was read from the folder nodeflow was started in; relative "
                                  f"paths now start at the workspace ({workspace}), so it was rewritten to '{wanted}'. "
                                  f"{path} was rewritten with this path.")
        assert Graph.load(path).node("r").params["root"] == wanted and not session.document.dirty
    finally:
        session.close()
    again = Session(registry, workspace, graph=Graph.load(path), path=path)
    try:
        assert again.document.notice is None and again.document.graph == Graph.load(path)
    finally:
        again.close()


def test_a_project_served_from_a_new_folder_gets_back_its_own_data(registry, tmp_path, monkeypatch):
    """A class server's project, whose picker once wrote paths from the folder above the projects:
    started from elsewhere, the path is found again inside the project, never outside it."""
    root = tmp_path / "class"
    workspace = root / "users" / "ana" / "p1"
    (workspace / "data" / "pets").mkdir(parents=True)
    (tmp_path / "server").mkdir()
    (tmp_path / "server" / "secret").mkdir()
    monkeypatch.chdir(tmp_path / "server")
    graph = make_graph({"r": ("test.read_folder", {"root": "users/ana/p1/data/pets"}),
                        "s": ("test.read_folder", {"root": "secret"})}, [])
    settled, rewritten = paths.settle_graph(graph, registry, workspace, tmp_path / "server", roots=[workspace])
    assert settled.node("r").params["root"] == "data/pets" and settled.node("s").params["root"] == "secret"
    assert [(r.node_id, r.param, r.was, r.now) for r in rewritten] == [("r", "root", "users/ana/p1/data/pets",
                                                                         "data/pets")]
    session = Session(registry, workspace, graph=graph, allowed_roots=[])
    try:
        assert session.document.graph == settled and "r.root" in session.document.notice and "secret" not in session.document.notice
    finally:
        session.close()


def test_validation_names_a_missing_path_but_not_an_output_folder(registry, catalogue, workspace):
    graph = make_graph({"r": ("test.read_folder", {"root": "nope", "weights": "missing.pt"})}, [])
    problems = {(p.node_id, p.param): p.message for p in Executor(registry, workspace).validate(graph)}
    assert problems == {("r", "root"): f"folder 'nope' (relative paths start at the workspace: '{workspace / 'nope'}') "
                                       "does not exist",
                        ("r", "weights"): f"file 'missing.pt' (relative paths start at the workspace: "
                                          f"'{workspace / 'missing.pt'}') does not exist"}
    export = make_graph({"export": ("eval.export", {"folder": "exports/new"})}, [])
    assert not [p for p in Executor(catalogue, workspace).validate(export) if p.param == "folder"]
