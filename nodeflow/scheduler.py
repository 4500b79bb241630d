"""One scheduler for every run: which node runs when, and the one place that records what became of it.

A run is one or more planned branches (:class:`~nodeflow.planner.Prepared`: one graph and its plan;
a sweep is many). :class:`RunState` turns them into tasks, one per cache key (so branches that need
the same result share one computation), hands each task to a backend once the tasks it needs have
finished, skips what depends on a node that did not finish, and records every node as ran, cached,
failed, skipped or stopped, telling it as a typed event (:mod:`nodeflow.events`).

A backend executes tasks and returns outcomes; it never touches the run's state. Three exist:
:class:`InProcess` (here, one task at a time), :class:`nodeflow.worker.WorkerBackend` (a child
process, so a crash cannot take the editor down) and :class:`nodeflow.parallel.DaskBackend` (a Dask
cluster, many tasks at once). A backend whose tasks share one process's memory (``keeps_values``)
can run a node whose outputs are not persisted as a task of its own; elsewhere such a node is
computed inside the task of each node that consumes it, on that task's worker.

In the manner of Kedro's runner: one ready-set loop, the choice of where nodes run being a backend,
not a second loop.
"""

from __future__ import annotations

import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from nodeflow.errors import describe_exception
from nodeflow.events import Event, Log, NodeFailed, NodeFinished, NodeSkipped, NodeStopped
from nodeflow.reports import NodeReport, RunReport
from nodeflow.task import Outcome

if TYPE_CHECKING:
    from nodeflow.planner import Prepared

#: how long the loop waits for a backend's outcome before it looks at the stop flags again
POLL_SECONDS = 0.05


@dataclass(frozen=True, eq=False)
class Task:
    """One node to compute for one cache key, in the branch (graph and plan) that asked for it."""

    branch: Prepared
    node_id: str
    key: str
    force: bool = False
    resources: dict[str, float] = field(default_factory=dict)
    #: the node is cached: only load its outputs (a cached target whose value the caller wants)
    fetch: bool = False

    @property
    def run(self) -> str:
        return self.branch.run_token


class Backend(Protocol):
    """Where tasks run. ``begin`` and ``end`` bracket a run (a backend may check that it can run it);
    ``free`` is how many more tasks it takes now; ``submit`` starts a task (it may run it at once);
    ``collect`` returns the outcomes that are ready, waiting at most ``timeout`` seconds for one;
    ``stop`` asks running tasks to end at their next check."""

    keeps_values: bool
    #: a cached target's outputs are loaded for the caller (only where they stay in this process)
    wants_outputs: bool

    def begin(self, branches: list[Prepared]) -> None: ...

    def end(self) -> None: ...

    def free(self) -> int: ...

    def submit(self, task: Task, emit: Callable[[Event], None]) -> None: ...

    def collect(self, timeout: float) -> list[tuple[Task, Outcome]]: ...

    def stop(self) -> None: ...


class InProcess:
    """Tasks run here, one at a time, on the scheduler's thread; values stay in this process's
    memory between tasks (and runs), so nodes that are not persisted are tasks of their own."""

    keeps_values = True
    wants_outputs = True

    def __init__(self, stop_flag: Any) -> None:
        self.stop_flag = stop_flag
        self._done: deque[tuple[Task, Outcome]] = deque()
        #: node id -> outputs computed in this run, per branch token
        self.values: dict[str, dict[str, dict[str, Any]]] = {}

    def begin(self, branches: list[Prepared]) -> None:
        pass

    def end(self) -> None:
        pass

    def free(self) -> int:
        return 1

    def submit(self, task: Task, emit: Callable[[Event], None]) -> None:
        values = self.values.setdefault(task.run, {})
        outcome = task.branch.executor.compute(task.branch.checked, task.node_id, task.key, emit, self.stop_flag,
                                               force=task.force, values=values, fetch=task.fetch)
        self._done.append((task, outcome))

    def collect(self, timeout: float) -> list[tuple[Task, Outcome]]:
        done = list(self._done)
        self._done.clear()
        return done

    def stop(self) -> None:
        self.stop_flag.set()


