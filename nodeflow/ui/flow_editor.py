"""The Vue Flow canvas as a NiceGUI element.

The graph goes in once as a prop; after that the server sends whole graphs only when the document
changed elsewhere (``set_graph``) and node states as deltas (``set_status``), because NiceGUI
re-sends every prop on each ``update()`` and a rebuilt canvas would snap dragged nodes back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nicegui.element import Element

DIST = Path(__file__).parent / "dist"
BUNDLE = DIST / "index.js"


class BundleMissing(RuntimeError):
    """The Vue Flow bundle, which ships with nodeflow, is not where it should be."""


def check_bundle() -> None:
    if not BUNDLE.is_file():
        raise BundleMissing(
            f"the editor's front-end bundle is missing ({BUNDLE}); it ships with nodeflow: reinstall it, "
            "or in a checkout restore nodeflow/ui/dist (git checkout) or rebuild it with scripts/build_frontend.sh")


class FlowEditor(Element, component="flow_editor.js", esm={"nodeflow-vueflow": "dist"}):
    def __init__(self, catalogue: dict[str, dict[str, Any]], graph: dict[str, Any],
                 status: dict[str, Any] | None = None) -> None:
        from .state import STATE_STYLE, state_fill

        super().__init__()
        self._props["catalogue"] = catalogue
        self._props["graph"] = graph
        self._props["status"] = status or {}
        # one look per state for the card and the minimap (and the Runs panel, in Python)
        self._props["states"] = {name: {**style, "fill": state_fill(name)} for name, style in STATE_STYLE.items()}

    def set_graph(self, graph: dict[str, Any], fit: bool = False) -> None:
        self._props["graph"] = graph  # a page reload starts from the latest graph
        self.run_method("setGraph", graph, fit)

    def set_status(self, delta: dict[str, Any]) -> None:
        self.run_method("setStatus", delta)

    def ack(self, reply: dict[str, Any]) -> None:
        self.run_method("ack", reply)

    def write_clipboard(self, text: str) -> None:
        self.run_method("writeClipboard", text)

    def select(self, ids: list[str]) -> None:
        self.run_method("select", ids)

    def fit(self) -> None:
        self.run_method("fit")
