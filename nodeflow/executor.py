"""The executor: one object that checks, plans and runs graphs against one catalogue and one
content-keyed cache. No torch, no UI: values are opaque, nodes do the work.

Each part lives in a module of its own, in the manner of Kedro's runner and task: what can be known
of a graph without running it (problems, types, cache keys) in :mod:`nodeflow.checker`; what a run
will do and cost in :mod:`nodeflow.planner`; computing one node in :mod:`nodeflow.task`; which node
runs when, and what became of each, in :mod:`nodeflow.scheduler`; driving runs and deciding their
final status in :mod:`nodeflow.runner`. What can be wrong with a graph lives in
:mod:`nodeflow.errors`, the cache in :mod:`nodeflow.cache`, events and node states in
:mod:`nodeflow.events`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from nodeflow.cache import Cache
from nodeflow.checker import Checked, Checker
from nodeflow.errors import GraphProblem
from nodeflow.events import Event, Memory, RunStarted, Seen, derive
from nodeflow.graph import Graph
from nodeflow.limits import NO_LIMITS, JobLimits
from nodeflow.node import Registry
from nodeflow.planner import Planner, Prepared
from nodeflow.reports import RunReport
from nodeflow.runner import Job, drive
from nodeflow.task import NodeTask, Outcome


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
        return Checker(self.registry, self.path_base, self.allowed_roots, self.workspace).check(graph, fresh)

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

    @property
    def planner(self) -> Planner:
        """Plans runs and estimates them with this executor's cache and settings."""
        return Planner(self.cache, self.workspace, self.device, self.allowed_roots, self.limits)

    def needed(self, checked: Checked, target: str | None) -> list[str]:
        """The nodes a run of ``target`` (every node when None) computes or takes from the cache
        (see :meth:`nodeflow.planner.Planner.needed`)."""
        return self.planner.needed(checked, target)

    def planned(self, graph: Graph, target: str | None = None) -> tuple[dict[str, str], dict[str, str]]:
        """:meth:`plan` and the cache keys of the nodes, from one check."""
        checked = self.check(graph, fresh=True)
        return self.planner.actions(checked, target, set())[1], checked.keys

    def plan(self, graph: Graph, target: str | None = None, force: Iterable[str] = ()) -> dict[str, str]:
        """Which needed nodes will run and which will come from the cache, without running.
        Raises :class:`GraphInvalid` if the needed part of the graph is invalid, KeyError if
        ``target`` is no node of the graph."""
        return self.planner.actions(self.check(graph, fresh=True), target, set(force))[1]

    def estimate(self, graph: Graph, target: str | None = None,
                 stop_flag: threading.Event | None = None) -> dict[str, Any]:
        """What running ``target`` (all nodes if None) would cost, without running the expensive part
        (the rule: :meth:`nodeflow.planner.Planner.estimate`). Nothing is emitted to the run's
        listeners. Raises :class:`GraphInvalid` or KeyError as :meth:`plan` does."""
        return self.planner.estimate(self.check(graph, fresh=True), target, stop_flag)

    # running
    def run(self, graph: Graph, target: str | None = None, force: Iterable[str] = (),
            listeners: Iterable[Callable[[Event], None]] = ()) -> RunReport:
        """Run ``target`` and the ancestors it needs (all nodes if None) on this executor's backend
        (one node at a time in this process when none is set); ``listeners`` hear this run only.
        Raises :class:`GraphInvalid` before running anything if the needed part of the graph is invalid."""
        if not self._run_lock.acquire(blocking=False):
            raise RuntimeError("a run is already in progress; stop it or wait for it to finish")
        try:
            self._stop.clear()
            [job] = drive(self, [Job(graph, target, tuple(force), listeners=list(listeners))])
            assert job.report is not None
            return job.report
        finally:
            self._run_lock.release()

    def prepare(self, graph: Graph, target: str | None = None, force: Iterable[str] = (),
                listeners: Iterable[Callable[[Event], None]] = ()) -> Prepared:
        """Check and plan a run and announce it (``run_started``): what the scheduler runs."""
        checked = self.check(graph, fresh=True)
        force = set(force)
        needed, actions = self.planner.actions(checked, target, force)
        needed = [n for n in needed if n in actions]
        prepared = Prepared(self, checked, needed, actions, target, force, list(listeners))
        prepared.emit(RunStarted(plan=actions, target=target))
        return prepared

    def compute(self, checked: Checked, node_id: str, key: str, emit: Callable[[Event], None], stop_flag: Any,
                force: bool = False, values: dict[str, dict[str, Any]] | None = None,
                fetch: bool = False) -> Outcome:
        """Compute one node: what every backend does with a task (see :meth:`nodeflow.task.NodeTask.compute`)."""
        task = NodeTask(self.cache, self.workspace, self.device, self.allowed_roots, self.limits)
        return task.compute(checked, node_id, key, emit, stop_flag, force, values, fetch)


__all__ = ["Executor", "History"]
