"""The editor's header: the file's name, the file buttons, undo and redo, and the run bar (the run's
state, Run all, Run selected, Stop, Validate, Estimate, Runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nicegui import ui

from nodeflow.session import Session

from .file_dialogs import FileDialogs
from .page import Page
from .run_controls import RunControls


class Toolbar:
    """The header (``header``); ``controls`` and the undo, redo and run buttons are what a read-only
    page hides."""

    def __init__(self, page: Page, files: FileDialogs, runner: RunControls) -> None:
        self.session: Session = page.session
        with ui.header(elevated=False).classes("items-center gap-1 px-3 py-1 bg-indigo-9 nf-header") as self.header:
            ui.label("nodeflow").classes("text-h6 text-weight-bold q-mr-md")
            self.file_label = ui.label("").classes("text-sm opacity-80 q-mr-md nf-file")
            #: what changes the document or starts work (hidden on a read-only page)
            self.controls: list[ui.element] = []
            for label, icon, action in (("New", "note_add", files.new), ("Templates", "dashboard", files.templates),
                                        ("Open", "folder_open", files.open_dialog), ("Save", "save", files.save),
                                        ("Save as", "save_as", files.save_as),
                                        ("Export as Python", "code", files.export_script)):
                button = ui.button(icon=icon, on_click=action).props(f'flat dense color=white aria-label="{label}"') \
                    .tooltip(label + (" (Ctrl+S)" if label == "Save" else ""))
                if action != files.export_script:  # a viewer may still take the graph away as a script
                    self.controls.append(button)
            ui.separator().props("vertical dark").classes("q-mx-sm")
            self.undo_btn = ui.button(icon="undo", on_click=page.undo).props('flat dense color=white aria-label=Undo') \
                .tooltip("Undo (Ctrl+Z)")
            self.redo_btn = ui.button(icon="redo", on_click=page.redo).props('flat dense color=white aria-label=Redo') \
                .tooltip("Redo (Ctrl+Shift+Z)")
            ui.button(icon="fit_screen", on_click=lambda: page.editor.fit()) \
                .props('flat dense color=white aria-label="Fit view"').tooltip("Fit view")
            ui.space()
            self.run_state = ui.label("").classes("text-sm q-mr-sm nf-run-state")
            self.run_all_btn = ui.button("Run all", icon="play_arrow", on_click=lambda: runner.run(None)) \
                .props("unelevated dense color=green-7 no-caps").classes("px-2")
            self.run_sel_btn = ui.button("Run selected", icon="play_circle", on_click=runner.run_selected) \
                .props("unelevated dense color=indigo-5 no-caps").classes("px-2") \
                .tooltip("Run the selected node and only the stale nodes it needs")
            self.stop_btn = ui.button("Stop", icon="stop", on_click=runner.stop) \
                .props("unelevated dense color=red-7 no-caps").classes("px-2")
            ui.button("Validate", icon="rule", on_click=runner.validate).props("flat dense color=white no-caps") \
                .classes("nf-compact").tooltip("Check the graph: every problem, naming the node and the param")
            self.controls.append(
                ui.button("Estimate", icon="timer", on_click=runner.estimate_costs)
                .props("flat dense color=white no-caps").classes("nf-compact")
                .tooltip("What running (the selected node, else everything) would cost: shown on each stale card"))
            ui.button("Runs", icon="history", on_click=lambda: page.runs_panel.open()) \
                .props("flat dense color=white no-caps").classes("nf-compact") \
                .tooltip("Run history: compare, restore, cancel queued runs")

    def show(self, snap: dict[str, Any], status: dict[str, dict[str, Any]], active: list[str],
             selected: list[str]) -> None:
        """The buttons that may be used now, the run's state (``active``: the nodes running) and the
        file's name, for the hub's snapshot ``snap``."""
        running = snap["running"]
        self.run_all_btn.set_enabled(True)  # while a run is going, another one is queued behind it
        self.run_sel_btn.set_enabled(bool(selected))
        self.stop_btn.set_enabled(running)
        self.undo_btn.set_enabled(self.session.document.can_undo)
        self.redo_btn.set_enabled(self.session.document.can_redo)
        set_text(self.run_state, f"running {active[0]} {status[active[0]]['progress']:.0%}" if active
                 else "running…" if running else (f"error: {snap['error']}" if snap["error"] else ""))
        name = snap["path"] and Path(snap["path"]).name or self.session.document.graph.name or "untitled"
        set_text(self.file_label, f"{name}{' •' if snap['dirty'] else ''}")


def set_text(label: ui.label, text: str) -> None:
    """A header label's text, whole in its tooltip (the header may cut it short)."""
    if label.text != text:
        label.set_text(text)
        label._props["title"] = text
        label.update()
