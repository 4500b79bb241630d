"""The editor page and ``serve``: palette, canvas, inspector, run bar, outputs, log and files.

All tabs share one :class:`~nodeflow.ui.state.Hub` (one Session). Each tab polls the hub on a
timer and sends its canvas only what changed: status deltas every tick, a whole graph only when
the document's version moved without this tab having made the change.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request
from nicegui import app, ui

from nodeflow import fragments
from nodeflow.access import Refused, allows
from nodeflow.errors import GraphInvalid
from nodeflow.graph import Graph, GraphFileError
from nodeflow.node import UnknownNodeType
from nodeflow.paths import PathNotAllowed, confine
from nodeflow.planner import estimate_note
from nodeflow.recent import AUTOSAVE_FOLDER, graph_files
from nodeflow.script import export_script
from nodeflow.session import EditError, Session
from nodeflow.templates import list_templates
from nodeflow.words import format_seconds

from .api import access_token, cell_gallery_of, install_api, token_ok
from .flow_editor import BundleMissing, FlowEditor, check_bundle
from .runs_panel import LineageView, RunsPanel
from .state import Hub, status_delta
from .sweep_panel import SweepPanel

POLL_SECONDS = 0.3
AUTOSAVE_SECONDS = 10.0
LOCAL_KINDS = {"move", "connect", "delete"}  # edits the canvas has already drawn itself
DRAG_TYPE = "application/x-nodeflow-type"
GROUP_DRAG_TYPE = "application/x-nodeflow-group"
#: a run whose estimated cost (the sum over the nodes it computes) exceeds this many seconds asks
#: for confirmation first, listing its heaviest nodes
RUN_CONFIRM_SECONDS = 60.0


@dataclass(frozen=True)
class Message:
    """A message the canvas sends over the socket: the page's method that handles it (with the
    message's arguments) and the Session method it ends in, or None when it changes nothing and starts
    nothing (selecting, copying). Whether a read-only page may send it is what that Session method
    declares (:mod:`nodeflow.access`), so no rule about it is kept here."""

    handler: str
    calls: str | None


#: every message the canvas sends (``FlowEditor``'s events)
CANVAS_EVENTS = {"edit": Message("on_edit", "edits"), "select": Message("on_select", None),
                 "run": Message("run_to", "submit"), "failure": Message("show_failure", None),
                 "command": Message("on_command", None)}
#: the names a ``command`` message carries (the context menu, keys, the group bar)
COMMANDS = {"copy": Message("copy", None), "paste": Message("paste", "edits"),
            "duplicate": Message("duplicate", "edits"), "insert_group": Message("insert_group", "edits"),
            "save_group": Message("save_group", "save_group"), "undo": Message("undo", "undo"),
            "redo": Message("redo", "redo"), "save": Message("save", "save")}


class EditorPage:
    """One browser tab. ``read_only`` (the reason, e.g. "alice's project") shows the graph, its
    states and runs without the controls that change them; the hub's session refuses those anyway."""

    def __init__(self, hub: Hub, read_only: str | None = None) -> None:
        from .forms import ParamForm
        from .outputs import OutputPanel

        self._ParamForm = ParamForm
        self.hub = hub
        self.session: Session = hub.session
        #: why this page may only read (None: it may change the project)
        self.read_only = read_only
        self.selected: list[str] = []
        self.synced_version = self.session.version
        self.form_sig: Any = None
        self.log_seen = 0.0
        self.last_key: tuple | None = None

        ui.add_css(PAGE_CSS)
        ui.page_title("nodeflow")
        self._header()
        self.runs_panel = RunsPanel(self.session, on_restore=self.tick_now)
        self.sweeps = SweepPanel(self.session, hub.catalogue, on_change=self.tick_now)
        self._palette()
        with ui.right_drawer(value=True, fixed=True).props("width=370 bordered").classes("p-0 nf-right-drawer"):
            with ui.tabs().props("dense inline-label align=justify narrow-indicator no-caps").classes("w-full text-indigo-9") as self.tabs:
                ui.tab("params", "Parameters", icon="tune")
                ui.tab("output", "Output", icon="insights")
            with ui.tab_panels(self.tabs, value="params").classes("w-full"):
                with ui.tab_panel("params").classes("p-3"):
                    self.inspector = ui.column().classes("w-full gap-1 nf-inspector")
                with ui.tab_panel("output").classes("p-3"):
                    self.output = OutputPanel(on_param=self.focus_param, gallery=cell_gallery_of(self.session))
                    self.lineage = LineageView(self.session)
        with ui.footer(fixed=True).classes("bg-white text-black p-0 nf-footer").style("border-top: 1px solid #ddd"):
            self.log = ui.log(max_lines=500).classes("w-full h-28 text-xs nf-log")
        snap = hub.snapshot()
        self.sent_status = hub.status_of(snap)
        self.editor = FlowEditor(hub.canvas_catalogue(), hub.canvas_graph(), self.sent_status) \
            .classes("w-full nf-editor").style("height: calc(100vh - 152px)")
        for name, message in CANVAS_EVENTS.items():
            self.editor.on(name, lambda e, m=message: self.receive(m, e.args))
        self.render_inspector()
        if read_only:
            self._without_controls(read_only)
        self.tick()
        ui.timer(POLL_SECONDS, self.tick)
        # e.g. the graph reopened with the unsaved edits of the last start: the canvas says it once per tab
        self.editor.props["notice"] = self.session.notice or ""
        # the lines pushed before the page was drawn: open the log at the newest one
        ui.timer(0.3, lambda: ui.run_javascript(SCROLL_LOG_JS % self.log.id), once=True)

    # -- layout ----------------------------------------------------------------------------------
    def _header(self) -> None:
        with ui.header(elevated=False).classes("items-center gap-1 px-3 py-1 bg-indigo-9 nf-header") as self.header:
            ui.label("nodeflow").classes("text-h6 text-weight-bold q-mr-md")
            self.file_label = ui.label("").classes("text-sm opacity-80 q-mr-md nf-file")
            #: what changes the document or starts work (hidden on a read-only page)
            self.controls: list[ui.element] = []
            for label, icon, action in (("New", "note_add", self.new), ("Templates", "dashboard", self.templates),
                                        ("Open", "folder_open", self.open_dialog), ("Save", "save", self.save),
                                        ("Save as", "save_as", self.save_as),
                                        ("Export as Python", "code", self.export_script)):
                button = ui.button(icon=icon, on_click=action).props(f'flat dense color=white aria-label="{label}"') \
                    .tooltip(label + (" (Ctrl+S)" if label == "Save" else ""))
                if action != self.export_script:  # a viewer may still take the graph away as a script
                    self.controls.append(button)
            ui.separator().props("vertical dark").classes("q-mx-sm")
            self.undo_btn = ui.button(icon="undo", on_click=self.undo).props('flat dense color=white aria-label=Undo') \
                .tooltip("Undo (Ctrl+Z)")
            self.redo_btn = ui.button(icon="redo", on_click=self.redo).props('flat dense color=white aria-label=Redo') \
                .tooltip("Redo (Ctrl+Shift+Z)")
            ui.button(icon="fit_screen", on_click=lambda: self.editor.fit()) \
                .props('flat dense color=white aria-label="Fit view"').tooltip("Fit view")
            ui.space()
            self.run_state = ui.label("").classes("text-sm q-mr-sm nf-run-state")
            self.run_all_btn = ui.button("Run all", icon="play_arrow", on_click=lambda: self.run(None)) \
                .props("unelevated dense color=green-7 no-caps").classes("px-2")
            self.run_sel_btn = ui.button("Run selected", icon="play_circle", on_click=self.run_selected) \
                .props("unelevated dense color=indigo-5 no-caps").classes("px-2") \
                .tooltip("Run the selected node and only the stale nodes it needs")
            self.stop_btn = ui.button("Stop", icon="stop", on_click=self.stop) \
                .props("unelevated dense color=red-7 no-caps").classes("px-2")
            ui.button("Validate", icon="rule", on_click=self.validate).props("flat dense color=white no-caps") \
                .classes("nf-compact").tooltip("Check the graph: every problem, naming the node and the param")
            self.controls.append(
                ui.button("Estimate", icon="timer", on_click=self.estimate_costs)
                .props("flat dense color=white no-caps").classes("nf-compact")
                .tooltip("What running (the selected node, else everything) would cost: shown on each stale card"))
            ui.button("Runs", icon="history", on_click=lambda: self.runs_panel.open()) \
                .props("flat dense color=white no-caps").classes("nf-compact") \
                .tooltip("Run history: compare, restore, cancel queued runs")

    def _without_controls(self, reason: str) -> None:
        for element in [*self.controls, self.undo_btn, self.redo_btn, self.run_all_btn, self.run_sel_btn,
                        self.stop_btn, self.runs_panel.restore_btn, self.runs_panel.cancel_btn]:
            element.set_visibility(False)
        self.palette.set_value(False)
        with self.header:
            ui.label(f"Read-only: {reason}").classes("text-sm q-ml-sm q-px-sm rounded bg-amber-2 text-black "
                                                     "nf-read-only").move(target_index=2)

    def _palette(self) -> None:
        with ui.left_drawer(value=True, fixed=True).props("width=220 bordered").classes("p-2 nf-palette") \
                as self.palette:
            ui.label("Nodes").classes("text-subtitle1 text-weight-medium")
            search = ui.input(placeholder="search nodes…").props("dense clearable outlined").classes("w-full")
            ui.label("Drag a node onto the canvas").classes("text-xs text-grey-7")
            categories: dict[str, list[dict[str, Any]]] = {}
            for entry in self.hub.catalogue_list:
                categories.setdefault(entry["category"], []).append(entry)
            self.palette_items: list[tuple[ui.element, str]] = []
            self.palette_groups: list[tuple[ui.expansion, list[ui.element]]] = []
            for category in sorted(categories):
                with ui.expansion(category, value=True).props("dense dense-toggle header-class='text-weight-medium q-px-xs'") \
                        .classes("w-full nf-category") as group:
                    items = []
                    for entry in categories[category]:
                        item = ui.element("div").classes("nf-palette-item").props(
                            f'draggable=true data-type="{entry["type"]}"')
                        with item:
                            ui.label(entry["title"]).classes("text-sm")
                            ui.label(f'{entry["type"]} · {entry["source"]}').classes("text-xs text-grey-6")
                        item.tooltip(entry["description"].split("\n")[0] or entry["type"])
                        item.on("dragstart", js_handler=(
                            f"(e) => {{ e.dataTransfer.setData({json.dumps(DRAG_TYPE)}, {json.dumps(entry['type'])});"
                            " e.dataTransfer.effectAllowed = 'copy'; }"))
                        item.on("dblclick", lambda t=entry["type"]: self.add_node(t))
                        text = f"{entry['title']} {entry['type']} {entry['category']} {entry['description']}".lower()
                        self.palette_items.append((item, text))
                        items.append(item)
                    self.palette_groups.append((group, items))
            with ui.expansion("My groups", value=True) \
                    .props("dense dense-toggle header-class='text-weight-medium q-px-xs'").classes("w-full nf-library"):
                self.library = ui.column().classes("w-full gap-0")
            self.render_library()
            search.on_value_change(lambda e: self.filter_palette(e.value or ""))

    def render_library(self) -> None:
        """The groups saved to the palette (right-click a group: Save to palette); drag one in."""
        self.library.clear()
        with self.library:
            saved = fragments.library(self.session.workspace)
            if not saved:
                ui.label("Right-click a group and choose “Save to palette” to keep it here.") \
                    .classes("text-xs text-grey-7")
            for name in saved:
                item = ui.element("div").classes("nf-palette-item nf-library-item")
                item._props.update({"draggable": "true", "data-group": name})  # any file name, taken as it is
                with item:
                    ui.label(name.replace("_", " ")).classes("text-sm")
                    ui.label("saved group").classes("text-xs text-grey-6")
                item.on("dragstart", js_handler=(
                    f"(e) => {{ e.dataTransfer.setData({json.dumps(GROUP_DRAG_TYPE)}, {json.dumps(name)});"
                    " e.dataTransfer.effectAllowed = 'copy'; }"))
                item.on("dblclick", lambda n=name: self.receive(COMMANDS["insert_group"],
                                                                {"group": n, "at": {"x": 40, "y": 40}}))

    def filter_palette(self, query: str) -> None:
        words = query.lower().split()
        for item, text in self.palette_items:
            item.set_visibility(all(w in text for w in words))
        for group, items in self.palette_groups:
            group.set_visibility(any(i.visible for i in items))

    # -- polling ---------------------------------------------------------------------------------
    def tick(self) -> None:
        key = self.hub.key()
        if key == self.last_key:
            return
        self.last_key = key
        snap = self.hub.snapshot()
        if self.session.version != self.synced_version:
            self.synced_version = self.session.version
            self.editor.set_graph(self.hub.canvas_graph())
            self.selected = [i for i in self.selected if self.session.graph.has_node(i)]
        status = self.with_estimates(self.hub.status_of(snap), snap["keys"])
        delta = status_delta(self.sent_status, status)
        if delta:
            self.editor.set_status(delta)
            self.sent_status = status
        running = snap["running"]
        self.run_all_btn.set_enabled(True)  # while a run is going, another one is queued behind it
        self.run_sel_btn.set_enabled(bool(self.selected))
        self.stop_btn.set_enabled(running)
        self.undo_btn.set_enabled(self.session.can_undo)
        self.redo_btn.set_enabled(self.session.can_redo)
        active = [i for i, s in status.items() if s["state"] == "running"]
        _set_text(self.run_state, f"running {active[0]} {status[active[0]]['progress']:.0%}" if active
                  else "running…" if running else (f"error: {snap['error']}" if snap["error"] else ""))
        name = snap["path"] and Path(snap["path"]).name or self.session.graph.name or "untitled"
        _set_text(self.file_label, f"{name}{' •' if snap['dirty'] else ''}")
        self.render_inspector()
        focus = self.selected[0] if len(self.selected) == 1 else (active[0] if active else None)
        self.output.show(focus, snap["nodes"].get(focus) if focus else None)
        self.lineage.show(focus, snap["nodes"].get(focus) if focus else None)
        for entry in snap["log"]:
            if entry["time"] > self.log_seen:
                stamp = time.strftime("%H:%M:%S", time.localtime(entry["time"]))
                self.log.push(f"{stamp} {entry['node'] or ''} {entry['kind']}: {entry['message']}")
                self.log_seen = entry["time"]

    # -- canvas events ---------------------------------------------------------------------------
    def receive(self, message: Message, args: Any) -> None:
        """Every message from the canvas: refused here when the session this page holds does not let
        it call the method the message ends in (a read-only view), else handled; a refusal from
        deeper down is shown the same way."""
        args = args if isinstance(args, dict) else {}
        try:
            if message.calls is not None and not allows(self.session, message.calls):
                raise Refused(f"read-only: {self.read_only}; nothing was changed")
            getattr(self, message.handler)(args)
        except Refused as exc:
            ui.notify(f"Refused: {exc}", type="warning")

    def on_edit(self, msg: dict[str, Any]) -> None:
        kind = msg.get("kind")
        started = time.perf_counter()
        before = self.session.version
        try:
            self.session.edits(msg.get("ops") or [])
        except (EditError, UnknownNodeType, KeyError, TypeError) as exc:
            self.editor.ack({"rid": msg.get("rid"), "ok": False, "error": str(exc), "version": self.session.version})
            ui.notify(f"Refused: {str(exc).strip(chr(34))}", type="warning")
            self.synced_version = -1  # put the canvas back to the server's document
            self.tick_now()
            return
        if kind in LOCAL_KINDS and msg.get("base") == before == self.synced_version:
            self.synced_version = self.session.version  # the canvas already shows this change
        self.editor.ack({"rid": msg.get("rid"), "ok": True, "version": self.session.version,
                         "server_ms": round((time.perf_counter() - started) * 1000, 2)})
        if kind == "add":
            self.selected = [self.session.graph.nodes[-1].id]
            self.tick_now()  # draw the new node now
        # other edits are on the canvas already; badges follow on the next tick, after the ack left

    def tick_now(self) -> None:
        self.last_key = None
        self.tick()

    def on_select(self, args: dict[str, Any]) -> None:
        ids = args.get("ids")
        self.selected = [i for i in ids if isinstance(i, str) and self.session.graph.has_node(i)] \
            if isinstance(ids, list) else []
        self.run_sel_btn.set_enabled(bool(self.selected))
        self.tick_now()

    def run_to(self, args: dict[str, Any]) -> None:
        target = args.get("target")
        self.run(target if isinstance(target, str) else None)

    def show_failure(self, args: dict[str, Any]) -> None:
        """A click on a card's error: select the node and show its whole message."""
        node_id = args.get("id")
        if not isinstance(node_id, str) or not self.session.graph.has_node(node_id):
            return
        self.selected = [node_id]
        self.editor.select([node_id])
        self.tabs.set_value("output")
        self.tick_now()

    def focus_param(self, node_id: str, param: str) -> None:
        """Select ``node_id`` on the canvas and in the inspector, and put the cursor in ``param``'s field."""
        if not self.session.graph.has_node(node_id):
            return
        self.selected = [node_id]
        self.editor.select([node_id])
        self.tabs.set_value("params")
        self.tick_now()
        ui.run_javascript(FOCUS_FIELD_JS % json.dumps(param))

    def on_command(self, args: dict[str, Any]) -> None:
        """A named command (:data:`COMMANDS`), checked as any other message; unknown names do nothing."""
        found = COMMANDS.get(args.get("name")) if isinstance(args.get("name"), str) else None
        if found is not None:
            self.receive(found, args)

    def _ids(self, args: dict[str, Any]) -> list[str]:
        ids = args.get("ids")
        return [i for i in ids if isinstance(i, str) and self.session.graph.has_node(i)] if isinstance(ids, list) else []

    # -- copy, paste, groups ---------------------------------------------------------------------
    def copy(self, args: dict[str, Any]) -> None:
        """The selection as a graph document, to the system clipboard (and the server's copy)."""
        ids = self._ids(args)
        if not ids:
            return
        text = fragments.fragment_of(self.session.graph, ids).dumps()
        self.hub.clipboard = text
        self.editor.write_clipboard(text)
        ui.notify(f"Copied {len(ids)} node{'s' if len(ids) != 1 else ''}", timeout=1200)

    def paste(self, args: dict[str, Any]) -> None:
        """Paste the clipboard's graph document (``text``) at ``at``; no text (the page may not read
        the system clipboard here) pastes the latest copy made in this editor."""
        text, at = args.get("text"), _point(args.get("at"))
        try:
            fragment = fragments.read_fragment(self.hub.clipboard if text is None else text)
        except fragments.NothingToPaste as exc:
            reason = str(exc)[:300]
            ui.notify(reason[:1].upper() + reason[1:], type="warning")
            return
        self.add_fragment(fragment, at, "Pasted")

    def add_fragment(self, fragment: Graph, at: dict[str, float] | None, verb: str) -> None:
        """Add a part of a graph as one undo step, and select what it added."""
        ops, ids = fragments.paste_ops(fragment, self.session.graph, at)
        try:
            self.session.edits(ops)
        except (EditError, UnknownNodeType, KeyError) as exc:
            ui.notify(f"Refused: {str(exc).strip(chr(34))}", type="warning", multi_line=True)
            return
        self.selected = ids
        self.tick_now()
        self.editor.select(ids)
        ui.notify(f"{verb} {len(ids)} node{'s' if len(ids) != 1 else ''}", timeout=1200)

    def duplicate(self, args: dict[str, Any]) -> None:
        ids = self._ids(args)
        if ids:
            self.add_fragment(fragments.fragment_of(self.session.graph, ids), None, "Duplicated")

    def insert_group(self, args: dict[str, Any]) -> None:
        name, at = args.get("group"), _point(args.get("at"))
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
            name = self.session.save_group(group_id)
        except (KeyError, OSError) as exc:
            ui.notify(f"Not saved: {str(exc).strip(chr(34))}", type="warning")
            return
        self.render_library()
        ui.notify(f"Saved the group to the palette as “{name.replace('_', ' ')}”", type="positive", timeout=2000)

    def add_node(self, node_type: str) -> None:
        count = len(self.session.graph.nodes)
        self.session.edit("add_node", type=node_type, position={"x": 40 + 30 * (count % 10), "y": 40 + 30 * (count % 7)})
        self.selected = [self.session.graph.nodes[-1].id]
        self.tick_now()

    # -- inspector -------------------------------------------------------------------------------
    def render_inspector(self) -> None:
        node_id = self.selected[0] if len(self.selected) == 1 else None
        spec = self.session.graph.node(node_id) if node_id and self.session.graph.has_node(node_id) else None
        sig = (node_id, spec and spec.type, spec and json.dumps(spec.params, sort_keys=True), spec and spec.title,
               len(self.session.graph.edges) if spec else None,
               tuple((e.source, e.source_port, e.target_port) for e in self.session.graph.incoming(node_id))
               if spec else None)
        if sig == self.form_sig:
            return
        self.form_sig = sig
        self.inspector.clear()
        with self.inspector:
            if spec is None:
                ui.label("Select a node to edit its parameters." if len(self.selected) != 1
                         else "").classes("text-grey-7 text-sm")
                if len(self.selected) > 1:
                    ui.label(f"{len(self.selected)} nodes selected").classes("text-sm")
                return
            entry = self.hub.catalogue.get(spec.type)
            with ui.row().classes("w-full items-center no-wrap"):
                ui.label(spec.title or (entry or {}).get("title", spec.type)) \
                    .classes("text-subtitle1 text-weight-medium grow nf-inspector-title")
                with ui.button(icon="play_arrow", on_click=lambda: self.run(node_id)) \
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
            self._ParamForm(self.session, node_id, entry, on_edit=self.after_form_edit,
                            on_sweep=lambda param: self.sweeps.open(node_id, param))

    def after_form_edit(self, redraw: bool = False) -> None:
        # the form already shows the new value (unless one edit set several fields): only the
        # canvas and badges need the news
        spec = self.session.graph.node(self.selected[0])
        self.form_sig = None if redraw else \
            self.form_sig[:2] + (json.dumps(spec.params, sort_keys=True),) + self.form_sig[3:]
        self.tick_now()

    def rename(self, node_id: str, title: str) -> None:
        try:
            self.session.edit("rename", id=node_id, title=title)
        except EditError as exc:
            ui.notify(str(exc), type="warning")
            return
        spec = self.session.graph.node(node_id)
        self.form_sig = self.form_sig[:3] + (spec.title,) + self.form_sig[4:]
        self.tick_now()

    # -- cost preview ----------------------------------------------------------------------------
    def with_estimates(self, status: dict[str, dict[str, Any]], keys: dict[str, str]) -> dict[str, dict[str, Any]]:
        """Each stale node's price (for the snapshot's cache ``keys``) as a line on its card: the same
        per-node numbers the Run confirmation adds up."""
        found = self.session.estimates(keys)
        for node_id, shown in status.items():
            entry = found.get(node_id)
            if entry is not None and shown["state"] in ("stale", "idle") and entry["status"] not in ("cached", "ahead"):
                line = estimate_line(entry)
                if line:
                    shown.update(estimate=line, estimate_note=estimate_note(entry))
        return status

    async def estimate_costs(self) -> None:
        """The Estimate button: measure (a few real batches) on a background thread, then say the total."""
        from nicegui import run as background

        target = self.selected[0] if len(self.selected) == 1 else None
        note = ui.notification("Estimating the cost…", spinner=True, timeout=None)
        try:
            found = await background.io_bound(self.session.estimate, target)
        except GraphInvalid as exc:
            lines = [str(p) for p in exc.problems]
            ui.notify("Cannot estimate: " + "; ".join(lines[:3]) + (f" (+{len(lines) - 3} more)" if len(lines) > 3
                                                                   else ""), type="negative", multi_line=True)
            return
        except KeyError as exc:
            ui.notify(str(exc).strip('"'), type="warning")
            return
        finally:
            note.dismiss()
            self.tick_now()
        ui.notify(f"Estimated: ≈ {format_seconds(found['total_seconds'])}" + (f" up to {target}" if target else ""),
                  type="info", timeout=3000)

    def run(self, target: str | None) -> None:
        """Run at once: nothing is measured first. When the run's price is already known (it ran before
        with these params, or was profiled in the background) and is over RUN_CONFIRM_SECONDS, a
        dialog lists the heavy nodes first, with the numbers their cards show."""
        try:
            found = self.session.price(target)
        except (GraphInvalid, KeyError):
            found = None  # start_run says what is wrong
        if found is not None and found["total_seconds"] > RUN_CONFIRM_SECONDS:
            self.confirm_run(target, found)
            return
        self.start_run(target)

    def confirm_run(self, target: str | None, found: dict[str, Any]) -> None:
        heavy = sorted(((n, e) for n, e in found["nodes"].items() if e["status"] not in ("cached", "ahead")
                        and isinstance(e.get("seconds"), (int, float)) and e["seconds"] >= 1),
                       key=lambda item: -item[1]["seconds"])
        with ui.dialog() as dialog, ui.card().classes("w-[36rem] nf-run-confirm"):
            ui.label(f"This run takes about {format_seconds(found['total_seconds'])}").classes("text-h6")
            unknown = [n for n, e in found["nodes"].items() if e["status"] == "unknown"]
            ui.label(f"More than {format_seconds(RUN_CONFIRM_SECONDS)}, from earlier runs and measurements on the "
                     "real data" + (f" ({', '.join(unknown)} not measured yet)" if unknown else "")
                     + ". The heavy nodes:").classes("text-sm text-grey-8")
            for node_id, entry in heavy[:10]:
                with ui.column().classes("gap-0 nf-heavy-node"):
                    ui.label(f"{node_id}: {estimate_line(entry)}").classes("text-body2 text-weight-medium")
                    if estimate_note(entry):
                        ui.label(estimate_note(entry)).classes("text-xs text-grey-7")
            with ui.row().classes("w-full justify-end"):
                ui.button("Cancel", on_click=dialog.close).props("flat")
                ui.button("Run", on_click=lambda: (dialog.close(), self.start_run(target))) \
                    .props("unelevated color=green-7")
        dialog.open()

    # -- running ---------------------------------------------------------------------------------
    def start_run(self, target: str | None) -> None:
        try:
            queued = self.session.submit(target)
            plan = queued["plan"]
        except GraphInvalid as exc:
            lines = [str(p) for p in exc.problems]
            ui.notify("Cannot run: " + "; ".join(lines[:3]) + (f" (+{len(lines) - 3} more)" if len(lines) > 3 else ""),
                      type="negative", multi_line=True, timeout=8000)
            return
        except (RuntimeError, KeyError) as exc:
            ui.notify(str(exc).strip('"'), type="warning")
            return
        if queued["status"] == "queued":
            ui.notify(f"Run {queued['id']} queued (#{queued['position']}): Runs, the clock button at the top right, "
                      "lists it and cancels it", type="info")
            return
        self.tabs.set_value("output")  # the curves are what one watches while it runs
        todo = sum(1 for a in plan.values() if a == "run")
        ui.notify(f"Running {todo} node{'s' if todo != 1 else ''}, {len(plan) - todo} from cache"
                  + (f" up to {target}" if target else ""), type="info", timeout=2500)
        self.tick_now()

    def run_selected(self):
        if len(self.selected) != 1:
            ui.notify("Select one node to run it and the stale nodes it needs", type="warning")
            return
        return self.run(self.selected[0])

    def stop(self) -> None:
        self.session.stop()
        ui.notify("Stopping at the next batch…", timeout=2000)

    def validate(self) -> None:
        problems = self.session.validate()
        if not problems:
            ui.notify("The graph is valid", type="positive")
        else:
            errors = sum(p.blocking for p in problems)
            counts = [f"{n} {word}{'s' if n != 1 else ''}" for n, word in
                      ((errors, "problem"), (len(problems) - errors, "warning")) if n]
            with ui.dialog() as dialog, ui.card().classes("w-[32rem]"):
                ui.label(", ".join(counts) + ("" if errors else ": the graph can run")).classes("text-h6")
                for p in problems:
                    ui.label(str(p)).classes("text-sm nf-problem-line")
                ui.button("Close", on_click=dialog.close).props("flat")
            dialog.open()
        self.tick_now()

    # -- files and history -----------------------------------------------------------------------
    def export_script(self) -> None:
        """The open graph as one standalone PyTorch script, downloaded by the browser (what
        ``nodeflow export-script`` writes)."""
        graph = self.session.graph
        try:
            exported = export_script(graph, self.session.registry, workspace=self.session.workspace)
        except GraphInvalid as exc:
            ui.notify(f"Cannot export: {exc.problems[0]}" + (f" (+{len(exc.problems) - 1} more)"
                                                            if len(exc.problems) > 1 else ""),
                      type="negative", multi_line=True, timeout=8000)
            return
        path = self.session.path
        name = (path.stem if path is not None else default_file_name(graph.name).removesuffix(".json")) + ".py"
        ui.download.content(exported.text, name, "text/x-python")
        left = f"; left out (no script form): {', '.join(exported.left_out)}" if exported.left_out else ""
        ui.notify(f"Exported {name}: plain PyTorch, runs with python {name}{left}", type="positive",
                  multi_line=bool(left), timeout=6000)

    def undo(self, args: Any = None) -> None:
        if not self.session.undo():
            ui.notify("Nothing to undo", timeout=1200)
        self.form_sig = None
        self.tick_now()

    def redo(self, args: Any = None) -> None:
        if not self.session.redo():
            ui.notify("Nothing to redo", timeout=1200)
        self.form_sig = None
        self.tick_now()

    def _confirm_discard(self, then) -> None:
        if not self.session.dirty:
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
            self.session.load(graph, path)
        except EditError as exc:  # e.g. a dataset path outside the folders this editor may use
            ui.notify(str(exc), type="negative", multi_line=True)
            return
        self.selected = []
        self.tick_now()
        self.editor.fit()

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
        if self.session.path is None:
            self.save_as()
            return
        try:
            path = self.session.save()
        except (EditError, OSError) as exc:
            ui.notify(f"Not saved: {exc}", type="negative")
            return
        ui.notify(f"Saved {path.name}", type="positive", timeout=1500)
        self.tick_now()

    def save_as(self) -> None:
        def do_save() -> None:
            problem.set_visibility(False)
            path = self._workspace_path(name.value or "", problem)
            if path is None:
                return
            try:
                self.session.save(path)
            except (EditError, OSError, ValueError) as exc:
                problem.set_text(f"Not saved: {exc}")
                problem.set_visibility(True)
                return
            dialog.close()
            ui.notify(f"Saved {path.name}", type="positive", timeout=1500)
            self.tick_now()

        default = self.session.path.name if self.session.path else default_file_name(self.session.graph.name)
        with ui.dialog() as dialog, ui.card().classes("w-96 nf-save-as"):
            ui.label("Save as (in the workspace)").classes("text-h6")
            name = ui.input("file name", value=default).classes("w-full").on("keydown.enter", do_save)
            problem = ui.label("").classes("text-negative text-sm nf-save-problem")
            problem.set_visibility(False)
            with ui.row().classes("w-full justify-end"):
                ui.button("Cancel", on_click=dialog.close).props("flat")
                ui.button("Save", on_click=do_save)
        dialog.open()