@dataclass
class _Slot:
    """A task and where it stands: waiting, submitted or done."""

    task: Task
    #: keys of the tasks this one needs first
    needs: set[str]
    status: str = "waiting"
    outcome: Outcome | None = None


class RunState:
    """The ready set, skip propagation and the record of every node of every branch of one run."""

    def __init__(self, branches: list[Prepared], keeps_values: bool, fetch_targets: bool = False) -> None:
        self.branches = branches
        self.slots: dict[str, _Slot] = {}
        #: (branch index, node id) -> the key of the task that computes it (as owner or as a twin)
        self.task_of: dict[tuple[int, str], str] = {}
        #: the (branch index, node id) that submitted each task: it alone "ran", the others reuse it
        self.owner: dict[str, tuple[int, str]] = {}
        self.records: list[dict[str, NodeReport]] = [{} for _ in branches]
        self.stopping = False
        self.stopped = False
        for i, b in enumerate(branches):
            self._plan_tasks(i, b, keeps_values)
            if fetch_targets and b.target is not None and b.actions.get(b.target) == "cached":
                key = b.checked.keys[b.target]
                self.task_of[(i, b.target)] = key
                self.slots.setdefault(key, _Slot(Task(b, b.target, key, fetch=True), set()))
                self.owner.setdefault(key, (i, b.target))

    # -- building the tasks ----------------------------------------------------------------------------
    def _plan_tasks(self, i: int, b: Prepared, keeps_values: bool) -> None:
        from nodeflow.cache import persistent

        run = [n for n in b.needed if b.actions[n] == "run"]
        consumers: dict[str, list[str]] = {n: [] for n in run}
        for edge in b.checked.graph.edges:
            if edge.source in consumers and edge.target in b.actions:
                consumers[edge.source].append(edge.target)
        # a value that cannot cross processes is computed with the task of each node that uses it
        inline = set() if keeps_values else {
            n for n in run if not persistent(b.checked.types[n]) and any(c in consumers for c in consumers[n])}
        for node_id in run:
            if node_id in inline:
                continue
            key = b.checked.keys[node_id]
            self.task_of[(i, node_id)] = key
            if key in self.slots:
                continue
            needs = {self.task_of[(i, up)] for up in self._task_inputs(b, node_id, inline)}
            resources = dict(getattr(b.checked.types[node_id], "resources", {}) or {})
            self.slots[key] = _Slot(Task(b, node_id, key, node_id in b.force, resources), needs)
            self.owner[key] = (i, node_id)

    @staticmethod
    def _task_inputs(b: Prepared, node_id: str, inline: set[str]) -> set[str]:
        """The nodes this one needs computed in this run, looking through the inline ones."""
        found: set[str] = set()
        todo = [e.source for e in b.checked.graph.incoming(node_id)]
        while todo:
            source = todo.pop()
            if b.actions.get(source) != "run":
                continue
            if source in inline:
                todo.extend(e.source for e in b.checked.graph.incoming(source))
            else:
                found.add(source)
        return found

    # -- the loop's questions --------------------------------------------------------------------------
    def ready(self, limit: int) -> list[Task]:
        """Tasks whose inputs are computed, marked submitted (at most ``limit``)."""
        self._resolve()
        due: list[Task] = []
        if self.stopping:
            return due
        for slot in self.slots.values():
            if len(due) >= limit:
                break
            if slot.status == "waiting" and all(self._ok(k) for k in slot.needs) and self._wanted(slot):
                slot.status = "submitted"
                due.append(slot.task)
        return due

    def _wanted(self, slot: _Slot) -> bool:
        """Whether some branch still needs this task (not every node asking for it was skipped)."""
        return any(self.task_of.get(k) == slot.task.key and k[1] not in self.records[k[0]] for k in self.task_of)

    def _ok(self, key: str) -> bool:
        slot = self.slots[key]
        return slot.status == "done" and slot.outcome is not None and slot.outcome.ok

    def running(self) -> bool:
        return any(s.status == "submitted" for s in self.slots.values())

    def finished(self) -> bool:
        self._resolve()
        return all(len(rec) == len(b.needed) for rec, b in zip(self.records, self.branches)) and not self.running()

    def stop(self) -> None:
        """No new task starts; what has not started is skipped once what runs has ended."""
        self.stopping = True

    def broken_off(self, exc: Exception, trace: str) -> list[tuple[Task, Outcome]]:
        """A failed outcome, naming ``exc``, for every task handed to a backend that then broke, so
        that each of their nodes is told why instead of staying as it was."""
        error = f"the run's backend broke off: {describe_exception(exc)}"
        return [(s.task, Outcome("failed", error=error, traceback=trace, fatal=True))
                for s in self.slots.values() if s.status == "submitted"]

    def record(self, task: Task, outcome: Outcome) -> None:
        slot = self.slots[task.key]
        slot.status, slot.outcome = "done", outcome
        if outcome.status == "stopped" or outcome.fatal:
            self.stopped = self.stopped or outcome.status == "stopped"
            self.stopping = True
        self._resolve()

    # -- recording -----------------------------------------------------------------------------------
    def _resolve(self) -> None:
        """Record, in each branch's order, every node whose fate is now known."""
        for i, b in enumerate(self.branches):
            rec = self.records[i]
            for node_id in b.needed:
                if node_id in rec:
                    continue
                fate = self._fate(i, b, node_id)
                if fate is not None:
                    self._tell(i, b, node_id, *fate)

    def _fate(self, i: int, b: Prepared, node_id: str) -> tuple[str, Outcome | None] | None:
        """How ``node_id`` of branch ``i`` ended, once that is known: skipped, cached, or the outcome of
        the task that computed it ("task") or of the task it was computed inside ("inline")."""
        rec = self.records[i]
        upstream = [e.source for e in b.checked.graph.incoming(node_id) if e.source in b.actions]
        if any(rec.get(u) is not None and rec[u].status not in ("ran", "cached") for u in upstream):
            return "skipped", None
        key = self.task_of.get((i, node_id))
        if key is not None:
            slot = self.slots[key]
            if slot.status == "done":
                return "task", slot.outcome
            if slot.status == "waiting" and (self.stopping or any(self._failed(k) for k in slot.needs)):
                return "skipped", None
            return None
        if b.actions[node_id] == "cached":
            # told in the branch's order, after what feeds it, as a run one node at a time tells it
            return ("cached", None) if all(u in rec for u in upstream) else None
        own_key = b.checked.keys[node_id]  # computed inside the task of a node that uses it
        for slot in self.slots.values():
            for inner_id, inner in (slot.outcome.inline.items() if slot.outcome is not None else ()):
                if slot.task.branch.checked.keys.get(inner_id) == own_key:
                    return "inline", inner
        consumers = [self.task_of.get((i, e.target)) for e in b.checked.graph.edges if e.source == node_id]
        slots = [self.slots[k] for k in consumers if k is not None]
        if (self.stopping and not self.running()) or (slots and all(s.status == "done" for s in slots)):
            return "skipped", None  # never computed: a stop came first, or every consumer failed first
        return None

    def _failed(self, key: str) -> bool:
        slot = self.slots[key]
        return slot.status == "done" and slot.outcome is not None and not slot.outcome.ok

    def _tell(self, i: int, b: Prepared, node_id: str, how: str, outcome: Outcome | None) -> None:
        key = b.checked.keys[node_id]
        rec = self.records[i]
        if how == "skipped":
            rec[node_id] = NodeReport("skipped")
            b.emit(NodeSkipped(node_id=node_id))
            return
        if how == "cached":
            cache = b.executor.cache
            metrics = cache.metrics(key)
            rec[node_id] = NodeReport("cached", 0.0, metrics, tables=cache.tables(key))
            b.emit(NodeFinished(node_id=node_id, key=key, seconds=0.0, from_cache=True, metrics=metrics))
            return
        assert outcome is not None
        own = how == "inline" or self.owner.get(key) == (i, node_id)
        for inner_id, inner in outcome.inline.items():  # cached entries computed again inside this task
            if inner_id in rec and inner_id != node_id and own:
                rec[inner_id] = self._report(b, inner_id, inner, own=True)
        rec[node_id] = self._report(b, node_id, outcome, own)

    def _report(self, b: Prepared, node_id: str, outcome: Outcome, own: bool) -> NodeReport:
        key = b.checked.keys[node_id]
        if outcome.note:
            b.emit(Log(node_id=node_id, message=outcome.note))
        if outcome.status in ("ran", "cached", "elsewhere"):
            from_cache = outcome.status == "cached" or not own
            seconds = 0.0 if from_cache else outcome.seconds
            b.emit(NodeFinished(node_id=node_id, key=key, seconds=seconds, from_cache=from_cache,
                                metrics=dict(outcome.metrics)))
            return NodeReport("cached" if from_cache else "ran", seconds, dict(outcome.metrics),
                              tables=dict(outcome.tables))
        if outcome.status == "stopped":
            b.emit(NodeStopped(node_id=node_id, key=key, seconds=outcome.seconds, epoch=outcome.epoch,
                               epochs=outcome.epochs, resumable=outcome.resumable))
            return NodeReport("stopped", outcome.seconds, dict(outcome.metrics), "stopped by the user")
        b.emit(NodeFailed(node_id=node_id, key=key, message=outcome.error or "failed", traceback=outcome.traceback,
                          param=outcome.param, seconds=outcome.seconds))
        return NodeReport("failed", outcome.seconds, dict(outcome.metrics), outcome.error)

    def reports(self) -> list[RunReport]:
        out = []
        for b, rec in zip(self.branches, self.records):
            for node_id in b.needed:  # whatever was never told (a stop before it) is skipped
                if node_id not in rec:
                    self._tell(self.branches.index(b), b, node_id, "skipped", None)
            interrupted = self.stopped or any(r.status == "stopped" for r in rec.values()) or (
                self.stopping and any(r.status == "skipped" for r in rec.values())
                and not any(r.status == "failed" for r in rec.values()))
            out.append(b.finish({n: rec[n] for n in b.needed}, interrupted))
        return out


