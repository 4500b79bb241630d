"""What every open tab and the HTTP API share: one Session, its catalogue, and a cached snapshot.

Pure Python (no NiceGUI), so the payloads the canvas gets are tested without a browser.
"""

from __future__ import annotations

import threading
from typing import Any

from nodeflow.graph import Graph, GroupSpec
from nodeflow.node import auto_title
from nodeflow.session import Session

SUMMARY_CHARS = 48

#: how every view draws a node's state (card badge, minimap, Output tab) and a run's status (Runs
#: panel): its label, its colour (minimap fill, badge text, run chip) and badge background, and what it
#: means. Idle and stale read alike: either way the next run computes the node; the hint tells which.
STATE_STYLE: dict[str, dict[str, str]] = {
    "idle": {"label": "not run", "color": "#7b8794", "background": "#e4e7eb",
             "hint": "Not run yet with these parameters"},
    "stale": {"label": "not run", "color": "#7b8794", "background": "#e4e7eb",
              "hint": "Ran before with other parameters or inputs: not run with these"},
    "queued": {"label": "queued", "color": "#35469c", "background": "#e0e8f9", "hint": "Waiting to run"},
    "running": {"label": "running", "color": "#ffffff", "background": "#3f51b5", "hint": "Running"},
    "done": {"label": "done", "color": "#0b6e4f", "background": "#c6f7e2", "hint": "Computed by the latest run"},
    "cached": {"label": "cached", "color": "#1565c0", "background": "#d9f0fb", "hint": "Result loaded from the cache"},
    "failed": {"label": "failed", "color": "#b71c1c", "background": "#ffcdd2", "hint": "Failed: see the Output tab"},
    "stopped": {"label": "stopped", "color": "#a05a00", "background": "#ffe9c7",
                "hint": "Stopped on request: see the Output tab"},
    "skipped": {"label": "skipped", "color": "#7b8794", "background": "#eef0f3",
                "hint": "Not run: an input did not finish"},
    "invalid": {"label": "invalid", "color": "#a84300", "background": "#ffe0b2",
                "hint": "Cannot run: see the problem below"},
    "disabled": {"label": "disabled", "color": "#9aa5b1", "background": "#f0f2f4",
                 "hint": "Disabled: a run leaves it out, and the nodes that need it (right-click to enable it)"},
    # a run's statuses in the Runs panel, drawn as the node states they correspond to
    "interrupted": {"label": "interrupted", "color": "#a05a00", "background": "#ffe9c7",
                    "hint": "The process running it ended (killed, power lost); finished nodes stay cached"},
    "cancelled": {"label": "cancelled", "color": "#7b8794", "background": "#eef0f3", "hint": "Cancelled"},
}
#: the minimap's fill for a running node (its badge is white on indigo)
RUNNING_FILL = "#3f51b5"


def state_fill(state: str) -> str:
    """The colour a state is filled with where there is no text on it (the minimap)."""
    return RUNNING_FILL if state == "running" else STATE_STYLE.get(state, STATE_STYLE["idle"])["color"]


