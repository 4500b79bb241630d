"""The open graph as a document: its undo history, whether it changed since it was saved, where it
is saved, and its autosaves, noting each time where the editor left off (:mod:`nodeflow.recent`), so
the next start reopens it. Changed by :func:`nodeflow.edits.apply`, with every path param held to the
allowed folders. Knows nothing of running; :class:`nodeflow.session.Session` holds one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from typing import Any

from nodeflow import edits
from nodeflow.access import guarded, reads, writes
from nodeflow.edits import EditError
from nodeflow.errors import GraphProblem, ParamError
from nodeflow.graph import Graph
from nodeflow.node import Registry
from nodeflow.paths import path_problems, settle_file, settle_graph, started_in
from nodeflow.recent import AUTOSAVE_FOLDER, remember

HISTORY_LIMIT = 200
AUTOSAVE_KEEP = 10


@guarded
class Document:
    """A graph that changes by whole new versions (graphs are not changed in place), each one undoable.

    ``autosave_delay``: seconds after a change when the document is written beside its earlier
    autosaves (None: never). ``registry``: the node types edits are checked against;
    ``allowed_roots``: folders that path params may point into (None: unrestricted, the user's own
    shell); ``shared``: on a shared server (what an error about a path tells the person to do)."""

    def __init__(self, graph: Graph | None, path: Path | None, workspace: Path,
                 autosave_delay: float | None = None, registry: Registry | None = None,
                 allowed_roots: list[Path] | None = None, shared: bool = False) -> None:
        self.registry = registry if registry is not None else Registry()
        self.allowed_roots = allowed_roots
        self.shared = shared
        self.workspace = Path(workspace)
        graph, settled = self._settle_paths(graph, path)
        #: said to each tab that opens until the document is saved or another one is opened
        #: ("Reopened graph.json with unsaved edits from ...", a path rewritten by _settle_paths)
        self.notice: str | None = settled
        self.graph = graph or Graph()
        self.path = Path(path) if path is not None else None
        self.autosave_delay = autosave_delay
        self.version = 0
        self.dirty = False
        self._undo: list[Graph] = []
        self._redo: list[Graph] = []
        self._timer: threading.Timer | None = None
        self.lock = threading.RLock()
        #: called after every change (e.g. to price the new version)
        self.on_change: list[Callable[[], None]] = []

    @writes
    def replace(self, graph: Graph, record: bool = True) -> None:
        """Make ``graph`` the current version (undoable unless ``record`` is False), once every path
        param of it lies in the allowed folders (EditError naming each one that does not)."""
        self.check_paths(graph)
        self.change(graph, record)

    @writes
    def edit(self, op: str, **args: Any) -> Graph:
        """Apply one edit (see :mod:`nodeflow.edits`); all-or-nothing, recorded for undo."""
        return self.edits([{"op": op, **args}])

    @writes
    def edits(self, ops: list[Any]) -> Graph:
        """Apply several edits (their JSON form, or :mod:`nodeflow.edits` records) as one undo step
        (a bulk move, a paste, deleting a selection). Every path param of every node is checked
        again afterwards, whatever the edit touched: a node removed and added back with the same
        id, or given another type, gets no pass."""
        with self.lock:
            graph = edits.apply(self.graph, ops, self.registry)
            self.check_paths(graph)
            self.change(graph)
            return graph

    @writes
    def open(self, path: Path) -> None:
        self.load(Graph.load(path), Path(path))

    @writes
    def load(self, graph: Graph, path: Path | None = None) -> None:
        """Make ``graph`` the open document (undoable), saved at ``path`` (None: not saved yet)."""
        graph, settled = self._settle_paths(graph, path)
        assert graph is not None
        self.replace(graph)
        self.path = path
        self.dirty = False
        self.notice = settled
        remember(self.workspace, path, graph.name, None, False)

    @writes
    def save_group(self, group_id: str) -> str:
        """Save a group of the open graph to the project's palette of groups (KeyError: no such
        group); returns the name it shows under."""
        from nodeflow import fragments

        return fragments.save_group(self.workspace, self.graph, group_id)

    @writes
    def change(self, graph: Graph, record: bool = True) -> None:
        """Make ``graph`` the current version (undoable unless ``record`` is False), unchecked."""
        with self.lock:
            if record:
                self._undo.append(self.graph)
                del self._undo[:-HISTORY_LIMIT]
                self._redo.clear()
            self.graph = graph
            self._changed()

    @writes
    def undo(self) -> bool:
        with self.lock:
            if not self._undo:
                return False
            self._redo.append(self.graph)
            self.graph = self._undo.pop()
            self._changed()
            return True

    @writes
    def redo(self) -> bool:
        with self.lock:
            if not self._redo:
                return False
            self._undo.append(self.graph)
            self.graph = self._redo.pop()
            self._changed()
            return True

    @reads
    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @reads
    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def _changed(self) -> None:
        self.version += 1
        self.dirty = True
        for callback in self.on_change:
            callback()
        if self.autosave_delay is not None:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self.autosave_delay, self._autosave_when_due)
            self._timer.daemon = True
            self._timer.start()

    @writes
    def save(self, path: Path | None = None) -> Path:
        target = Path(path) if path is not None else self.path
        if target is None:
            raise EditError("no file to save to: choose a name with 'save as'")
        try:
            self.graph.save(target)
        except ValueError as exc:
            raise EditError(str(exc)) from None
        self.path = target
        self.dirty = False
        self.notice = None
        remember(self.workspace, target, self.graph.name, None, False)
        return target

    @reads
    @property
    def autosave_folder(self) -> Path:
        stem = self.path.stem if self.path is not None else safe_name(self.graph.name)
        return self.workspace / AUTOSAVE_FOLDER / stem

    @writes
    def autosave(self) -> Path:
        """Write the document beside the earlier autosaves, keeping the newest AUTOSAVE_KEEP."""
        with self.lock:
            folder = self.autosave_folder
            path = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{self.version:06d}.json"
            self.graph.save(path)
            remember(self.workspace, self.path, self.graph.name, path, self.dirty)
        for old in sorted(folder.glob("*.json"))[:-AUTOSAVE_KEEP]:
            old.unlink(missing_ok=True)
        return path

    def _autosave_when_due(self) -> None:
        """The timer's autosave: a write that fails (the folder gone, the disk full) is said on the page the
        next time it opens, not raised in a thread that nobody waits on; the next edit tries again. The folder
        is named inside the workspace: on a shared server its full path is the server's, not the person's."""
        try:
            self.autosave()
        except OSError as exc:
            folder = self.autosave_folder.relative_to(self.workspace).as_posix()
            self.notice = f"Could not autosave to {folder} in the workspace: {exc.strerror or type(exc).__name__}"

    @writes
    def drop_pending(self) -> None:
        """Forget an autosave still waiting for its delay, writing nothing (the project's folder is
        gone: its owner was removed)."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    @writes
    def flush(self) -> None:
        """Write an autosave that is still waiting for its delay now (the editor is stopping: the
        edits of its last seconds are not lost with the process)."""
        timer, self._timer = self._timer, None
        if timer is not None and not timer.finished.is_set():
            timer.cancel()
            self.autosave()

    @reads
    def autosaves(self) -> list[Path]:
        """Autosaved versions of this document, newest first."""
        return sorted(self.autosave_folder.glob("*.json"), reverse=True)

    # -- path params held to the allowed folders ----------------------------------------------------
    @reads
    def check_paths(self, graph: Graph) -> None:
        """Every path param of every node of ``graph`` (as its current type declares them) must lie
        in the allowed folders; raises EditError naming each one that does not."""
        problems = self.path_problems(graph)
        if problems:
            raise EditError("; ".join(str(p) for p in problems))

    @reads
    def path_problems(self, graph: Graph | None = None) -> list[GraphProblem]:
        """Path params of ``graph`` (by default the open one) that lead outside the allowed folders as
        the disk stands now; relative ones are taken from the workspace, as every run takes them,
        whatever folder the editor was started from."""
        graph = self.graph if graph is None else graph
        if self.allowed_roots is None:
            return []
        # what the person can do about it: a shared server's project uses its own folder only
        hint = ("; a project on a shared server reads and writes its own folder only: upload the data into it"
                if self.shared else
                "; to use another folder, start the editor with --allow-root FOLDER (repeatable)")
        return [ParamError(spec.id, why + hint, param=name) for spec in graph.nodes if spec.type in self.registry
                for name, why in path_problems(self.registry.get(spec.type).Params, spec.params,
                                               self.allowed_roots, self.workspace)]

    def _settle_paths(self, graph: Graph | None, path: Path | None) -> tuple[Graph | None, str | None]:
        """A graph opened here whose relative paths were written when they started at the folder the
        editor was started in: those that name nothing in the workspace but name a folder from there
        are rewritten (:func:`nodeflow.paths.settle_graph`, within the allowed folders when there are
        some), its file ``path`` too, once; and the notice that tells the user (None: nothing was)."""
        if graph is None:
            return graph, None
        old_base = started_in()
        graph, rewritten = settle_graph(graph, self.registry, self.workspace, old_base, self.allowed_roots)
        if not rewritten:
            return graph, None
        saved = settle_file(path, self.registry, self.workspace, old_base, self.allowed_roots) if path else ""
        return graph, " ".join([*(r.note + "." for r in rewritten), saved]).strip()


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:64] or "untitled"