#: a quick node (a layer, a dataset scan) measured below this shows no estimate: "≈ 0.00 s" on every
#: layer card hides the few lines that matter
QUICK_UNSHOWN_SECONDS = 0.5


def estimate_line(entry: dict[str, Any]) -> str:
    """A node's estimate as its card shows it, e.g. "≈ 42 s · 3 epochs · CPU · feature cache: hit";
    empty when there is none, or for a quick node that costs next to nothing."""
    seconds = entry.get("seconds")
    if not isinstance(seconds, (int, float)):
        return ""
    if str(entry.get("note") or "").startswith("quick") and seconds < QUICK_UNSHOWN_SECONDS:
        return ""
    parts = [f"≈ {format_seconds(seconds)}"]
    if entry.get("epochs"):
        parts.append(f"{entry['epochs']} epoch{'s' if entry['epochs'] != 1 else ''}")
    if entry.get("device"):
        parts.append(str(entry["device"]).split(" ")[0].upper())
    if entry.get("feature_cache") == "hit":
        parts.append("feature cache: hit")
    return " · ".join(parts)


def _set_text(label: ui.label, text: str) -> None:
    """A header label's text, whole in its tooltip (the header may cut it short)."""
    if label.text != text:
        label.set_text(text)
        label._props["title"] = text
        label.update()