def execute(branches: list[Prepared], backend: Backend,
            stop_requested: Callable[[], bool] | None = None) -> list[RunReport]:
    """Run planned branches together on ``backend``; a report per branch, in order.
    ``stop_requested`` (default: any branch's executor was asked to stop) is looked at between
    outcomes; the backend passes the stop on to what runs."""
    state = RunState(branches, backend.keeps_values, backend.wants_outputs)
    wants_stop = stop_requested or (lambda: any(b.executor.stop_requested for b in branches))
    backend.begin(branches)
    try:
        while True:
            if not state.stopping and wants_stop():
                state.stop()
                state.stopped = True
                backend.stop()
            try:
                for task in state.ready(backend.free()):
                    # a task's events go to its branch (the same node in another branch sharing the task
                    # is told only its outcome)
                    backend.submit(task, task.branch.emit)
                if state.finished():
                    break
                collected = backend.collect(POLL_SECONDS)
            except Exception as exc:  # the backend broke (a bug, a cluster gone): what it had fails with why
                collected = state.broken_off(exc, traceback.format_exc())
                if not collected:
                    raise
            for task, outcome in collected:
                state.record(task, outcome)
                if outcome.fatal:
                    backend.stop()
    finally:
        backend.end()
    return state.reports()


__all__ = ["Backend", "InProcess", "RunState", "Task", "execute"]
