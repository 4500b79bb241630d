"""What a run will do, decided before it starts: the nodes it needs, which of them run and which
come from the cache, and what running them would cost (an estimate, measured without running the
expensive part). A planned run is a :class:`Prepared`: what the scheduler (:mod:`nodeflow.scheduler`)
runs.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import networkx as nx

from nodeflow.cache import Cache
from nodeflow.checker import Checked, path_values, raise_blocking
from nodeflow.errors import GraphInvalid, GraphProblem
from nodeflow.events import Event, RunFinished
from nodeflow.limits import JobLimits
from nodeflow.node import Interrupted, RunContext
from nodeflow.reports import NodeReport, RunReport
from nodeflow.task import Outcome, node_message


class Runs(Protocol):
    """What a planned run needs of the executor it belongs to (:class:`nodeflow.executor.Executor`):
    its cache, whether it was asked to stop, its listeners, and computing one node."""

    cache: Cache

    @property
    def stop_requested(self) -> bool: ...

    def _emit(self, event: Event) -> None: ...

    def compute(self, checked: Checked, node_id: str, key: str, emit: Callable[[Event], None], stop_flag: Any,
                force: bool = False, values: dict[str, dict[str, Any]] | None = None,
                fetch: bool = False) -> Outcome: ...


@dataclass
class Prepared:
    """A checked and planned run: the nodes it needs in order, and for each "run" or "cached"."""

    executor: Runs
    checked: Checked
    needed: list[str]
    actions: dict[str, str]
    target: str | None
    force: set[str]
    #: listeners of this run alone (its run recorder), besides the executor's
    listeners: list[Callable[[Event], None]] = field(default_factory=list)
    #: names this run in the live events a backend's workers send back
    run_token: str = field(default_factory=lambda: uuid.uuid4().hex)

    def emit(self, event: Event) -> None:
        """Tell this run's listeners and its executor's."""
        for listener in self.listeners:
            listener(event)
        self.executor._emit(event)

    def finish(self, reports: dict[str, NodeReport], interrupted: bool) -> RunReport:
        ok = all(r.status in ("ran", "cached") for r in reports.values())
        report = RunReport(ok=ok, nodes=reports, interrupted=interrupted)
        self.emit(RunFinished(**report.to_json()))
        return report


class Planner:
    """Plans runs against ``cache``; ``workspace``, ``device``, ``allowed_roots`` and ``limits`` are
    handed to the nodes an estimate measures."""

    def __init__(self, cache: Cache, workspace: Path | None, device: str, allowed_roots: list[Path] | None,
                 limits: JobLimits) -> None:
        self.cache = cache
        self.workspace = workspace
        self.device = device
        self.allowed_roots = allowed_roots
        self.limits = limits

    def needed(self, checked: Checked, target: str | None) -> list[str]:
        """The nodes a run of ``target`` (every node when None) computes or takes from the cache.
        Running everything leaves out the disabled nodes and those that need one; a target that
        needs one is refused by its problem (see :class:`nodeflow.checker.Checker`)."""
        if target is None:
            return [n for n in checked.order if n not in checked.off]
        if not checked.graph.has_node(target):
            raise KeyError(f"no node with id '{target}' (ids: {', '.join(n.id for n in checked.graph.nodes)})")
        if checked.graph.node(target).disabled:
            raise GraphInvalid([GraphProblem(target, "is disabled: enable it to run it")])
        wanted = nx.ancestors(checked.dag, target) | {target}
        return [n for n in checked.order if n in wanted]

    def actions(self, checked: Checked, target: str | None, force: set[str]) -> tuple[list[str], dict[str, str]]:
        """The nodes a run of ``target`` needs and, for each it does not leave out, "run" or "cached".
        Raises :class:`GraphInvalid` if the needed part of the graph is invalid, KeyError if ``target``
        is no node of the graph."""
        needed = self.needed(checked, target)
        raise_blocking(checked, needed)
        return needed, self.plan(checked, needed, force, target)

    def plan(self, checked: Checked, needed: list[str], force: set[str], target: str | None) -> dict[str, str]:
        """Decide, from the target backwards, what runs: a node runs when it is forced, or is not
        cached and is the target (every node when there is none) or feeds a node that runs. A node
        that is not cached but feeds only cached nodes (an in-memory value after a restart) is
        left out altogether rather than recomputed for nothing."""
        consumers: dict[str, list[str]] = {n: [] for n in needed}
        for edge in checked.graph.edges:
            if edge.source in consumers and edge.target in consumers:
                consumers[edge.source].append(edge.target)
        sinks = set(needed) if target is None else {target}
        action: dict[str, str] = {}
        for node_id in reversed(needed):
            cached = node_id not in force and self.cache.has(checked.keys[node_id])
            feeds_a_run = any(action.get(c) == "run" for c in consumers[node_id])
            if not cached and (node_id in sinks or node_id in force or feeds_a_run):
                action[node_id] = "run"
            elif cached:
                action[node_id] = "cached"
        return {n: action[n] for n in needed if n in action}

    def estimate(self, checked: Checked, target: str | None = None,
                 stop_flag: threading.Event | None = None) -> dict[str, Any]:
        """What running ``target`` (all nodes if None) would cost, without running the expensive part.

        The rule, node by node in the order a run would take (only the nodes a run would need):

        - a node the run would take from the cache is "cached", 0 s;
        - a stale node whose type has an estimate (:meth:`Node.estimate`: trainers, scoring passes)
          is measured by it on its real inputs, and its ``stand_in`` outputs, when it gives them,
          stand for its real outputs downstream (a trainer's untrained model: same layers, same
          cost), so the nodes after a stale trainer are estimated too, marked ``after`` it;
        - a stale node without one is quick: when a node with an estimate needs its outputs (a
          dataset scan, a model spec) it runs for real, in this process, and its measured seconds
          are its estimate; its outputs are not cached, so the cache and the run history stay as
          they were; otherwise it is listed as "quick" and not run (it may write files: export);
        - a node whose input has neither a value nor a stand-in (its upstream failed, or gave no
          stand-in) is "after upstream", with no seconds;
        - a node whose estimate fails is "error", with the message; the others go on.

        Nothing is emitted to the run's listeners: a preview does not change the editor's badges.
        ``stop_flag`` stops the estimate at the next batch it profiles (its own flag, so stopping a
        run does not stop a preview, nor the other way round). Raises :class:`GraphInvalid` or
        KeyError as :meth:`actions` does."""
        graph = checked.graph
        needed, actions = self.actions(checked, target, set())
        needed = [n for n in needed if n in actions]
        measured = {n for n in needed if actions[n] == "run" and checked.types[n].has_estimate()}
        feeds: set[str] = set()
        for node_id in measured:
            feeds |= nx.ancestors(checked.dag, node_id)
        stop = stop_flag or threading.Event()
        values: dict[str, dict[str, Any]] = {}
        after: dict[str, set[str]] = {}  # node -> the stale estimated nodes its value stands in for
        nodes: dict[str, dict[str, Any]] = {}
        workspace = self.workspace or Path(tempfile.gettempdir()) / "nodeflow"
        scratch = Path(tempfile.mkdtemp(prefix="nodeflow-estimate-"))
        try:
            for node_id in needed:
                node, key = checked.types[node_id], checked.keys[node_id]
                base: dict[str, Any] = {"type": node.type, "key": key}
                if actions[node_id] == "cached":
                    nodes[node_id] = {**base, "status": "cached", "seconds": 0.0}
                    continue
                if not node.has_estimate() and node_id not in feeds:
                    nodes[node_id] = {**base, "status": "quick", "seconds": None, "note": "quick; not measured"}
                    continue
                inputs, missing = self._estimate_inputs(values, checked, node_id)
                if missing:
                    nodes[node_id] = {**base, "status": "after upstream", "seconds": None, "after": missing,
                                      "note": f"after {', '.join(missing)} ran"}
                    continue
                upstream = sorted(set().union(*(after.get(e.source, set()) for e in graph.incoming(node_id))))
                params = checked.params[node_id]
                ctx = RunContext(node_id, workspace, device=self.device, seed=int(key[:8], 16), stop_flag=stop,
                                 scratch=scratch / node_id, key=key, allowed_roots=self.allowed_roots,
                                 limits=self.limits, path_params=path_values(node, params))
                try:
                    ctx.check_inputs(node, inputs)
                    found = node().estimate(ctx, params, **inputs) if node.has_estimate() else None
                    if found is None and node_id in feeds:
                        started = time.perf_counter()
                        values[node_id] = node().run(ctx, params, **inputs) or {}
                        found = {"seconds": time.perf_counter() - started, "note": "quick: ran it now (not cached)"}
                        after[node_id] = set(upstream)
                    elif found is None:
                        found = {"seconds": None, "note": "quick; not measured"}
                    else:
                        stand_in = found.pop("stand_in", None)
                        if stand_in is not None:
                            values[node_id] = stand_in
                            after[node_id] = {*upstream, node_id}
                except Interrupted:
                    nodes[node_id] = {**base, "status": "stopped", "seconds": None}
                    break
                except Exception as exc:
                    nodes[node_id] = {**base, "status": "error", "seconds": None, "error": node_message(exc)}
                    continue
                entry = {**base, "status": "quick" if found.get("seconds") is None else "stale", **found}
                if upstream:
                    entry["after"] = upstream
                    entry.setdefault("notes", []).append(
                        f"before {', '.join(upstream)} ran: measured with a stand-in for its output (e.g. the untrained model)")
                nodes[node_id] = entry
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        total = sum(n["seconds"] for n in nodes.values() if isinstance(n.get("seconds"), (int, float)))
        return {"target": target, "device": self.device, "nodes": nodes, "total_seconds": round(total, 3),
                "complete": all(n["status"] in ("cached", "stale", "quick") for n in nodes.values())}

    def _estimate_inputs(self, values: dict[str, dict[str, Any]], checked: Checked,
                         node_id: str) -> tuple[dict[str, Any], list[str]]:
        """A node's inputs for an estimate: values computed or stood in for during it, else cached
        outputs; and the upstream nodes that have neither."""
        inputs: dict[str, Any] = {}
        missing: list[str] = []
        for edge in checked.graph.incoming(node_id):
            source = edge.source
            if source not in values and self.cache.has(checked.keys[source]):
                try:
                    values[source] = self.cache.get(checked.keys[source], checked.types[source])[0]
                except Exception:  # unreadable: a run would compute it again; a preview cannot say more
                    pass
            if source in values and edge.source_port in values[source]:
                inputs[edge.target_port] = values[source][edge.source_port]
            elif source not in missing:
                missing.append(source)
        return inputs, missing


def estimate_note(entry: dict[str, Any]) -> str:
    """The remarks of one node's estimate in a line: feature cache, what it waits for, notes, error."""
    parts = []
    if entry.get("feature_cache"):
        parts.append(f"feature cache: {entry['feature_cache']}")
    if entry.get("error"):
        parts.append(f"error: {entry['error']}")
    if entry.get("note"):
        parts.append(entry["note"])
    parts.extend(entry.get("notes") or [])
    return "; ".join(parts)


__all__ = ["Planner", "Prepared", "Runs", "estimate_note"]
