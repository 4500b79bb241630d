"""The inspector: the selected node's title, description and parameter form (:mod:`nodeflow.ui.forms`),
redrawn only when what it shows changed."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from nicegui import ui

from nodeflow.graph import NodeSpec
from nodeflow.session import EditError, Session

from .forms import ParamForm
from .page import Page
from .run_controls import RunControls


class Inspector:
    """The Parameters tab (``column``); ``runner`` runs to the shown node. What a site adds to a
    node's form (e.g. handing a trained model in on a shared server) is a function in ``extras``,
    called with the node and its catalogue entry above the form each time it is drawn."""

    def __init__(self, page: Page, runner: RunControls) -> None:
        self.page = page
        self.hub = page.hub
        self.session: Session = page.session
        self.runner = runner
        #: what the form shows now (node, type, params, title, wiring): redrawn when it changes
        self.form_sig: Any = None
        self.column = ui.column().classes("w-full gap-1 nf-inspector")
        self.extras: list[Callable[[NodeSpec, dict[str, Any]], None]] = []

    def add_extra(self, draw: Callable[[NodeSpec, dict[str, Any]], None]) -> None:
        """Draw ``draw(node, entry)`` above each node's form from now on (the form is drawn again now)."""
        self.extras.append(draw)
        self.form_sig = None
        self.render()

    def render(self) -> None:
        node_id = self.page.selected[0] if len(self.page.selected) == 1 else None
        spec = self.session.document.graph.node(node_id) if node_id and self.session.document.graph.has_node(node_id) else None
        sig = (node_id, spec and spec.type, spec and json.dumps(spec.params, sort_keys=True), spec and spec.title,
               len(self.session.document.graph.edges) if spec else None,
               tuple((e.source, e.source_port, e.target_port) for e in self.session.document.graph.incoming(node_id))
               if spec else None)
        if sig == self.form_sig:
            return
        self.form_sig = sig
        self.column.clear()
        with self.column:
            if spec is None:
                ui.label("Select a node to edit its parameters." if len(self.page.selected) != 1
                         else "").classes("text-grey-7 text-sm")
                if len(self.page.selected) > 1:
                    ui.label(f"{len(self.page.selected)} nodes selected").classes("text-sm")
                return
            entry = self.hub.catalogue.get(spec.type)
            with ui.row().classes("w-full items-center no-wrap"):
                ui.label(spec.title or (entry or {}).get("title", spec.type)) \
                    .classes("text-subtitle1 text-weight-medium grow nf-inspector-title")
                with ui.button(icon="play_arrow", on_click=lambda: self.runner.run(node_id)) \
                        .props('flat dense round color=indigo aria-label="Run to here"'):
                    ui.tooltip("Run to here")  # a child, not aimed at an id: the inspector is redrawn often
            ui.label(f"{spec.id} · {spec.type}" + (f" · from {entry['source']}" if entry else "")) \
                .classes("text-xs text-grey-7")
            if entry is None:
                ui.label(f"Unknown node type '{spec.type}'").classes("text-negative")
                return
            if entry["description"]:
                ui.label(entry["description"].split("\n\n")[0]).classes("text-xs text-grey-8")
            ui.input("Title", value=spec.title or "", on_change=lambda e: self.rename(node_id, e.value)) \
                .props("dense debounce=500").classes("w-full")
            for draw in self.extras:
                draw(spec, entry)
            ParamForm(self.session, node_id, entry, on_edit=self.after_form_edit,
                            on_sweep=lambda param: self.page.sweeps.open(node_id, param))

    def after_form_edit(self, redraw: bool = False) -> None:
        # the form already shows the new value (unless one edit set several fields): only the
        # canvas and badges need the news
        spec = self.session.document.graph.node(self.page.selected[0])
        self.form_sig = None if redraw else \
            self.form_sig[:2] + (json.dumps(spec.params, sort_keys=True),) + self.form_sig[3:]
        self.page.tick_now()

    def rename(self, node_id: str, title: str) -> None:
        try:
            self.session.document.edit("rename", id=node_id, title=title)
        except EditError as exc:
            ui.notify(str(exc), type="warning")
            return
        spec = self.session.document.graph.node(node_id)
        self.form_sig = self.form_sig[:3] + (spec.title,) + self.form_sig[4:]
        self.page.tick_now()
