"""Where the editor left off, and which files of a workspace are graphs.

The session notes in ``WORKSPACE/autosave/editor.json`` which graph is open, whether it has
unsaved edits and which autosave holds them; ``nodeflow serve`` without a GRAPH reopens that.
A graph file is recognised by its header (``"format": "nodeflow.graph"``), not by its
extension, so the JSON files nodes write into the workspace are not offered as graphs.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from nodeflow.files import atomic_write_text
from nodeflow.graph import Graph, GraphFileError

AUTOSAVE_FOLDER = "autosave"
STATE_FILE = "editor.json"
#: folders of a workspace that hold results, not graphs: not searched for graph files
NOT_GRAPHS = frozenset({"cache", "features", "decoded", "checkpoints", "scratch", "overlays", "sweeps", "groups",
                        AUTOSAVE_FOLDER})
HEADER_BYTES = 4096
_HEADER = re.compile(rb'"format"\s*:\s*"nodeflow\.graph"')
MAX_LISTED = 200


@dataclass
class Reopened:
    """The graph to open, the file it belongs to (None: never saved) and what to tell the user."""

    graph: Graph
    path: Path | None
    dirty: bool
    message: str


def remember(workspace: Path, path: Path | None, graph_name: str, autosave: Path | None, dirty: bool) -> None:
    """Note what the editor has open: ``autosave`` holds the unsaved edits when ``dirty``."""
    state = {"path": str(Path(path).resolve()) if path is not None else None, "name": graph_name,
             "autosave": str(autosave.relative_to(workspace)) if autosave is not None else None,
             "dirty": dirty, "time": time.time()}
    atomic_write_text(workspace / AUTOSAVE_FOLDER / STATE_FILE, json.dumps(state) + "\n")


def reopen(workspace: Path) -> Reopened | None:
    """The graph the editor had open when it stopped, with its unsaved edits; None when there is
    none to reopen (never noted, or its files are gone or unreadable)."""
    try:
        state = json.loads((workspace / AUTOSAVE_FOLDER / STATE_FILE).read_text())
        path = Path(state["path"]) if state.get("path") else None
        autosave = workspace / state["autosave"] if state.get("autosave") else None
        dirty = bool(state.get("dirty"))
        when = float(state.get("time") or 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    name = path.name if path is not None else f"the unsaved graph '{state.get('name') or 'untitled'}'"
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(when))
    try:
        if (dirty or path is None) and autosave is not None and _inside(autosave, workspace / AUTOSAVE_FOLDER) \
                and autosave.is_file():
            edits = "with unsaved edits" if path is not None else "as autosaved"
            return Reopened(Graph.load(autosave), path, dirty, f"Reopened {name} {edits} from {stamp}")
        if path is not None and path.is_file():
            return Reopened(Graph.load(path), path, False, f"Reopened {name}, as it was when the editor stopped")
    except GraphFileError:
        return None
    return None


def is_graph_file(path: Path) -> bool:
    """Whether ``path`` starts like a graph document (its header, not its extension)."""
    try:
        with open(path, "rb") as handle:
            return bool(_HEADER.search(handle.read(HEADER_BYTES)))
    except OSError:
        return False


def graph_files(workspace: Path) -> tuple[list[Path], list[Path]]:
    """The user's graph files in ``workspace`` and its autosaves, each newest first (at most
    MAX_LISTED of each); result folders are not searched."""
    def walk(root: Path, skip: frozenset[str]) -> list[Path]:
        found = []
        for folder, dirs, files in os.walk(root):
            top = Path(folder) == root
            dirs[:] = sorted(d for d in dirs if not (top and d in skip) and not d.startswith("."))
            found.extend(Path(folder) / f for f in files if f.endswith(".json"))
        graphs = [p for p in found if is_graph_file(p)]
        return sorted(graphs, key=_mtime, reverse=True)[:MAX_LISTED]

    if not workspace.is_dir():
        return [], []
    return walk(workspace, NOT_GRAPHS), walk(workspace / AUTOSAVE_FOLDER, frozenset())


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())
