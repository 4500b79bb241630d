"""Where the editor left off: the graph it had open, with its unsaved edits, and which files of a
workspace are graphs."""

import json
import os
import time

from nodeflow.cli import DEFAULT_GRAPH, main
from nodeflow.recent import graph_files, reopen
from nodeflow.session import Session


def test_unsaved_edits_are_reopened_with_the_file_they_belong_to(registry, workspace, chain, tmp_path):
    path = tmp_path / "mine.json"
    chain.save(path)
    session = Session(registry, workspace, graph=chain, path=path, autosave_delay=60)
    assert reopen(workspace) is None  # nothing noted yet: the editor opens its default
    session.document.edit("set_params", id="sum", params={"offset": 4})
    session.close()  # the pending autosave is written as the editor stops, not lost

    found = reopen(workspace)
    assert found.path == path and found.dirty
    assert found.graph.node("sum").params == {"offset": 4}
    assert found.message.startswith("Reopened mine.json with unsaved edits from ")
    assert json.loads(path.read_text())["nodes"][2]["params"] == {}  # the file itself is as it was saved

    again = Session(registry, workspace, graph=found.graph, path=found.path)
    again.document.save()
    found = reopen(workspace)
    assert found.path == path and not found.dirty and found.graph.node("sum").params == {"offset": 4}
    assert found.message == "Reopened mine.json, as it was when the editor stopped"


def test_an_unsaved_graph_is_reopened_from_its_autosave(registry, workspace, chain):
    session = Session(registry, workspace, graph=chain)
    session.document.edit("move", id="a", x=5, y=6)
    session.document.autosave()
    found = reopen(workspace)
    assert found.path is None and found.graph.node("a").position.x == 5
    assert found.message.startswith("Reopened the unsaved graph 'test' as autosaved from ")


def test_nothing_to_reopen_when_the_files_are_gone_or_damaged(registry, workspace, chain, tmp_path):
    path = tmp_path / "gone.json"
    chain.save(path)
    Session(registry, workspace, graph=chain, path=path).document.save()
    path.unlink()
    assert reopen(workspace) is None
    (workspace / "autosave" / "editor.json").write_text("{broken")
    assert reopen(workspace) is None


def test_serve_without_a_graph_reopens_and_an_explicit_graph_wins(registry, workspace, chain, tmp_path, monkeypatch):
    import nodeflow.ui.app

    served = []
    monkeypatch.setattr(nodeflow.ui.app, "serve", lambda session, **kw: served.append(
        (session.document.graph, session.document.path, session.document.dirty, session.document.notice)))

    def serve(*args: str):
        assert main(["--no-plugins", "--nodes", "tests/nodepack.py", "serve", "--workspace", str(workspace),
                     "--in-process", *args]) == 0
        return served.pop()

    graph, path, dirty, notice = serve()  # the first start: the template
    assert graph.name.startswith("Cats vs dogs") and path is None and notice is None
    mine = tmp_path / "mine.json"
    chain.save(mine)
    session = Session(registry, workspace, graph=chain, path=mine)
    session.document.edit("set_params", id="sum", params={"offset": 4})
    session.document.autosave()
    graph, path, dirty, notice = serve()  # ./dev.sh editor again: the graph left, with its edits
    assert path == mine and dirty and graph.node("sum").params == {"offset": 4}
    assert notice.startswith("Reopened mine.json with unsaved edits from ")
    graph, path, dirty, notice = serve(DEFAULT_GRAPH)  # a GRAPH given wins
    assert graph.name.startswith("Cats vs dogs") and notice is None
    graph, path, dirty, notice = serve("--set", "sum.offset=9")  # --set applies to the reopened graph too
    assert graph.node("sum").params == {"offset": 9}


def test_only_graph_files_are_listed_the_newest_first_and_autosaves_apart(registry, workspace, chain):
    older, newer = workspace / "older.json", workspace / "projects" / "newer.json"
    newer.parent.mkdir()
    chain.save(older)
    chain.save(newer)
    os.utime(older, (time.time() - 100, time.time() - 100))
    (workspace / "errors" / "errors").mkdir(parents=True)
    (workspace / "errors" / "errors" / "errors.json").write_text('{"top_errors": [], "format": "table"}')
    (workspace / "notes.txt.json").write_text("[1, 2]")
    (workspace / "cache" / "k").mkdir(parents=True)
    chain.save(workspace / "cache" / "k" / "graph.json")  # a result folder is not searched
    handwritten = workspace / "by_hand.json"
    handwritten.write_text('{\n  "nodes": [],\n  "format" : "nodeflow.graph", "version": 1}')
    os.utime(handwritten, (time.time() - 200, time.time() - 200))
    session = Session(registry, workspace, graph=chain)
    first = session.document.autosave()
    session.document.edit("move", id="a", x=1, y=1)
    second = session.document.autosave()
    os.utime(first, (time.time() - 50, time.time() - 50))

    graphs, autosaves = graph_files(workspace)
    assert [p.relative_to(workspace).as_posix() for p in graphs] == ["projects/newer.json", "older.json",
                                                                    "by_hand.json"]
    assert autosaves == [second, first]
