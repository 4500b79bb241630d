"""The editor's files: New, Templates, Open (with the autosaves to recover), Save, Save as and
Export as Python, each a dialog or a download; every file name checked before it is used."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from nicegui import ui

from nodeflow.errors import GraphInvalid
from nodeflow.graph import Graph, GraphFileError
from nodeflow.paths import PathNotAllowed, confine
from nodeflow.recent import AUTOSAVE_FOLDER, graph_files
from nodeflow.script import export_script
from nodeflow.session import EditError, Session
from nodeflow.templates import list_templates

from .page import Page


class FileDialogs:
    """The header's file buttons (and Ctrl+S)."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.session: Session = page.session

    def new(self) -> None:
        self._confirm_discard(lambda: self._load(Graph(), None))

    def templates(self) -> None:
        found = list_templates()
        with ui.dialog() as dialog, ui.card().classes("w-[40rem] nf-templates"):
            ui.label("Start from a template").classes("text-h6")
            if not found:
                ui.label("No templates installed.").classes("text-grey-7")
            for name, path in found.items():
                try:
                    graph = Graph.load(path)
                except GraphFileError as exc:
                    ui.label(f"{name}: {exc}").classes("text-negative text-sm")
                    continue
                with ui.card().classes("w-full cursor-pointer nf-template").props(f"data-template={name}") as card:
                    ui.label(graph.name if graph.name != "untitled" else name).classes("text-subtitle1")
                    ui.label(f"{len(graph.nodes)} nodes · {name}").classes("text-xs text-grey-7")
                    if graph.description:
                        ui.label(graph.description.split("\n")[0]).classes("text-sm")
                card.on("click", lambda g=graph: (dialog.close(), self._confirm_discard(lambda: self._load(g, None))))
            ui.button("Close", on_click=dialog.close).props("flat")
        dialog.open()

    def open_dialog(self) -> None:
        """The user's graphs first, newest first; the autosaves under one "Recover" entry. Files
        that are no graph (a node's errors.json, a sweep record) are not offered."""
        root = self.session.workspace
        graphs, autosaves = graph_files(root)

        def open_path(path: Path) -> None:
            try:
                graph = Graph.load(path)
            except GraphFileError as exc:
                ui.notify(str(exc), type="negative", multi_line=True)
                return
            dialog.close()
            recovered = path.is_relative_to(root / AUTOSAVE_FOLDER)
            self._confirm_discard(lambda: self._load(graph, None if recovered else path))

        def stamp(path: Path) -> str:
            try:
                return time.strftime("%Y-%m-%d %H:%M", time.localtime(path.stat().st_mtime))
            except OSError:
                return ""

        with ui.dialog() as dialog, ui.card().classes("w-[34rem] nf-open"):
            ui.label("Open a graph from the workspace").classes("text-h6")
            with ui.list().props("dense separator").classes("w-full max-h-80 overflow-auto nf-open-list"):
                for path in graphs:
                    with ui.item(on_click=lambda p=path: open_path(p)).classes("nf-open-graph"):
                        with ui.item_section():
                            ui.item_label(str(path.relative_to(root)))
                        with ui.item_section().props("side"):
                            ui.item_label(stamp(path)).props("caption")
                if not graphs:
                    ui.label("No graphs saved in the workspace yet.").classes("text-grey-7 text-sm q-pa-sm")
                if autosaves:
                    versions = f"{len(autosaves)} autosaved version{'s' if len(autosaves) != 1 else ''}"
                    with ui.expansion(f"Recover ({versions})", icon="restore").props("dense") \
                            .classes("w-full nf-recover"):
                        for path in autosaves:
                            with ui.item(on_click=lambda p=path: open_path(p)).classes("nf-open-autosave"):
                                with ui.item_section():
                                    ui.item_label(path.parent.name)
                                with ui.item_section().props("side"):
                                    ui.item_label(stamp(path)).props("caption")
            name = ui.input("or a file name in the workspace").classes("w-full")
            with ui.row().classes("w-full justify-end"):
                ui.button("Cancel", on_click=dialog.close).props("flat")
                ui.button("Open", on_click=lambda: (p := self._workspace_path(name.value)) and open_path(p))
        dialog.open()

    def save(self, args: Any = None) -> None:
        if self.session.document.path is None:
            self.save_as()
            return
        try:
            path = self.session.document.save()
        except (EditError, OSError) as exc:
            ui.notify(f"Not saved: {exc}", type="negative")
            return
        ui.notify(f"Saved {path.name}", type="positive", timeout=1500)
        self.page.tick_now()

    def save_as(self) -> None:
        def do_save() -> None:
            problem.set_visibility(False)
            path = self._workspace_path(name.value or "", problem)
            if path is None:
                return
            try:
                self.session.document.save(path)
            except (EditError, OSError, ValueError) as exc:
                problem.set_text(f"Not saved: {exc}")
                problem.set_visibility(True)
                return
            dialog.close()
            ui.notify(f"Saved {path.name}", type="positive", timeout=1500)
            self.page.tick_now()

        default = self.session.document.path.name if self.session.document.path else default_file_name(self.session.document.graph.name)
        with ui.dialog() as dialog, ui.card().classes("w-96 nf-save-as"):
            ui.label("Save as (in the workspace)").classes("text-h6")
            name = ui.input("file name", value=default).classes("w-full").on("keydown.enter", do_save)
            problem = ui.label("").classes("text-negative text-sm nf-save-problem")
            problem.set_visibility(False)
            with ui.row().classes("w-full justify-end"):
                ui.button("Cancel", on_click=dialog.close).props("flat")
                ui.button("Save", on_click=do_save)
        dialog.open()

    def export_script(self) -> None:
        """The open graph as one standalone PyTorch script, downloaded by the browser (what
        ``nodeflow export-script`` writes)."""
        graph = self.session.document.graph
        try:
            exported = export_script(graph, self.session.registry, workspace=self.session.workspace)
        except GraphInvalid as exc:
            ui.notify(f"Cannot export: {exc.problems[0]}" + (f" (+{len(exc.problems) - 1} more)"
                                                            if len(exc.problems) > 1 else ""),
                      type="negative", multi_line=True, timeout=8000)
            return
        path = self.session.document.path
        name = (path.stem if path is not None else default_file_name(graph.name).removesuffix(".json")) + ".py"
        ui.download.content(exported.text, name, "text/x-python")
        left = f"; left out (no script form): {', '.join(exported.left_out)}" if exported.left_out else ""
        ui.notify(f"Exported {name}: plain PyTorch, runs with python {name}{left}", type="positive",
                  multi_line=bool(left), timeout=6000)

    def _confirm_discard(self, then) -> None:
        if not self.session.document.dirty:
            then()
            return
        with ui.dialog() as dialog, ui.card():
            ui.label("Discard unsaved changes?")
            with ui.row():
                ui.button("Cancel", on_click=dialog.close).props("flat")
                ui.button("Discard", on_click=lambda: (dialog.close(), then())).props("color=negative")
        dialog.open()

    def _load(self, graph: Graph, path: Path | None) -> None:
        try:
            self.session.document.load(graph, path)
        except EditError as exc:  # e.g. a dataset path outside the folders this editor may use
            ui.notify(str(exc), type="negative", multi_line=True)
            return
        self.page.selected = []
        self.page.tick_now()
        self.page.editor.fit()

    def _workspace_path(self, name: str, problem: Any = None) -> Path | None:
        """``name`` as a .json file inside the workspace, or None after saying why not (in
        ``problem``, a label under the field, when given; else a toast)."""
        def refuse(reason: str) -> None:
            if problem is not None:
                problem.set_text(reason)
                problem.set_visibility(True)
            else:
                ui.notify(reason, type="warning")

        reason = file_name_problem(name)
        if reason:
            refuse(reason)
            return None
        name = name.strip()
        if not name.endswith(".json"):
            name += ".json"
        try:
            return confine(name, [self.session.workspace], self.session.workspace)
        except PathNotAllowed:
            refuse("Choose a file inside the workspace")
        except (ValueError, OSError) as exc:
            refuse(f"Not a usable file name: {exc}")
        return None


def default_file_name(graph_name: str | None) -> str:
    """A file name from a graph's name: lower case, words joined by '_', nothing a shell or
    another system trips over (no colon, no spaces)."""
    words = re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", (graph_name or "").lower())
    return ("_".join(words)[:60].rstrip("_-") or "graph") + ".json"


def file_name_problem(name: str | None) -> str | None:
    """Why ``name`` cannot be a graph file name, or None."""
    name = (name or "").strip()
    if not name:
        return "Type a file name"
    bad = sorted({c for c in name if ord(c) < 32 or c in '<>:"|?*\\' or ord(c) == 127})
    if bad:
        shown = ", ".join("NUL" if c == "\0" else repr(c) if c.isprintable() else f"U+{ord(c):04X}" for c in bad)
        return f"A file name cannot contain {shown}"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "Give a file name, not a folder ('..', '.' and empty parts are not allowed)"
    if len(name.encode()) > 200:
        return "That file name is too long (at most 200 bytes)"
    return None