class Hub:
    """Wraps the session for the editor: snapshots are computed once per change, not once per tab
    per tick, and the session's event counter tells pollers cheaply whether anything happened."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.catalogue_list = session.registry.catalogue()
        self.catalogue = {entry["type"]: entry for entry in self.catalogue_list}
        self._lock = threading.Lock()
        self._snap_key: tuple | None = None
        self._snap: dict[str, Any] | None = None
        #: the latest copy made in any tab (a graph document's text), for pages that may not read
        #: the system clipboard
        self.clipboard: str | None = None

    # -- snapshots ---------------------------------------------------------------------------
    def key(self) -> tuple:
        return (self.session.document.version, self.session.events, self.session.queue.running, self.session.document.dirty)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            key = self.key()
            if key != self._snap_key or self._snap is None:
                self._snap = self.session.snapshot()
                self._snap_key = key
            return self._snap

    # -- canvas payloads -----------------------------------------------------------------------
    def canvas_catalogue(self) -> dict[str, dict[str, Any]]:
        """Only what a node needs to be drawn: ports with colours and accepted types, and title."""
        return {t: {"type": t, "title": e["title"], "category": e["category"],
                    "inputs": e["inputs"], "outputs": e["outputs"]} for t, e in self.catalogue.items()}

    def canvas_graph(self, graph: Graph | None = None, version: int | None = None) -> dict[str, Any]:
        graph = graph or self.session.document.graph
        return {
            "version": self.session.document.version if version is None else version,
            "nodes": [{"id": n.id, "position": {"x": n.position.x, "y": n.position.y},
                       "data": {"id": n.id, "type": n.type, "title": self.title(n.type, n.title, n.params),
                                "disabled": bool(n.disabled),
                                "summary": self.summary(n.type, n.params)}}
                      for n in graph.nodes],
            "edges": [e.model_dump() for e in graph.edges],
            "groups": [{**g.model_dump(mode="json"), **self.group_ports(graph, g)} for g in graph.groups],
        }

    def group_ports(self, graph: Graph, group: GroupSpec) -> dict[str, list[dict[str, Any]]]:
        """The ports a collapsed group's card shows: its members' inputs that are fed from outside
        (or must be and are not yet), and their outputs that go outside (or nowhere: the group's
        results). Each port's handle is ``node.port``, so a wire to it is a wire to that node."""
        members = set(group.members)
        fed = {(e.target, e.target_port): e.source for e in graph.edges}
        used: dict[tuple[str, str], set[str]] = {}
        for edge in graph.edges:
            used.setdefault((edge.source, edge.source_port), set()).add(edge.target)
        inputs, outputs = [], []
        for node_id in group.members:
            entry = self.catalogue.get(graph.node(node_id).type)
            if entry is None:
                continue
            for port in entry["inputs"]:
                source = fed.get((node_id, port["name"]))
                if (source is None and not port["optional"]) or (source is not None and source not in members):
                    inputs.append({**port, "handle": f"{node_id}.{port['name']}", "node": node_id})
            for port in entry["outputs"]:
                targets = used.get((node_id, port["name"]), set())
                if not targets or targets - members:
                    outputs.append({**port, "handle": f"{node_id}.{port['name']}", "node": node_id})
        for side in (inputs, outputs):  # a port's name says enough unless two members have one of that name
            names = [p["name"] for p in side]
            for port in side:
                port["label"] = port["name"] if names.count(port["name"]) == 1 else port["handle"]
        return {"inputs": inputs, "outputs": outputs}

    def title(self, node_type: str, title: str | None, params: dict[str, Any]) -> str | None:
        """The node's own title, else one that follows its params ("Input layer (64×64×3)"); None
        leaves the card to show its type's title."""
        entry = self.catalogue.get(node_type)
        return title or (auto_title(entry, params) if entry is not None else None)

    def summary(self, node_type: str, params: dict[str, Any]) -> str:
        """One line of the params that matter: those away from their defaults first, as the node
        will use them (a default that follows another param, such as an output layer's activation,
        shows its value)."""
        entry = self.catalogue.get(node_type)
        if entry is None:
            return f"unknown type {node_type}"
        defaults = entry.get("defaults") or {}
        props = entry["params_schema"].get("properties", {})
        shown = {**defaults, **params}
        try:
            shown.update(self.session.registry.get(node_type).Params.model_validate(params).model_dump(mode="json"))
        except (ValueError, TypeError, KeyError):  # invalid params show as typed; the card says what is wrong
            pass
        changed = [k for k in props if k in shown and shown[k] != defaults.get(k)]
        rest = [k for k in props if k not in changed and k in shown]
        parts = []
        for name in changed + rest:
            parts.append(f"{name}={_short(shown[name])}")
            if sum(len(p) + 3 for p in parts) > SUMMARY_CHARS:
                break
        return " · ".join(parts)

    @staticmethod
    def node_status(live: dict[str, Any]) -> dict[str, Any]:
        """The small part of a node's snapshot that its badge needs (not the metric series): its state,
        and the same state in words as every view shows it ("stopped at epoch 11/40 · resumes from
        its checkpoint")."""
        eta = live.get("eta")
        return {"state": live.get("state", "idle"), "words": live.get("words") or live.get("state", "idle"),
                "progress": round(float(live.get("progress") or 0.0), 3),
                "epoch": live.get("epoch"), "epochs": live.get("epochs"),
                "eta": None if eta is None else round(float(eta), 1), "resumable": bool(live.get("resumable")),
                "message": (live.get("message") or "")[:200], "error": live.get("error"),
                "problems": live.get("problems") or []}

    def status_of(self, snap: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {node_id: self.node_status(live) for node_id, live in snap["nodes"].items()}

    # -- API view ------------------------------------------------------------------------------
    def api_status(self) -> dict[str, Any]:
        snap = self.snapshot()
        return {
            "version": snap["version"], "running": snap["running"], "dirty": snap["dirty"],
            "path": snap["path"], "error": snap["error"], "problems": snap["problems"],
            "nodes": {node_id: {**status, "metrics": snap["nodes"][node_id].get("metrics") or {},
                                "seconds": snap["nodes"][node_id].get("seconds")}
                      for node_id, status in self.status_of(snap).items()},
        }


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return ", ".join(value)  # names read as names: block3, block4, block5
    if isinstance(value, list):
        return f"[{len(value)}]" if len(value) > 2 else "[" + ",".join(map(str, value)) + "]"
    text = str(value)
    return text if len(text) <= 18 else text[:16] + "…"


def status_delta(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Nodes whose badge changed (None for nodes that went away)."""
    delta: dict[str, Any] = {k: v for k, v in new.items() if old.get(k) != v}
    delta.update({k: None for k in old if k not in new})
    return delta