def _point(value: Any) -> dict[str, float] | None:
    """A canvas point sent by the page, or None when it is not one."""
    if isinstance(value, dict) and all(isinstance(value.get(k), (int, float)) and not isinstance(value.get(k), bool)
                                       and abs(value[k]) < 1e9 for k in ("x", "y")):
        return {"x": float(value["x"]), "y": float(value["y"])}
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


SCROLL_LOG_JS = """
(() => { const area = getHtmlElement(%d).querySelector(".q-scrollarea__container");
  if (area) area.scrollTop = area.scrollHeight; })()
"""

FOCUS_FIELD_JS = """
(() => { const name = %s; let tries = 40;
  const go = () => {
    const field = document.querySelector(`.nf-inspector .nf-field[data-param="${CSS.escape(name)}"]`);
    const input = field && field.querySelector("input, textarea, [tabindex]");
    if (!input) { if (--tries > 0) setTimeout(go, 50); return; }
    field.scrollIntoView({block: "center"}); input.focus(); field.classList.add("nf-field-focus");
    setTimeout(() => field.classList.remove("nf-field-focus"), 2500);
  };
  go(); })()
"""

PAGE_CSS = """
.nf-palette-item { display: block; width: 100%; padding: 3px 8px; margin: 3px 0; border: 1px solid #e0e4ea; border-radius: 6px; background: #fff;
  cursor: grab; user-select: none; }
.nf-palette-item:hover { border-color: #3f51b5; background: #f3f5ff; }
.nicegui-content { padding: 0 !important; }
.nf-log { font-family: ui-monospace, monospace; }
.nf-log .q-scrollarea__content { width: 100% !important; }
/* the Runs table never grows past its panel: every column has its width (RunsPanel.COLUMNS) but What
   changed and Key metrics, which share the rest, wrapping */
.nf-runs-table table { table-layout: fixed; }
.nf-runs-table thead th:first-child { width: 2.75rem; }  /* the selection boxes */
.nf-log .q-scrollarea__content:empty::before { content: "The run log: what each run does, its progress and its messages, appear here.";
  display: block; padding: 6px 8px; color: #9e9e9e; }
.nf-log .q-scrollarea__content > * { white-space: pre-wrap !important; overflow-wrap: anywhere; }
.nf-error-box { border-left: 3px solid #c62828; background: #fff5f5; padding: 6px 10px; border-radius: 4px; }
.nf-error-text { white-space: pre-wrap; overflow-wrap: anywhere; color: #7f1d1d; }
.nf-field-focus { outline: 2px solid #3f51b5; outline-offset: 2px; border-radius: 4px; }
/* one header row at 1280 px and wider, whatever runs: the file name and the run's state give way
   (cut with an ellipsis, whole in their tooltip), and below 1440 px the last buttons keep only
   their icons */
.nf-header { flex-wrap: nowrap !important; }
.nf-header > * { flex-shrink: 0; }
.nf-header > .nf-file, .nf-header > .nf-run-state, .nf-header > .nf-project-title { flex-shrink: 1; min-width: 0;
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.nf-header > .nf-file { max-width: 360px; }
.nf-header > .nf-project-title { max-width: 320px; flex-shrink: 2; }
.nf-header > .nf-run-state { max-width: 260px; }
@media (max-width: 1439px) {
  .nf-header .nf-compact .q-btn__content > .block { max-width: 0; overflow: hidden; }
  .nf-header .nf-compact .q-icon.on-left { margin-right: 0; }
}
"""


