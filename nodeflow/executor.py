"""Validate a graph against the catalogue, plan it, and compute its nodes, with a content-keyed cache.

No torch, no UI: values are opaque, nodes do the work. The cache key of a node is its type,
its code version, its validated params, its fingerprint and the keys of the outputs feeding it,
so a param change makes exactly that node and its descendants stale.

Which node runs when, and what became of each, is the scheduler's (:mod:`nodeflow.scheduler`);
computing one node is :meth:`Executor.compute`, which every backend calls. What can be wrong with a
graph lives in :mod:`nodeflow.errors`, the cache in :mod:`nodeflow.cache`, events and node states in
:mod:`nodeflow.events`.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import networkx as nx
from pydantic import ValidationError

from nodeflow.cache import Cache, canonical_json
from nodeflow.errors import (DisabledInputError, GraphCycleError, GraphInvalid, GraphProblem, GraphWarning,
                             MissingInputError, ParamError, PortTypeError, UnknownPortError, UnknownTypeError,
                             describe_exception)
from nodeflow.events import Event, Log, Memory, NodeStarted, RunFinished, RunStarted, Seen, derive
from nodeflow.graph import Graph, NodeSpec
from nodeflow.limits import NO_LIMITS, JobLimits
from nodeflow.node import (Interrupted, Node, ParamProblem, Registry, RunContext, UnknownNodeType, card_title,
                           fresh_fingerprints)
from nodeflow.paths import missing_paths, params_paths, resolved_params
from nodeflow.scheduler import Outcome

# -- results ---------------------------------------------------------------------------------


@dataclass
class NodeReport:
    status: str  # ran | cached | failed | skipped | interrupted
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    #: named tables the node put beside its metrics (``ctx.table``): {"columns": [...], "rows": [...]}
    tables: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"status": self.status, "seconds": round(self.seconds, 4), "metrics": self.metrics}
        if self.error:
            data["error"] = self.error
        if self.tables:
            data["tables"] = self.tables
        return data


@dataclass
class RunReport:
    ok: bool
    nodes: dict[str, NodeReport]
    interrupted: bool = False
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "interrupted": self.interrupted,
                "nodes": {k: v.to_json() for k, v in self.nodes.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunReport:
        nodes = {k: NodeReport(v["status"], v.get("seconds", 0.0), v.get("metrics", {}), v.get("error"),
                               v.get("tables", {}))
                 for k, v in data["nodes"].items()}
        return cls(ok=data["ok"], nodes=nodes, interrupted=data.get("interrupted", False))

    def failure(self) -> tuple[str, NodeReport] | None:
        return next(((k, v) for k, v in self.nodes.items() if v.status == "failed"), None)


# -- the executor ----------------------------------------------------------------------------


@dataclass
class Checked:
    """What validation learns about a graph, reused by planning and running."""

    graph: Graph
    dag: nx.DiGraph
    problems: list[GraphProblem]
    params: dict[str, Any]
    types: dict[str, type[Node]]
    keys: dict[str, str]
    order: list[str]
    facts: dict[str, dict[str, dict[str, Any]]]
    #: disabled nodes, and the nodes that cannot run because they need one: left out of every run
    off: set[str] = field(default_factory=set)


@dataclass
class Prepared:
    """A checked and planned run: the nodes it needs in order, and for each "run" or "cached"."""

    executor: Executor
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


class History(Protocol):
    """Where the latest settled state of each node and key is kept: this process's memory
    (:class:`nodeflow.events.Memory`) or the run store (:class:`nodeflow.runs.RunStore`), which
    outlives it. ``keys``: node id -> its current cache key."""

    def seen(self, keys: dict[str, str | None]) -> dict[str, Seen]: ...


class Executor:
    """Checks, plans and runs graphs. One executor keeps one cache; several graphs may share it.

    ``backend``: where :meth:`run` computes nodes (see :mod:`nodeflow.scheduler`); None runs them one by
    one in this process. ``history``: what :meth:`status` reads the latest state of each node from;
    by default what this executor's own runs told (kept in memory)."""

    backend: Any = None

    def __init__(self, registry: Registry, workspace: Path | None = None, device: str = "auto",
                 listeners: Iterable[Callable[[Event], None]] = (), stop_flag: Any = None,
                 allowed_roots: list[Path] | None = None, history: History | None = None,
                 limits: JobLimits | None = None) -> None:
        """``allowed_roots``: folders every path a node resolves must lie in (runs for the editor
        and its HTTP API); None leaves paths unrestricted (the command line)."""
        self.registry = registry
        self.workspace = Path(workspace) if workspace is not None else None
        self.device = device
        self.cache = Cache(self.workspace / "cache" if self.workspace is not None else None)
        self._listeners: list[Callable[[Event], None]] = list(listeners)
        # a threading.Event, or a multiprocessing one when the executor lives in a worker process
        self._stop = stop_flag if stop_flag is not None else threading.Event()
        self._run_lock = threading.Lock()
        self.allowed_roots = None if allowed_roots is None else [Path(r) for r in allowed_roots]
        #: a shared server's limits on each job (see :mod:`nodeflow.limits`); none elsewhere
        self.limits = limits or NO_LIMITS
        if history is None:
            memory = Memory()
            self._listeners.append(memory)
            history = memory
        self.history = history

    @property
    def path_base(self) -> Path:
        """What relative path params are relative to (:func:`nodeflow.paths.resolve`): the workspace;
        an executor made without one (a library call) takes them from the folder it runs in."""
        return self.workspace if self.workspace is not None else Path.cwd()

    # events
    def subscribe(self, listener: Callable[[Event], None]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _emit(self, event: Event) -> None:
        for listener in list(self._listeners):
            listener(event)

    def interrupt(self) -> None:
        """Ask the running node to stop at its next ``ctx`` check."""
        self._stop.set()

    @property
    def stop_flag(self) -> Any:
        """The flag :meth:`interrupt` sets and nodes computed here look at."""
        return self._stop

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def running(self) -> bool:
        return self._run_lock.locked()

    # validation
    def validate(self, graph: Graph) -> list[GraphProblem]:
        """Every problem of the graph: errors, which block running the nodes they name, then warnings."""
        problems = self.check(graph).problems
        return [p for p in problems if p.blocking] + [p for p in problems if not p.blocking]

    def check(self, graph: Graph, fresh: bool = False) -> Checked:
        """Every problem of ``graph``, and its cache keys. ``fresh``: for a run being planned, the
        keys reflect every data file as it is now (see :func:`nodeflow.node.fingerprints_fresh`);
        otherwise a node may answer its fingerprint from a memo, as status polling needs."""
        problems: list[GraphProblem] = []
        types: dict[str, type[Node]] = {}
        params: dict[str, Any] = {}
        dag = nx.DiGraph()
        for spec in graph.nodes:
            dag.add_node(spec.id)
            try:
                types[spec.id] = self.registry.get(spec.type)
            except UnknownNodeType as exc:
                problems.append(UnknownTypeError(spec.id, str(exc)))
                continue
            try:
                params[spec.id] = resolved_params(types[spec.id].Params.model_validate(spec.params), self.path_base)
            except ValidationError as exc:
                problems.extend(_param_problems(spec, exc))
        for edge in graph.edges:
            dag.add_edge(edge.source, edge.target)
            problems.extend(self._edge_problems(edge, types))
        for spec in graph.nodes:
            node = types.get(spec.id)
            if node is None:
                continue
            fed = {e.target_port for e in graph.incoming(spec.id)}
            for port in node.inputs:
                if not port.optional and port.name not in fed:
                    problems.append(MissingInputError(
                        spec.id, f"input '{port.name}' ({port.type.name}) is not connected", port=port.name))
        cycles = list(nx.simple_cycles(dag))
        for loop in cycles:
            problems.append(GraphCycleError(sorted(loop, key=[n.id for n in graph.nodes].index)))
        order = list(nx.topological_sort(dag)) if not cycles else [n.id for n in graph.nodes]
        keys: dict[str, str] = {}
        facts: dict[str, dict[str, dict[str, Any]]] = {}
        off: set[str] = set()
        if not cycles:
            with fresh_fingerprints() if fresh else contextlib.nullcontext():
                keys = self._keys(graph, order, types, params)
            off, found = _disabled(graph, order)
            problems.extend(found)
            found, facts = self._infer(graph, order, types, params, {p.node_id for p in problems})
            problems.extend(found)
        problems.extend(self._missing_paths(graph, params, {(p.node_id, p.param) for p in problems}))
        return Checked(graph, dag, problems, params, types, keys, order, facts, off)

    def _missing_paths(self, graph: Graph, params: dict[str, Any],
                       said: set[tuple[str, str | None]]) -> list[GraphProblem]:
        """A path param of an enabled node that names nothing on disk, unless the node said so itself:
        what its run would fail on, told before it starts (:func:`nodeflow.paths.missing_paths`)."""
        return [ParamError(spec.id, why, param=name) for spec in graph.nodes if spec.id in params and not spec.disabled
                for name, why in missing_paths(params[spec.id], self.path_base, self.allowed_roots, spec.params)
                if (spec.id, name) not in said]

    def _edge_problems(self, edge, types: dict[str, type[Node]]) -> list[GraphProblem]:
        src, dst = types.get(edge.source), types.get(edge.target)
        found: list[GraphProblem] = []
        out_port = src.output_port(edge.source_port) if src else None
        in_port = dst.input_port(edge.target_port) if dst else None
        if src is not None and out_port is None:
            names = ", ".join(p.name for p in src.outputs) or "none"
            found.append(UnknownPortError(edge.source, f"has no output '{edge.source_port}' (outputs: {names})",
                                          port=edge.source_port))
        if dst is not None and in_port is None:
            names = ", ".join(p.name for p in dst.inputs) or "none"
            found.append(UnknownPortError(edge.target, f"has no input '{edge.target_port}' (inputs: {names})",
                                          port=edge.target_port))
        if out_port is not None and in_port is not None and not out_port.type.fits(in_port.type):
            found.append(PortTypeError(
                edge.target,
                f"input '{in_port.name}' expects {in_port.type.name} but {edge.source}.{out_port.name} gives "
                f"{out_port.type.name}; connect a node that outputs {in_port.type.name}",
                port=in_port.name, other_node=edge.source))
        return found

    def _keys(self, graph: Graph, order: list[str], types, params) -> dict[str, str]:
        keys: dict[str, str] = {}
        for node_id in order:
            node = types.get(node_id)
            if node is None or node_id not in params:
                continue
            inputs = {}
            complete = True
            for edge in graph.incoming(node_id):
                if edge.source not in keys:
                    complete = False
                    break
                inputs[edge.target_port] = [keys[edge.source], edge.source_port]
            if not complete:
                continue
            p = params[node_id]
            try:
                fingerprint = node.fingerprint(p)
            except Exception as exc:  # a fingerprint must never stop validation
                fingerprint = f"unavailable:{type(exc).__name__}"
            payload = {"type": node.type, "version": node.version, "params": p.model_dump(mode="json"),
                       "fingerprint": fingerprint, "inputs": inputs}
            keys[node_id] = hashlib.sha256(canonical_json(payload).encode()).hexdigest()
        return keys

    def _infer(self, graph: Graph, order, types, params,
               broken: set[str]) -> tuple[list[GraphProblem], dict[str, dict[str, dict[str, Any]]]]:
        facts: dict[str, dict[str, dict[str, Any]]] = {}
        problems: list[GraphProblem] = []
        for node_id in order:
            node = types.get(node_id)
            if node is None or node_id in broken or node_id not in params:
                broken.add(node_id)
                continue
            incoming = graph.incoming(node_id)
            if any(e.source in broken for e in incoming):
                broken.add(node_id)
                continue
            known = {e.target_port: facts.get(e.source, {}).get(e.source_port, {}) for e in incoming}
            try:
                facts[node_id] = node.infer(params[node_id], known, node_id) or {}
            except ParamProblem as exc:
                broken.add(node_id)
                named = {exc.other_node, *exc.nodes} - {None}
                problems.append(ParamError(node_id, _with_titles(str(exc), named, graph, types), param=exc.param,
                                           port=exc.port, other_node=exc.other_node))
                continue
            except Exception as exc:  # a bug in a node's infer() must not hide the other problems
                broken.add(node_id)
                problems.append(GraphProblem(node_id, f"could not check this node: {describe_exception(exc)}"))
                continue
            problems.extend(self._warnings(graph, types, node_id, params[node_id], known, problems))
        return problems, facts

    def _warnings(self, graph: Graph, types: dict[str, type[Node]], node_id: str, params: Any,
                  known: dict[str, Any], found: list[GraphProblem]) -> list[GraphProblem]:
        """A node's advice as warnings, each said once (a trainer and its output layer may both see
        a ReLU there); a failing ``warnings()`` is itself one, as it must not hide the rest."""
        try:
            advice = types[node_id].warnings(params, known, node_id, self.workspace)
        except Exception as exc:
            return [GraphWarning(node_id, f"could not give this node's advice: {describe_exception(exc)}")]
        said = {(p.node_id, p.param, p.port) for p in found if not p.blocking}
        warnings = []
        for item in advice:
            about = item.node or node_id
            if (about, item.param, item.port) not in said:
                said.add((about, item.param, item.port))
                message = _with_titles(item.message, {about, node_id, *item.nodes}, graph, types)
                warnings.append(GraphWarning(about, message, param=item.param, port=item.port,
                                             other_node=node_id if about != node_id else None))
        return warnings

    # status and planning
    def keys(self, graph: Graph) -> dict[str, str]:
        return self.check(graph).keys

    def input_facts(self, graph: Graph, node_id: str) -> dict[str, dict[str, Any]]:
        """What static checking knows about each input of a node (e.g. the layers of an incoming
        model), so an editor can offer choices without running anything."""
        checked = self.check(graph)
        return {e.target_port: checked.facts.get(e.source, {}).get(e.source_port, {})
                for e in graph.incoming(node_id)}

    def status(self, graph: Graph) -> dict[str, str]:
        """Each node's state when no run is going (see :func:`nodeflow.events.derive`): done, cached,
        stale (ran before with other inputs or params), failed or stopped (with these), idle (never
        ran) or invalid."""
        return self.inspect(graph)[0]

    def inspect(self, graph: Graph) -> tuple[dict[str, str], list[GraphProblem], dict[str, str],
                                              dict[str, Seen]]:
        """States, problems, cache keys and what the history saw of every node, from one pass of
        checking. A disabled node is "disabled" whatever its cache holds."""
        checked = self.check(graph)
        bad = {p.node_id for p in checked.problems if p.blocking}
        keys = {spec.id: None if spec.id in bad else checked.keys.get(spec.id) for spec in graph.nodes}
        seen = self.history.seen(keys)
        result = {node_id: derive(key, key is not None and self.cache.has(key), seen.get(node_id))
                  for node_id, key in keys.items()}
        for spec in graph.nodes:
            if spec.disabled:
                result[spec.id] = "disabled"
        return result, checked.problems, checked.keys, seen

    def needed(self, checked: Checked, target: str | None) -> list[str]:
        """The nodes a run of ``target`` (every node when None) computes or takes from the cache.
        Running everything leaves out the disabled nodes and those that need one; a target that
        needs one is refused by its problem (see :func:`_disabled`)."""
        if target is None:
            return [n for n in checked.order if n not in checked.off]
        if not checked.graph.has_node(target):
            raise KeyError(f"no node with id '{target}' (ids: {', '.join(n.id for n in checked.graph.nodes)})")
        if checked.graph.node(target).disabled:
            raise GraphInvalid([GraphProblem(target, "is disabled: enable it to run it")])
        wanted = nx.ancestors(checked.dag, target) | {target}
        return [n for n in checked.order if n in wanted]

    def planned(self, graph: Graph, target: str | None = None) -> tuple[dict[str, str], dict[str, str]]:
        """:meth:`plan` and the cache keys of the nodes, from one check."""
        checked = self.check(graph, fresh=True)
        needed = self.needed(checked, target)
        _raise_blocking(checked, needed)
        return self._plan(checked, needed, set(), target), checked.keys

    def plan(self, graph: Graph, target: str | None = None, force: Iterable[str] = ()) -> dict[str, str]:
        """Which needed nodes will run and which will come from the cache, without running.
        Raises :class:`GraphInvalid` if the needed part of the graph is invalid, KeyError if
        ``target`` is no node of the graph."""
        checked = self.check(graph, fresh=True)
        needed = self.needed(checked, target)
        _raise_blocking(checked, needed)
        return self._plan(checked, needed, set(force), target)

    def _plan(self, checked: Checked, needed: list[str], force: set[str], target: str | None) -> dict[str, str]:
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

    # cost preview
    def estimate(self, graph: Graph, target: str | None = None,
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
        KeyError as :meth:`plan` does."""
        checked = self.check(graph, fresh=True)
        needed = self.needed(checked, target)
        _raise_blocking(checked, needed)
        actions = self._plan(checked, needed, set(), target)
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
                                 limits=self.limits, path_params=_path_values(node, params))
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
                    nodes[node_id] = {**base, "status": "error", "seconds": None, "error": _node_message(exc)}
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

    # running
    def run(self, graph: Graph, target: str | None = None, force: Iterable[str] = (),
            listeners: Iterable[Callable[[Event], None]] = ()) -> RunReport:
        """Run ``target`` and the ancestors it needs (all nodes if None) on this executor's backend
        (one node at a time in this process when none is set); ``listeners`` hear this run only.
        Raises :class:`GraphInvalid` before running anything if the needed part of the graph is invalid."""
        from nodeflow.scheduler import InProcess, execute

        if not self._run_lock.acquire(blocking=False):
            raise RuntimeError("a run is already in progress; stop it or wait for it to finish")
        try:
            self._stop.clear()
            prepared = self.prepare(graph, target, force, listeners)
            backend = self.backend if self.backend is not None else InProcess(self._stop)
            [report] = execute([prepared], backend)
            if isinstance(backend, InProcess):
                report.outputs = backend.values.get(prepared.run_token, {})
            return report
        finally:
            self._run_lock.release()

    def prepare(self, graph: Graph, target: str | None = None, force: Iterable[str] = (),
                listeners: Iterable[Callable[[Event], None]] = ()) -> Prepared:
        """Check and plan a run and announce it (``run_started``): what the scheduler runs."""
        checked = self.check(graph, fresh=True)
        needed = self.needed(checked, target)
        _raise_blocking(checked, needed)
        force = set(force)
        actions = self._plan(checked, needed, force, target)
        needed = [n for n in needed if n in actions]
        prepared = Prepared(self, checked, needed, actions, target, force, list(listeners))
        prepared.emit(RunStarted(plan=actions, target=target))
        return prepared

    def compute(self, checked: Checked, node_id: str, key: str, emit: Callable[[Event], None], stop_flag: Any,
                force: bool = False, values: dict[str, dict[str, Any]] | None = None,
                fetch: bool = False) -> Outcome:
        """Compute one node: what every backend does with a task (in the manner of Kedro's
        ``runner/task.py``). Inputs come from ``values`` (this process's results of this run), else
        the cache. An input that is not here (kept only in another process's memory) is computed
        first; an unreadable cache entry is set aside (never deleted) and computed again; either is
        told in the outcome's ``inline``. ``fetch``: the node is cached; only load its outputs (a
        cached target whose value the caller wants), computing it again if its entry is unreadable."""
        values = {} if values is None else values
        inline: dict[str, Outcome] = {}
        try:
            if fetch:
                self._output(checked, node_id, values, inline, emit, stop_flag)
                own = inline.pop(node_id, None)
                outcome = own or Outcome("cached", metrics=self.cache.metrics(key), tables=self.cache.tables(key))
                outcome.inline.update(inline)
                return outcome
            inputs = {e.target_port: self._output(checked, e.source, values, inline, emit, stop_flag)[e.source_port]
                      for e in checked.graph.incoming(node_id)}
        except _UnreadableEntry as exc:
            return Outcome("failed", error=str(exc), traceback=exc.trace, inline=inline)
        outcome = self._hold_and_compute(checked, node_id, key, inputs, values, emit, stop_flag, force)
        outcome.inline.update(inline)
        return outcome

    def _output(self, checked: Checked, node_id: str, values: dict[str, dict[str, Any]],
                inline: dict[str, Outcome], emit: Callable[[Event], None], stop_flag: Any) -> dict[str, Any]:
        """A finished node's outputs: from this run, else loaded from the cache on first use, else
        (kept only in another process's memory, or unreadable) computed again here."""
        if node_id in values:
            return values[node_id]
        key = checked.keys[node_id]
        reason = kept = ""
        if self.cache.has(key):
            try:
                values[node_id] = self.cache.get(key, checked.types[node_id])[0]
                return values[node_id]
            except Exception as exc:
                reason = describe_exception(exc)
                aside = self.cache.quarantine(key)
                kept = f"; the damaged entry was kept as {aside}" if aside else ""
                emit(Log(node_id=node_id, message=f"cached outputs could not be read ({reason}){kept}; "
                                                  "computing them again"))
        inputs = {e.target_port: self._output(checked, e.source, values, inline, emit, stop_flag)[e.source_port]
                  for e in checked.graph.incoming(node_id)}
        outcome = self._hold_and_compute(checked, node_id, key, inputs, values, emit, stop_flag, False)
        inline[node_id] = outcome
        if outcome.status not in ("ran", "cached"):
            what = f"cached outputs of '{node_id}' could not be read ({reason}){kept}, and computing them again" \
                if reason else f"computing '{node_id}' here"
            raise _UnreadableEntry(f"{what} {_past(outcome.status)}: {outcome.error}", outcome.traceback)
        if node_id not in values:  # computed meanwhile by another process: take its result
            values[node_id] = self.cache.get(key, checked.types[node_id])[0]
        return values[node_id]

    def _hold_and_compute(self, checked: Checked, node_id: str, key: str, inputs: dict[str, Any],
                          values: dict[str, dict[str, Any]], emit: Callable[[Event], None], stop_flag: Any,
                          force: bool) -> Outcome:
        """Compute one node while holding its cache key: when another process sharing the
        workspace (a second run, a Dask worker) computed the same key meanwhile, take its result."""
        node, params = checked.types[node_id], checked.params[node_id]
        if node.recorded_elsewhere(params):
            return self._take_part(node_id, node, params, inputs, key, values, emit, stop_flag)
        with self.cache.computing(key, node):
            if not force and self.cache.has(key):
                return Outcome("cached", metrics=self.cache.metrics(key), tables=self.cache.tables(key),
                               note="computed meanwhile (the same cache key, here or in another process); "
                                    "using that result")
            return self._compute(node_id, node, params, inputs, key, values, emit, stop_flag)

    def _context(self, node_id: str, node: type[Node], params: Any, key: str, emit: Callable[[Event], None],
                 stop_flag: Any) -> RunContext:
        workspace = self.workspace or Path(tempfile.gettempdir()) / "nodeflow"
        return RunContext(node_id, workspace, device=self.device, seed=int(key[:8], 16), emit=emit,
                          stop_flag=stop_flag, scratch=workspace / "scratch" / key, key=key,
                          allowed_roots=self.allowed_roots, limits=self.limits, path_params=_path_values(node, params))

    def _compute(self, node_id: str, node: type[Node], params: Any, inputs: dict[str, Any], key: str,
                 values: dict[str, dict[str, Any]], emit: Callable[[Event], None], stop_flag: Any) -> Outcome:
        ctx = self._context(node_id, node, params, key, emit, stop_flag)
        scratch_root = ctx.scratch_root
        shutil.rmtree(scratch_root, ignore_errors=True)
        emit(NodeStarted(node_id=node_id, key=key, type=node.type))
        started = time.perf_counter()
        try:
            ctx.check_inputs(node, inputs)
            outputs = node().run(ctx, params, **inputs) or {}
            missing = [p.name for p in node.outputs if not p.optional and p.name not in outputs]
            if missing:
                raise RuntimeError(f"{node.type}.run() returned no value for output(s) {missing}")
            ctx.check_interrupted()
            has_files = scratch_root.exists() and any(scratch_root.iterdir())
            kept = self.cache.put(key, node, outputs, ctx.metrics, scratch_root if has_files else None,
                                  tables=ctx.tables)
            if has_files:
                if kept is not None:
                    shutil.rmtree(scratch_root, ignore_errors=True)  # its files now live in the cache entry
                names = ", ".join(sorted(p.name for p in (kept or scratch_root).iterdir()))
                emit(Log(node_id=node_id, message=f"files written: {names} (in {kept or scratch_root})"))
        except Exception as exc:
            return _ended(exc, ctx, started)
        shutil.rmtree(ctx.workspace / "checkpoints" / key, ignore_errors=True)  # the cached result supersedes them
        values[node_id] = outputs
        return Outcome("ran", time.perf_counter() - started, dict(ctx.metrics), tables=dict(ctx.tables))

    def _take_part(self, node_id: str, node: type[Node], params: Any, inputs: dict[str, Any], key: str,
                   values: dict[str, dict[str, Any]], emit: Callable[[Event], None], stop_flag: Any) -> Outcome:
        """A process that only takes part in a computation another machine records under the same key
        (a machine after the first of a multi-node training, see :meth:`Node.recorded_elsewhere`). Its
        part runs without holding the key, which the recording machine holds while it waits for this
        one; then the result that machine wrote is taken. The outcome says so: "elsewhere"."""
        ctx = self._context(node_id, node, params, key, emit, stop_flag)
        emit(NodeStarted(node_id=node_id, key=key, type=node.type))
        started = time.perf_counter()
        try:
            ctx.check_inputs(node, inputs)
            node().run(ctx, params, **inputs)
            with self.cache.computing(key, node):
                if not self.cache.has(key):
                    raise RuntimeError("this machine's part ran, but the process that records this node "
                                       "(node_rank 0) wrote no result; see its log")
                values[node_id], metrics = self.cache.get(key, node)
        except Exception as exc:
            return _ended(exc, ctx, started)
        return Outcome("elsewhere", time.perf_counter() - started, dict(metrics),
                       note="recorded by another machine under the same cache key")


def _ended(exc: Exception, ctx: RunContext, started: float) -> Outcome:
    """The outcome of a node that raised: stopped on request (resumable when it left a checkpoint), or
    failed, with the message and the param it blames."""
    seconds = time.perf_counter() - started
    if isinstance(exc, Interrupted):
        checkpoints = ctx.workspace / "checkpoints" / ctx.key
        return Outcome("stopped", seconds, dict(ctx.metrics), epoch=ctx.epoch, epochs=ctx.epochs,
                       resumable=checkpoints.is_dir() and any(checkpoints.iterdir()))
    return Outcome("failed", seconds, dict(ctx.metrics), error=_node_message(exc),
                   traceback=traceback.format_exc(), param=getattr(exc, "param", None))


def _past(status: str) -> str:
    return {"stopped": "was stopped", "failed": "failed"}.get(status, status)


def format_seconds(seconds: float | None) -> str:
    """A duration as a person reads it: 0.4 s, 42 s, 6.5 min, 1.2 h."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def format_bytes(count: int | None) -> str:
    if not count:
        return "-"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


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


def _disabled(graph: Graph, order: list[str]) -> tuple[set[str], list[GraphProblem]]:
    """The disabled nodes and every node that needs one (directly or further down), and for each
    of the latter the input that waits: a run leaves them all out, and a run aimed at one of
    them is refused, naming that input."""
    off = {spec.id for spec in graph.nodes if spec.disabled}
    if not off:
        return off, []
    cause: dict[str, str] = {node_id: node_id for node_id in off}  # node -> the disabled node it waits for
    problems: list[GraphProblem] = []
    for node_id in order:
        if node_id in off:
            continue
        for edge in graph.incoming(node_id):
            if edge.source in off:
                root = cause[edge.source]
                why = "which is disabled" if root == edge.source else f"which cannot run while '{root}' is disabled"
                problems.append(DisabledInputError(
                    node_id, f"input '{edge.target_port}' needs {edge.source}.{edge.source_port}, {why}: enable "
                             f"'{root}', or disable this node too", port=edge.target_port, other_node=root))
                off.add(node_id)
                cause[node_id] = root
                break
    return off, problems


def _raise_blocking(checked: Checked, needed: list[str]) -> None:
    blocking = [p for p in checked.problems if p.blocking and (p.node_id is None or p.node_id in needed)]
    if blocking:
        raise GraphInvalid(blocking)


def _with_titles(message: str, nodes: set[str], graph: Graph, types: dict[str, type[Node]]) -> str:
    """``message`` with each of ``nodes`` it quotes by id followed, the first time, by the title
    its card shows: 'formatter' (Resize + crop to 150×150×3)."""
    for node_id in sorted(nodes):
        quoted = f"'{node_id}'"
        if quoted not in message or not graph.has_node(node_id):
            continue
        spec = graph.node(node_id)
        title = card_title(types[node_id], spec.title, spec.params) if node_id in types else spec.title
        if title and title != node_id:
            message = message.replace(quoted, f"{quoted} ({title})", 1)
    return message


def _path_values(node: type[Node], params: Any) -> dict[str, str]:
    """Value -> name of a node's path params, so a path refused at run time names its param."""
    found = {}
    for name in params_paths(node.Params):
        value = getattr(params, name, None)
        if isinstance(value, str):
            found.setdefault(value, name)
    return found


class _UnreadableEntry(Exception):
    def __init__(self, message: str, trace: str) -> None:
        super().__init__(message)
        self.trace = trace


def _node_message(exc: BaseException) -> str:
    if isinstance(exc, ParamProblem):
        where = f"parameter '{exc.param}': " if exc.param else (f"input '{exc.port}': " if exc.port else "")
        return f"{where}{exc}"
    return describe_exception(exc)


def _param_problems(spec: NodeSpec, exc: ValidationError) -> list[GraphProblem]:
    found = []
    for err in exc.errors():
        param = ".".join(str(p) for p in err["loc"]) or None
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown parameter"
        elif "input" in err and err["type"] != "missing":
            msg = f"{msg} (got {err['input']!r})"
        found.append(ParamError(spec.id, msg, param=param))
    return found
