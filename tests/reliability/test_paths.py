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
def session(registry, layout, monkeypatch):
    workspace, data, _ = layout
    monkeypatch.chdir(workspace)  # relative paths are taken from the folder nodeflow runs in
    graph = make_graph({"r": ("test.read_folder", {"root": "inside"})}, [])
    return Session(registry, workspace, graph=graph, allowed_roots=[data])


@pytest.mark.parametrize("value", ["inside", "./inside/../inside", "DATA/cats", "DATA"])
def test_paths_inside_are_accepted(session, layout, value):
    workspace, data, _ = layout
    session.edit("set_params", id="r", params={"root": value.replace("DATA", str(data))})


@pytest.mark.parametrize("value", ["..", "../secret", "inside/../../secret", "SECRET", "escape", "escape/x", "/etc"])
def test_escapes_are_refused_naming_the_param(session, layout, value):
    _, _, secret = layout
    before = session.graph
    with pytest.raises(EditError, match=r"r\.root: .* is outside the folders this editor may use"):
        session.edit("set_params", id="r", params={"root": value.replace("SECRET", str(secret))})
    assert session.graph == before


def test_file_params_keep_their_keywords_and_are_checked(session):
    session.edit("set_params", id="r", params={"weights": "none"})
    with pytest.raises(EditError, match=r"r\.weights"):
        session.edit("set_params", id="r", params={"weights": "/etc/passwd"})


def test_a_whole_document_is_checked_too(session, layout):
    _, _, secret = layout
    bad = make_graph({"r": ("test.read_folder", {"root": str(secret)})}, [])
    with pytest.raises(EditError, match="outside"):
        session.replace(bad)


def test_unrestricted_without_roots(registry, layout):
    workspace, _, secret = layout
    graph = make_graph({"r": ("test.read_folder", {"root": str(secret)})}, [])
    Session(registry, workspace, graph=graph).replace(graph)


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
        session.run("r")
        report = session.wait(60)
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