def create_app(session: Session, token: str | None = None) -> Hub:
    """Register the page, the HTTP API and autosave on NiceGUI's app (once per process)."""
    hub = Hub(session)
    install_api(app, hub, token)

    @ui.page("/")
    def index(request: Request) -> None:
        if not token_ok(request, token):
            ui.label("This editor needs its access token: open the address that `nodeflow serve` printed.") \
                .classes("m-8 text-lg")
            return
        EditorPage(hub)

    app.on_shutdown(session.close)
    return hub


def serve(session: Session, host: str = "127.0.0.1", port: int = 8080, token: str | None = None) -> None:
    """Start the editor on ``host:port`` and block until the server stops."""
    try:
        check_bundle()
    except BundleMissing as exc:
        raise SystemExit(f"nodeflow serve: {exc}") from None
    if session.autosave_delay is None:
        session.autosave_delay = AUTOSAVE_SECONDS  # the editor autosaves; the CLI's one-shot runs need not
    token, generated = access_token(host, token)
    create_app(session, token)
    address = f"http://{host}:{port}/" + (f"?token={token}" if token else "")
    if generated:
        print(f"nodeflow: {host} is reachable from other machines, so the editor needs a token; "
              f"generated one (set --token or NODEFLOW_TOKEN to choose it): {token}", flush=True)
    print(f"nodeflow editor: {address}", flush=True)
    ui.run(host=host, port=port, reload=False, show=False, title="nodeflow", favicon="🔀",
           show_welcome_message=False)
