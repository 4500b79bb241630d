"""The open graph as a document: its undo history, whether it changed since it was saved, where it
is saved, and its autosaves, noting each time where the editor left off (:mod:`nodeflow.recent`), so
the next start reopens it. Knows nothing of running; :class:`nodeflow.session.Session` holds one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from nodeflow.graph import Graph
from nodeflow.recent import AUTOSAVE_FOLDER, remember

HISTORY_LIMIT = 200
AUTOSAVE_KEEP = 10


class Document:
    """A graph that changes by whole new versions (graphs are not changed in place), each one undoable.

    ``autosave_delay``: seconds after a change when the document is written beside its earlier
    autosaves (None: never)."""

    def __init__(self, graph: Graph | None, path: Path | None, workspace: Path,
                 autosave_delay: float | None = None) -> None:
        self.graph = graph or Graph()
        self.path = Path(path) if path is not None else None
        self.workspace = Path(workspace)
        self.autosave_delay = autosave_delay
        self.version = 0
        self.dirty = False
        self._undo: list[Graph] = []
        self._redo: list[Graph] = []
        self._timer: threading.Timer | None = None
        self.lock = threading.RLock()
        #: called after every change (e.g. to price the new version)
        self.on_change: list[Callable[[], None]] = []

    def change(self, graph: Graph, record: bool = True) -> None:
        """Make ``graph`` the current version (undoable unless ``record`` is False)."""
        with self.lock:
            if record:
                self._undo.append(self.graph)
                del self._undo[:-HISTORY_LIMIT]
                self._redo.clear()
            self.graph = graph
            self._changed()

    def undo(self) -> bool:
        with self.lock:
            if not self._undo:
                return False
            self._redo.append(self.graph)
            self.graph = self._undo.pop()
            self._changed()
            return True

    def redo(self) -> bool:
        with self.lock:
            if not self._redo:
                return False
            self._undo.append(self.graph)
            self.graph = self._redo.pop()
            self._changed()
            return True

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

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
            self._timer = threading.Timer(self.autosave_delay, self.autosave)
            self._timer.daemon = True
            self._timer.start()

    def save(self, path: Path | None = None) -> Path:
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("no file to save to: choose a name with 'save as'")
        self.graph.save(target)
        self.path = target
        self.dirty = False
        remember(self.workspace, target, self.graph.name, None, False)
        return target

    @property
    def autosave_folder(self) -> Path:
        stem = self.path.stem if self.path is not None else safe_name(self.graph.name)
        return self.workspace / AUTOSAVE_FOLDER / stem

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

    def drop_pending(self) -> None:
        """Forget an autosave still waiting for its delay, writing nothing (the project's folder is
        gone: its owner was removed)."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def flush(self) -> None:
        """Write an autosave that is still waiting for its delay now (the editor is stopping: the
        edits of its last seconds are not lost with the process)."""
        timer, self._timer = self._timer, None
        if timer is not None and not timer.finished.is_set():
            timer.cancel()
            self.autosave()

    def autosaves(self) -> list[Path]:
        """Autosaved versions of this document, newest first."""
        return sorted(self.autosave_folder.glob("*.json"), reverse=True)


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:64] or "untitled"
