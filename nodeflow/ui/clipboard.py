"""Parts of a graph added as one undo step: copy and paste (through the system clipboard), duplicate,
and the groups saved to the palette (save one, insert one)."""

from __future__ import annotations

from typing import Any

from nicegui import ui

from nodeflow import fragments
from nodeflow.graph import Graph, GraphFileError
from nodeflow.node import UnknownNodeType
from nodeflow.session import EditError, Session

from .page import Page
from .palette import Palette


class Clipboard:
    """The canvas's copy, paste, duplicate and group commands; a saved group shows in ``palette``."""

    def __init__(self, page: Page, palette: Palette) -> None:
        self.page = page
        self.hub = page.hub
        self.session: Session = page.session
        self.palette = palette

    def copy(self, args: dict[str, Any]) -> None:
        """The selection as a graph document, to the system clipboard (and the server's copy)."""
        ids = self._ids(args)
        if not ids:
            return
        text = fragments.fragment_of(self.session.document.graph, ids).dumps()
        self.hub.clipboard = text
        self.page.editor.write_clipboard(text)
        ui.notify(f"Copied {len(ids)} node{'s' if len(ids) != 1 else ''}", timeout=1200)

    def paste(self, args: dict[str, Any]) -> None:
        """Paste the clipboard's graph document (``text``) at ``at``; no text (the page may not read
        the system clipboard here) pastes the latest copy made in this editor."""
        text, at = args.get("text"), canvas_point(args.get("at"))
        try:
            fragment = fragments.read_fragment(self.hub.clipboard if text is None else text)
        except fragments.NothingToPaste as exc:
            reason = str(exc)[:300]
            ui.notify(reason[:1].upper() + reason[1:], type="warning")
            return
        self.add_fragment(fragment, at, "Pasted")

    def add_fragment(self, fragment: Graph, at: dict[str, float] | None, verb: str) -> None:
        """Add a part of a graph as one undo step, and select what it added."""
        ops, ids = fragments.paste_ops(fragment, self.session.document.graph, at)
        try:
            self.session.document.edits(ops)
        except (EditError, UnknownNodeType, KeyError) as exc:
            ui.notify(f"Refused: {str(exc).strip(chr(34))}", type="warning", multi_line=True)
            return
        self.page.selected = ids
        self.page.tick_now()
        self.page.editor.select(ids)
        ui.notify(f"{verb} {len(ids)} node{'s' if len(ids) != 1 else ''}", timeout=1200)

    def duplicate(self, args: dict[str, Any]) -> None:
        ids = self._ids(args)
        if ids:
            self.add_fragment(fragments.fragment_of(self.session.document.graph, ids), None, "Duplicated")

    def insert_group(self, args: dict[str, Any]) -> None:
        name, at = args.get("group"), canvas_point(args.get("at"))
        if not isinstance(name, str):
            return
        try:
            fragment = fragments.load_group(self.session.workspace, name)
        except (KeyError, GraphFileError) as exc:
            ui.notify(str(exc).strip('"'), type="warning")
            return
        self.add_fragment(fragment, at or {"x": 40, "y": 40}, "Inserted")

    def save_group(self, args: dict[str, Any]) -> None:
        group_id = args.get("group")
        if not isinstance(group_id, str):
            return
        try:
            name = self.session.document.save_group(group_id)
        except (KeyError, OSError) as exc:
            ui.notify(f"Not saved: {str(exc).strip(chr(34))}", type="warning")
            return
        self.palette.render_library()
        ui.notify(f"Saved the group to the palette as “{name.replace('_', ' ')}”", type="positive", timeout=2000)

    def _ids(self, args: dict[str, Any]) -> list[str]:
        ids = args.get("ids")
        return [i for i in ids if isinstance(i, str) and self.session.document.graph.has_node(i)] if isinstance(ids, list) else []


def canvas_point(value: Any) -> dict[str, float] | None:
    """A canvas point sent by the page, or None when it is not one."""
    if isinstance(value, dict) and all(isinstance(value.get(k), (int, float)) and not isinstance(value.get(k), bool)
                                       and abs(value[k]) < 1e9 for k in ("x", "y")):
        return {"x": float(value["x"]), "y": float(value["y"])}
    return None
