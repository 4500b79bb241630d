"""What the parts of one editor tab (toolbar, palette, inspector, file dialogs, run controls,
clipboard) share: the :class:`Page` they belong to, as :class:`~nodeflow.ui.app.EditorPage` is."""

from __future__ import annotations

from typing import Any, Protocol

from nicegui import ui

from nodeflow.session import Session

from .flow_editor import FlowEditor
from .runs_panel import RunsPanel
from .state import Hub
from .sweep_panel import SweepPanel


class Page(Protocol):
    """One browser tab's editor: the hub all tabs share (one Session), what this tab has selected,
    its canvas, and how it redraws; a part reads these and calls back, and keeps nothing of its own
    that another part needs."""

    hub: Hub
    session: Session
    #: the node ids selected on this tab's canvas
    selected: list[str]
    editor: FlowEditor
    #: the right drawer's tabs ("params", "output")
    tabs: ui.tabs
    runs_panel: RunsPanel
    sweeps: SweepPanel

    def tick_now(self) -> None:
        """Redraw what changed now, without waiting for the next poll."""

    def on_command(self, args: dict[str, Any]) -> None:
        """A named command (``args["name"]``), checked and handled as the canvas's own."""

    def undo(self, args: Any = None) -> None: ...

    def redo(self, args: Any = None) -> None: ...
