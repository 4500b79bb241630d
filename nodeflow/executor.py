"""Validate a graph against the catalogue and run it node by node, with a content-keyed cache.

No torch, no UI: values are opaque, nodes do the work. The cache key of a node is its type,
its code version, its validated params, its fingerprint and the keys of the outputs feeding it,
so a param change makes exactly that node and its descendants stale.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
from pydantic import ValidationError

from nodeflow.graph import Graph, NodeSpec, atomic_write_text
from nodeflow.node import Event, Interrupted, Node, ParamProblem, Registry, RunContext, UnknownNodeType

# -- problems found before running ------------------------------------------------------------


class GraphProblem(Exception):
    """One thing wrong with a graph, tied to the node (and port or param) to change."""

    def __init__(self, node_id: str | None, message: str, *, port: str | None = None,
                 param: str | None = None, other_node: str | None = None) -> None:
        super().__init__(message)
        self.node_id = node_id
        self.message = message
        self.port = port
        self.param = param
        self.other_node = other_node

    @property
    def where(self) -> str:
        if self.node_id is None:
            return "graph"
        detail = self.param and f".{self.param}" or self.port and f":{self.port}" or ""
        return f"{self.node_id}{detail}"

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": type(self).__name__, "node": self.node_id, "port": self.port, "param": self.param,
                "other_node": self.other_node, "message": self.message}


class GraphCycleError(GraphProblem):
    def __init__(self, loop: list[str]) -> None:
        path = " -> ".join(loop + loop[:1])
        super().__init__(loop[0], f"the graph has a cycle: {path}; remove one of these edges")
        self.loop = loop


class UnknownTypeError(GraphProblem):
    pass


class ParamError(GraphProblem):
    pass


class MissingInputError(GraphProblem):
    pass


class PortTypeError(GraphProblem):
    pass


class UnknownPortError(GraphProblem):
    pass


class GraphInvalid(Exception):
    """Raised instead of running when validation found problems; carries all of them."""

    def __init__(self, problems: list[GraphProblem]) -> None:
        self.problems = problems
        noun = "error" if len(problems) == 1 else "errors"
        super().__init__(f"{len(problems)} {noun} in the graph:\n" + "\n".join(f"  {p}" for p in problems))


class NodeError(Exception):
    """A node failed while running."""

    def __init__(self, node_id: str, cause: BaseException, trace: str = "") -> None:
        self.node_id = node_id
        self.cause = cause
        self.trace = trace
        super().__init__(f"node '{node_id}' failed: {describe_exception(cause)}")


def describe_exception(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, (KeyError,)) and text.startswith("'") and not isinstance(exc, UnknownNodeType):
        text = f"missing key {text}"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- results ---------------------------------------------------------------------------------


@dataclass
class NodeReport:
    status: str  # ran | cached | failed | skipped | interrupted
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"status": self.status, "seconds": round(self.seconds, 4), "metrics": self.metrics}
        if self.error:
            data["error"] = self.error
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
        nodes = {k: NodeReport(v["status"], v.get("seconds", 0.0), v.get("metrics", {}), v.get("error"))
                 for k, v in data["nodes"].items()}
        return cls(ok=data["ok"], nodes=nodes, interrupted=data.get("interrupted", False))

    def failure(self) -> tuple[str, NodeReport] | None:
        return next(((k, v) for k, v in self.nodes.items() if v.status == "failed"), None)


# -- the cache -------------------------------------------------------------------------------

MEMORY_ENTRIES = 64


class Cache:
    """Node outputs by cache key: in memory for this process, on disk for nodes whose outputs
    can be written (every output port type has a codec)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = Path(folder) if folder is not None else None
        self._memory: OrderedDict[str, tuple[dict[str, Any], dict[str, float]]] = OrderedDict()
        #: keys whose values live in another process's memory (a worker's), with their metrics
        self._elsewhere: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()

    def _entry(self, key: str) -> Path | None:
        return self.folder / key[:2] / key if self.folder is not None else None

    def has(self, key: str) -> bool:
        if key in self._memory or key in self._elsewhere:
            return True
        entry = self._entry(key)
        return entry is not None and (entry / "meta.json").is_file()

    def get(self, key: str, node: type[Node]) -> tuple[dict[str, Any], dict[str, float]]:
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                return self._memory[key]
        entry = self._entry(key)
        if entry is None:
            raise KeyError(key)
        meta = json.loads((entry / "meta.json").read_text())
        outputs = {}
        for port in node.outputs:
            if port.name in meta["ports"]:
                assert port.type.codec is not None
                outputs[port.name] = port.type.codec.load(entry / port.name)
        value = (outputs, meta.get("metrics", {}))
        self._remember(key, value)
        return value

    def _remember(self, key: str, value: tuple[dict[str, Any], dict[str, float]]) -> None:
        """Keep the most recently used results in memory; older ones are reloaded from disk (or,
        without a codec, recomputed), so a long editing session does not hoard every model."""
        with self._lock:
            self._memory[key] = value
            self._memory.move_to_end(key)
            while len(self._memory) > MEMORY_ENTRIES:
                self._memory.popitem(last=False)

    def metrics(self, key: str) -> dict[str, float]:
        with self._lock:
            if key in self._memory:
                return dict(self._memory[key][1])
            if key in self._elsewhere:
                return dict(self._elsewhere[key])
        entry = self._entry(key)
        try:
            return dict(json.loads((entry / "meta.json").read_text()).get("metrics", {})) if entry else {}
        except (OSError, ValueError):
            return {}

    def put(self, key: str, node: type[Node], outputs: dict[str, Any], metrics: dict[str, float],
            scratch: Path | None = None) -> Path | None:
        """Keep a node's results; returns where the files of ``scratch`` were moved to, if anywhere."""
        self._remember(key, (outputs, dict(metrics)))
        entry = self._entry(key)
        if entry is None or not persistent(node):
            return None
        entry.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key[:8]}-", dir=entry.parent))
        try:
            for port in node.outputs:
                if port.name in outputs:
                    assert port.type.codec is not None
                    (staging / port.name).mkdir()
                    port.type.codec.save(outputs[port.name], staging / port.name)
            if scratch is not None and scratch.exists():
                shutil.copytree(scratch, staging / "files")
            meta = {"node_type": node.type, "ports": sorted(outputs), "metrics": metrics, "created": time.time()}
            atomic_write_text(staging / "meta.json", json.dumps(meta))
            if entry.exists():
                shutil.rmtree(entry)
            staging.rename(entry)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return entry / "files" if scratch is not None and scratch.exists() else None

    def quarantine(self, key: str) -> Path | None:
        """Move a damaged entry out of the way (never delete it silently); returns where it went."""
        with self._lock:
            self._memory.pop(key, None)
        entry = self._entry(key)
        if entry is None or not entry.exists():
            return None
        aside = entry.with_name(f"{entry.name}.damaged-{int(time.time())}")
        entry.rename(aside)
        return aside

    def memory_metrics(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {key: dict(metrics) for key, (_, metrics) in self._memory.items()}

    def set_elsewhere(self, metrics_by_key: dict[str, dict[str, float]]) -> None:
        """Record what a worker process holds in memory, so status and plans here count it."""
        with self._lock:
            self._elsewhere = dict(metrics_by_key)


def persistent(node: type[Node]) -> bool:
    """Whether a node's outputs are written to disk: unless it opts out, when every output type
    can be saved."""
    return node.persist and all(p.type.codec is not None for p in node.outputs)


# -- the executor ----------------------------------------------------------------------------


@dataclass
class _Checked:
    """What validation learns about a graph, reused by planning and running."""

    graph: Graph
    dag: nx.DiGraph
    problems: list[GraphProblem]
    params: dict[str, Any]
    types: dict[str, type[Node]]
    keys: dict[str, str]
    order: list[str]
    facts: dict[str, dict[str, dict[str, Any]]]


#: how long a status query may reuse the last check of the same graph (runs always check afresh)
CHECK_REUSE_SECONDS = 2.0


class Executor:
    """Runs graphs. One executor keeps one cache; several graphs may share it."""

    def __init__(self, registry: Registry, workspace: Path | None = None, device: str = "auto",
                 listeners: Iterable[Callable[[Event], None]] = (), stop_flag: Any = None) -> None:
        self.registry = registry
        self.workspace = Path(workspace) if workspace is not None else None
        self.device = device
        self.cache = Cache(self.workspace / "cache" if self.workspace is not None else None)
        self._listeners: list[Callable[[Event], None]] = list(listeners)
        # a threading.Event, or a multiprocessing one when the executor lives in a worker process
        self._stop = stop_flag if stop_flag is not None else threading.Event()
        self._run_lock = threading.Lock()
        self._last_keys: dict[str, str] = {}
        self._memo: tuple[Graph, float, _Checked] | None = None

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
    def running(self) -> bool:
        return self._run_lock.locked()

    def remember_run(self, node_id: str, key: str) -> None:
        """Note that ``node_id`` finished with ``key`` elsewhere (in a worker), for stale badges."""
        self._last_keys[node_id] = key

    # validation
    def validate(self, graph: Graph) -> list[GraphProblem]:
        return self._recent_check(graph).problems

    def _recent_check(self, graph: Graph) -> _Checked:
        """The check of ``graph`` made in the last CHECK_REUSE_SECONDS, else a new one. Editors ask
        for status many times a second; a fresh check re-reads every dataset folder's fingerprint.
        Documents are immutable, so the same object means the same graph."""
        memo = self._memo
        if memo is not None and memo[0] is graph and time.monotonic() - memo[1] < CHECK_REUSE_SECONDS:
            return memo[2]
        return self._check(graph)

    def _check(self, graph: Graph) -> _Checked:
        checked = self._check_now(graph)
        self._memo = (graph, time.monotonic(), checked)
        return checked

    def _check_now(self, graph: Graph) -> _Checked:
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
                params[spec.id] = types[spec.id].Params.model_validate(spec.params)
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
        if not cycles:
            keys = self._keys(graph, order, types, params)
            found, facts = self._infer(graph, order, types, params, {p.node_id for p in problems})
            problems.extend(found)
        return _Checked(graph, dag, problems, params, types, keys, order, facts)

    def _edge_problems(self, edge, types: Mapping[str, type[Node]]) -> list[GraphProblem]:
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
                problems.append(ParamError(node_id, str(exc), param=exc.param, port=exc.port,
                                           other_node=exc.other_node))
            except Exception as exc:  # a bug in a node's infer() must not hide the other problems
                broken.add(node_id)
                problems.append(GraphProblem(node_id, f"could not check this node: {describe_exception(exc)}"))
        return problems, facts

    # status and planning
    def keys(self, graph: Graph) -> dict[str, str]:
        return self._recent_check(graph).keys

    def input_facts(self, graph: Graph, node_id: str) -> dict[str, dict[str, Any]]:
        """What static checking knows about each input of a node (e.g. the layers of an incoming
        model), so an editor can offer choices without running anything."""
        checked = self._recent_check(graph)
        return {e.target_port: checked.facts.get(e.source, {}).get(e.source_port, {})
                for e in graph.incoming(node_id)}

    def status(self, graph: Graph) -> dict[str, str]:
        """Each node's state as far as the cache knows: cached, stale (ran before with other
        inputs or params), idle (never ran) or invalid."""
        return self.inspect(graph)[0]

    def inspect(self, graph: Graph) -> tuple[dict[str, str], list[GraphProblem], dict[str, str]]:
        """Status, problems and cache keys of every node, from one pass of checking."""
        checked = self._recent_check(graph)
        bad = {p.node_id for p in checked.problems}
        result = {}
        for spec in graph.nodes:
            key = checked.keys.get(spec.id)
            if spec.id in bad or key is None:
                result[spec.id] = "invalid"
            elif self.cache.has(key):
                result[spec.id] = "cached"
            elif spec.id in self._last_keys:
                result[spec.id] = "stale"
            else:
                result[spec.id] = "idle"
        return result, checked.problems, checked.keys

    def needed(self, checked: _Checked, target: str | None) -> list[str]:
        if target is None:
            return checked.order
        if not checked.graph.has_node(target):
            raise KeyError(f"no node with id '{target}' (ids: {', '.join(n.id for n in checked.graph.nodes)})")
        wanted = nx.ancestors(checked.dag, target) | {target}
        return [n for n in checked.order if n in wanted]

    def plan(self, graph: Graph, target: str | None = None, force: Iterable[str] = ()) -> dict[str, str]:
        """Which needed nodes will run and which will come from the cache, without running."""
        checked = self._check(graph)
        return self._plan(checked, self.needed(checked, target), set(force), target)

    def _plan(self, checked: _Checked, needed: list[str], force: set[str], target: str | None) -> dict[str, str]:
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

    # running
    def run(self, graph: Graph, target: str | None = None, force: Iterable[str] = ()) -> RunReport:
        """Run ``target`` and the ancestors it needs (all nodes if None). Raises
        :class:`GraphInvalid` before running anything if the needed part of the graph is invalid."""
        if not self._run_lock.acquire(blocking=False):
            raise RuntimeError("a run is already in progress; stop it or wait for it to finish")
        try:
            self._stop.clear()
            return self._run(graph, target, set(force))
        finally:
            self._run_lock.release()

    def _run(self, graph: Graph, target: str | None, force: set[str]) -> RunReport:
        checked = self._check(graph)
        needed = self.needed(checked, target)
        blocking = [p for p in checked.problems if p.node_id is None or p.node_id in needed]
        if blocking:
            raise GraphInvalid(blocking)
        actions = self._plan(checked, needed, force, target)
        needed = [n for n in needed if n in actions]
        self._emit(Event("run_started", None, {"target": target, "plan": actions}))
        reports: dict[str, NodeReport] = {}
        values: dict[str, dict[str, Any]] = {}
        interrupted = False
        for node_id in needed:
            node = checked.types[node_id]
            key = checked.keys[node_id]
            incoming = graph.incoming(node_id)
            upstream = [reports[e.source].status for e in incoming if e.source in reports]
            if interrupted or any(status not in ("ran", "cached") for status in upstream):
                reports[node_id] = NodeReport("skipped")
                self._emit(Event("node_skipped", node_id, {}))
                continue
            if actions[node_id] == "cached":
                metrics = self.cache.metrics(key)
                reports[node_id] = NodeReport("cached", 0.0, metrics)
                self._last_keys[node_id] = key
                self._emit(Event("node_finished", node_id, {"seconds": 0.0, "from_cache": True, "metrics": metrics,
                                                            "key": key}))
                continue
            try:
                inputs = self._inputs(values, checked, incoming)
            except _UnreadableEntry as exc:
                reports[node_id] = NodeReport("failed", 0.0, {}, str(exc))
                self._emit(Event("node_failed", node_id, {"message": str(exc), "traceback": exc.trace}))
                continue
            reports[node_id] = self._run_node(node_id, node, checked.params[node_id], inputs, key, values)
            if reports[node_id].status == "interrupted":
                interrupted = True
                self._emit(Event("interrupted", node_id, {"key": key}))
        if target is not None and reports.get(target) and reports[target].status == "cached":
            self._output(values, checked, target)
        ok = all(r.status in ("ran", "cached") for r in reports.values())
        report = RunReport(ok=ok, nodes=reports, interrupted=interrupted, outputs=values)
        self._emit(Event("run_finished", None, report.to_json()))
        return report

    def _inputs(self, values: dict[str, dict[str, Any]], checked: _Checked, incoming: list) -> dict[str, Any]:
        inputs = {}
        for edge in incoming:
            try:
                inputs[edge.target_port] = self._output(values, checked, edge.source)[edge.source_port]
            except Exception as exc:  # damaged on disk: set it aside, say so, and recompute next run
                trace = traceback.format_exc()
                aside = self.cache.quarantine(checked.keys[edge.source])
                kept = f"; the damaged entry was kept as {aside}" if aside else ""
                raise _UnreadableEntry(
                    f"cached outputs of '{edge.source}' could not be read ({describe_exception(exc)}){kept}; "
                    f"run again to recompute '{edge.source}'", trace) from None
        return inputs

    def _output(self, values: dict[str, dict[str, Any]], checked: _Checked, node_id: str) -> dict[str, Any]:
        """A finished node's outputs: from this run, else loaded from the cache on first use."""
        if node_id not in values:
            values[node_id] = self.cache.get(checked.keys[node_id], checked.types[node_id])[0]
        return values[node_id]

    def _run_node(self, node_id: str, node: type[Node], params: Any, inputs: dict[str, Any], key: str,
                  values: dict[str, dict[str, Any]]) -> NodeReport:
        workspace = self.workspace or Path(tempfile.gettempdir()) / "nodeflow"
        scratch_root = workspace / "scratch" / key
        if scratch_root.exists():
            shutil.rmtree(scratch_root, ignore_errors=True)
        ctx = RunContext(node_id, workspace, device=self.device, seed=int(key[:8], 16), emit=self._emit,
                         stop_flag=self._stop, scratch=scratch_root, key=key)
        self._emit(Event("node_started", node_id, {"type": node.type, "key": key}))
        started = time.perf_counter()
        try:
            outputs = node().run(ctx, params, **inputs) or {}
            missing = [p.name for p in node.outputs if not p.optional and p.name not in outputs]
            if missing:
                raise RuntimeError(f"{node.type}.run() returned no value for output(s) {missing}")
            ctx.check_interrupted()
            has_files = scratch_root.exists() and any(scratch_root.iterdir())
            kept = self.cache.put(key, node, outputs, ctx.metrics, scratch_root if has_files else None)
            if has_files:
                if kept is not None:
                    shutil.rmtree(scratch_root, ignore_errors=True)  # its files now live in the cache entry
                names = ", ".join(sorted(p.name for p in (kept or scratch_root).iterdir()))
                self._emit(Event("log", node_id, {"message": f"files written: {names} (in {kept or scratch_root})"}))
        except Interrupted:
            self._last_keys[node_id] = key  # shown as stale: it needs a run (and may resume)
            seconds = time.perf_counter() - started
            return NodeReport("interrupted", seconds, dict(ctx.metrics), "interrupted by the user")
        except Exception as exc:
            seconds = time.perf_counter() - started
            error = NodeError(node_id, exc, traceback.format_exc())
            message = _node_message(exc)
            self._emit(Event("node_failed", node_id, {"message": message, "traceback": error.trace, "key": key,
                                                      "param": getattr(exc, "param", None),
                                                      "seconds": seconds}))
            return NodeReport("failed", seconds, dict(ctx.metrics), message)
        seconds = time.perf_counter() - started
        shutil.rmtree(workspace / "checkpoints" / key, ignore_errors=True)  # the cached result supersedes them
        values[node_id] = outputs
        self._last_keys[node_id] = key
        self._emit(Event("node_finished", node_id, {"seconds": seconds, "from_cache": False,
                                                    "metrics": dict(ctx.metrics), "key": key}))
        return NodeReport("ran", seconds, dict(ctx.metrics))


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


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
