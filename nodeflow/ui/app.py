"""The editor page and ``serve``: the canvas, and the parts around it (toolbar, palette, inspector,
file dialogs, run controls, clipboard, outputs, log), each a module of its own.

All tabs share one :class:`~nodeflow.ui.state.Hub` (one Session). Each tab polls the hub on a
timer and sends its canvas only what changed: status deltas every tick, a whole graph only when
the document's version moved without this tab having made the change.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from nicegui import app, ui

from nodeflow.access import Refused, allows
from nodeflow.node import UnknownNodeType
from nodeflow.session import EditError, Session

from .api import access_token, cell_gallery_of, token_ok
from .clipboard import Clipboard
from .file_dialogs import FileDialogs
from .flow_editor import BundleMissing, FlowEditor, check_bundle
from .inspector import Inspector
from .outputs import OutputPanel
from .palette import Palette
from .routes import install_api
from .run_controls import RunControls
from .runs_panel import LineageView, RunsPanel
from .state import Hub, status_delta
from .sweep_panel import SweepPanel
from .toolbar import Toolbar
from .try_it import TryItPanel

POLL_SECONDS = 0.3
AUTOSAVE_SECONDS = 10.0
LOCAL_KINDS = {"move", "connect", "delete"}  # edits the canvas has already drawn itself


@dataclass(frozen=True)
class Message:
    """A message the canvas sends over the socket: the page's method that handles it (with the
    message's arguments) and the Session method it ends in, or None when it changes nothing and starts
    nothing (selecting, copying). Whether a read-only page may send it is what that Session method
    declares (:mod:`nodeflow.access`), so no rule about it is kept here."""

    handler: str
    calls: str | None


#: every message the canvas sends (``FlowEditor``'s events)
CANVAS_EVENTS = {"edit": Message("on_edit", "document.edits"), "select": Message("on_select", None),
                 "run": Message("run_to", "queue.submit"), "failure": Message("show_failure", None),
                 "command": Message("on_command", None)}
#: the names a ``command`` message carries (the context menu, keys, the group bar)
COMMANDS = {"copy": Message("copy", None), "paste": Message("paste", "document.edits"),
            "duplicate": Message("duplicate", "document.edits"), "insert_group": Message("insert_group", "document.edits"),
            "save_group": Message("save_group", "document.save_group"), "undo": Message("undo", "document.undo"),
            "redo": Message("redo", "document.redo"), "save": Message("save", "document.save")}


class EditorPage:
    """One browser tab. ``read_only`` (the reason, e.g. "alice's project") shows the graph, its
    states and runs without the controls that change them; the hub's session refuses those anyway.

    The page draws its parts (:class:`Toolbar`, :class:`Palette`, :class:`Inspector`, the output tab
    and the log), each on the same hub, and keeps what they share (:class:`~nodeflow.ui.page.Page`):
    the selection, the canvas, and the poll that redraws what changed. Every message from the canvas
    comes in through :meth:`receive`, which decides whether this page may send it."""

    def __init__(self, hub: Hub, read_only: str | None = None) -> None:
        self.hub = hub
        self.session: Session = hub.session
        #: why this page may only read (None: it may change the project)
        self.read_only = read_only
        self.selected: list[str] = []
        self.synced_version = self.session.document.version
        self.log_seen = 0.0
        self.last_key: tuple | None = None

        ui.add_css(PAGE_CSS)
        ui.page_title("nodeflow")
        self.files = FileDialogs(self)
        self.runner = RunControls(self)
        self.toolbar = Toolbar(self, self.files, self.runner)
        #: the header, where a project's page adds its own buttons
        self.header = self.toolbar.header
        self.runs_panel = RunsPanel(self.session, on_restore=self.tick_now)
        self.sweeps = SweepPanel(self.session, hub.catalogue, on_change=self.tick_now)
        self.palette = Palette(self)
        self.clipboard = Clipboard(self, self.palette)
        with ui.right_drawer(value=True, fixed=True).props("width=370 bordered").classes("p-0 nf-right-drawer"):
            with ui.tabs().props("dense inline-label align=justify narrow-indicator no-caps").classes("w-full text-indigo-9") as self.tabs:
                ui.tab("params", "Parameters", icon="tune")
                ui.tab("output", "Output", icon="insights")
                ui.tab("try", "Try it", icon="image_search")
            with ui.tab_panels(self.tabs, value="params").classes("w-full"):
                with ui.tab_panel("params").classes("p-3"):
                    self.inspector = Inspector(self, self.runner)
                with ui.tab_panel("output").classes("p-3"):
                    self.output = OutputPanel(on_param=self.focus_param, gallery=cell_gallery_of(self.session))
                    self.lineage = LineageView(self.session)
                with ui.tab_panel("try").classes("p-3"):
                    self.try_it = TryItPanel(self.session)
        with ui.footer(fixed=True).classes("bg-white text-black p-0 nf-footer").style("border-top: 1px solid #ddd"):
            self.log = ui.log(max_lines=500).classes("w-full h-28 text-xs nf-log")
        snap = hub.snapshot()
        self.sent_status = hub.status_of(snap)
        self.editor = FlowEditor(hub.canvas_catalogue(), hub.canvas_graph(), self.sent_status) \
            .classes("w-full nf-editor").style("height: calc(100vh - 152px)")
        for name, message in CANVAS_EVENTS.items():
            self.editor.on(name, lambda e, m=message: self.receive(m, e.args))
        self.render_selection()
        if read_only:
            self._without_controls(read_only)
        self.tick()
        ui.timer(POLL_SECONDS, self.tick)
        # e.g. the graph reopened with the unsaved edits of the last start: the canvas says it once per tab
        self.editor.props["notice"] = self.session.document.notice or ""
        # the lines pushed before the page was drawn: open the log at the newest one
        ui.timer(0.3, lambda: ui.run_javascript(SCROLL_LOG_JS % self.log.id), once=True)

    def _without_controls(self, reason: str) -> None:
        bar = self.toolbar
        for element in [*bar.controls, bar.undo_btn, bar.redo_btn, bar.run_all_btn, bar.run_sel_btn,
                        bar.stop_btn, self.runs_panel.restore_btn, self.runs_panel.cancel_btn]:
            element.set_visibility(False)
        self.palette.drawer.set_value(False)
        with self.header:
            ui.label(f"Read-only: {reason}").classes("text-sm q-ml-sm q-px-sm rounded bg-amber-2 text-black "
                                                     "nf-read-only").move(target_index=2)

    def render_selection(self) -> None:
        """The side panels that follow the one selected node: its parameters and its Try it tab."""
        self.inspector.render()
        self.try_it.show(self.selected[0] if len(self.selected) == 1 else None)

    # -- polling ---------------------------------------------------------------------------------
    def tick(self) -> None:
        key = self.hub.key()
        if key == self.last_key:
            return
        self.last_key = key
        snap = self.hub.snapshot()
        if self.session.document.version != self.synced_version:
            self.synced_version = self.session.document.version
            self.editor.set_graph(self.hub.canvas_graph())
            self.selected = [i for i in self.selected if self.session.document.graph.has_node(i)]
        status = self.runner.with_estimates(self.hub.status_of(snap), snap["keys"])
        delta = status_delta(self.sent_status, status)
        if delta:
            self.editor.set_status(delta)
            self.sent_status = status
        active = [i for i, s in status.items() if s["state"] == "running"]
        self.toolbar.show(snap, status, active, self.selected)
        self.render_selection()
        focus = self.selected[0] if len(self.selected) == 1 else (active[0] if active else None)
        self.output.show(focus, snap["nodes"].get(focus) if focus else None)
        self.lineage.show(focus, snap["nodes"].get(focus) if focus else None)
        for entry in snap["log"]:
            if entry["time"] > self.log_seen:
                stamp = time.strftime("%H:%M:%S", time.localtime(entry["time"]))
                self.log.push(f"{stamp} {entry['node'] or ''} {entry['kind']}: {entry['message']}")
                self.log_seen = entry["time"]

    def tick_now(self) -> None:
        self.last_key = None
        self.tick()

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
        before = self.session.document.version
        try:
            self.session.document.edits(msg.get("ops") or [])
        except (EditError, UnknownNodeType, KeyError, TypeError) as exc:
            self.editor.ack({"rid": msg.get("rid"), "ok": False, "error": str(exc), "version": self.session.document.version})
            ui.notify(f"Refused: {str(exc).strip(chr(34))}", type="warning")
            self.synced_version = -1  # put the canvas back to the server's document
            self.tick_now()
            return
        if kind in LOCAL_KINDS and msg.get("base") == before == self.synced_version:
            self.synced_version = self.session.document.version  # the canvas already shows this change
        self.editor.ack({"rid": msg.get("rid"), "ok": True, "version": self.session.document.version,
                         "server_ms": round((time.perf_counter() - started) * 1000, 2)})
        if kind == "add":
            self.selected = [self.session.document.graph.nodes[-1].id]
            self.tick_now()  # draw the new node now
        # other edits are on the canvas already; badges follow on the next tick, after the ack left

    def on_select(self, args: dict[str, Any]) -> None:
        ids = args.get("ids")
        self.selected = [i for i in ids if isinstance(i, str) and self.session.document.graph.has_node(i)] \
            if isinstance(ids, list) else []
        self.toolbar.run_sel_btn.set_enabled(bool(self.selected))
        self.tick_now()

    def run_to(self, args: dict[str, Any]) -> None:
        target = args.get("target")
        self.runner.run(target if isinstance(target, str) else None)

    def show_failure(self, args: dict[str, Any]) -> None:
        """A click on a card's error: select the node and show its whole message."""
        node_id = args.get("id")
        if not isinstance(node_id, str) or not self.session.document.graph.has_node(node_id):
            return
        self.selected = [node_id]
        self.editor.select([node_id])
        self.tabs.set_value("output")
        self.tick_now()

    def focus_param(self, node_id: str, param: str) -> None:
        """Select ``node_id`` on the canvas and in the inspector, and put the cursor in ``param``'s field."""
        if not self.session.document.graph.has_node(node_id):
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

    # -- commands handled by a part (COMMANDS names these methods) -------------------------------
    def copy(self, args: dict[str, Any]) -> None:
        self.clipboard.copy(args)

    def paste(self, args: dict[str, Any]) -> None:
        self.clipboard.paste(args)

    def duplicate(self, args: dict[str, Any]) -> None:
        self.clipboard.duplicate(args)

    def insert_group(self, args: dict[str, Any]) -> None:
        self.clipboard.insert_group(args)

    def save_group(self, args: dict[str, Any]) -> None:
        self.clipboard.save_group(args)

    def save(self, args: Any = None) -> None:
        self.files.save(args)

    def undo(self, args: Any = None) -> None:
        if not self.session.document.undo():
            ui.notify("Nothing to undo", timeout=1200)
        self.inspector.form_sig = None
        self.tick_now()

    def redo(self, args: Any = None) -> None:
        if not self.session.document.redo():
            ui.notify("Nothing to redo", timeout=1200)
        self.inspector.form_sig = None
        self.tick_now()


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
    if session.document.autosave_delay is None:
        session.document.autosave_delay = AUTOSAVE_SECONDS  # the editor autosaves; the CLI's one-shot runs need not
    token, generated = access_token(host, token)
    create_app(session, token)
    address = f"http://{host}:{port}/" + (f"?token={token}" if token else "")
    if generated:
        print(f"nodeflow: {host} is reachable from other machines, so the editor needs a token; "
              f"generated one (set --token or NODEFLOW_TOKEN to choose it): {token}", flush=True)
    print(f"nodeflow editor: {address}", flush=True)
    ui.run(host=host, port=port, reload=False, show=False, title="nodeflow", favicon="🔀",
           show_welcome_message=False)
