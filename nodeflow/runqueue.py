"""The runs of one workspace, one job after another: the queue lives in the run store (so queued runs
outlive the process), and each job is one call of the run driver (:func:`nodeflow.runner.drive`) on
the session's backend. A job is one run, or every branch of a sweep at once, so that ``--jobs N``
trains a sweep's branches side by side.

Every run is recorded, whatever happens, and the driver sets its final status; a worker that dies
under a run leaves it ``interrupted`` and the next job starts. A job takes a turn before its runs are
claimed (:class:`Turns`): a server shared by several people passes its fair queue there, so jobs of
different people take turns on the machine; alone, the turn is always free.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from nodeflow.access import guarded, reads, works, writes
from nodeflow.events import Event, RunQueued
from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodeflow.reports import RunReport
from nodeflow.runner import Job, drive
from nodeflow.runs import RunStore


class Turns(Protocol):
    """Who may run next on a machine several queues share. ``acquire`` answers whether the job of these
    runs may start (without ``blocking``, at once; with it, once its turn comes, or False when it was
    cancelled meanwhile); ``release`` ends the turn; ``leave`` says the queue closes (a job waiting
    for its turn stops waiting: its ``acquire`` answers False)."""

    def acquire(self, run_ids: list[int], blocking: bool) -> bool: ...

    def release(self, run_ids: list[int]) -> None: ...

    def leave(self) -> None: ...


class AlwaysFree:
    """The turns of a queue that shares its machine with no other."""

    def acquire(self, run_ids: list[int], blocking: bool) -> bool:
        return True

    def release(self, run_ids: list[int]) -> None:
        pass

    def leave(self) -> None:
        pass


class HasGraph(Protocol):
    graph: Graph


@guarded
class RunQueue:
    """Queued runs of one store, started one job at a time on a thread of their own.

    ``document``: what :meth:`submit` runs (its graph as it is then); ``admit``: raises to refuse new
    work before anything is queued; ``jobs_changed``: told the queued jobs after each run is queued or
    cancelled (a machine several projects share keeps its own queue of them)."""

    def __init__(self, store: RunStore, executor: Executor, backend: Any, stop_flag: threading.Event,
                 tell: Callable[[Event], None], turns: Turns | None = None, document: HasGraph | None = None,
                 admit: Callable[[], None] | None = None,
                 jobs_changed: Callable[[list[tuple[int, ...]]], None] | None = None) -> None:
        self.document = document
        self._admit = admit
        self._jobs_changed = jobs_changed
        self.store = store
        self.executor = executor
        self.backend = backend
        self._stop = stop_flag
        self.tell = tell
        self.turns: Turns = turns or AlwaysFree()
        #: called with each run id once its run is recorded as finished and the next job started
        #: (e.g. handing it to MLflow's logger)
        self.finished_hooks: list[Callable[[int], None]] = []
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        #: the runs of the job going now (or waiting for its turn, while ``awaiting_turn``)
        self.current: list[int] = []
        self.awaiting_turn = False
        self._cancelling: set[int] = set()
        self._closing = False
        #: node id -> "run" | "cached", per queued or running run
        self.plans: dict[int, dict[str, str]] = {}
        #: the cache keys each queued or running run computes
        self.keys: dict[int, set[str]] = {}
        self.last_report: RunReport | None = None
        self.last_error: str | None = None
        self.run_id: int | None = None

    # -- asking ----------------------------------------------------------------------------------------
    @works
    def run(self, target: str | None = None) -> dict[str, str]:
        """Start a run (or queue it behind the running one); returns the plan (node -> run|cached) at
        once. Raises GraphInvalid (nothing started) if the needed part of the graph is invalid."""
        return self.submit(target)["plan"]

    @works
    def submit(self, target: str | None = None, source: str = "editor") -> dict[str, Any]:
        """Record a run of the open document and start it, or queue it while another runs;
        returns its id, status, queue position and plan."""
        assert self.document is not None, "a queue without a document takes runs through add()"
        self.admit()
        try:
            run_id, plan = self.add(self.document.graph, target, source)  # GraphInvalid: nothing is queued
        finally:
            self.jobs_changed()
        status, position = self.place(run_id)
        return {"id": run_id, "status": status, "position": position, "plan": plan}

    @reads
    def queued(self) -> list[dict[str, Any]]:
        """Queued runs in the order they will run, with their positions."""
        return [self.store.get(i) for i in self.store.queued()]

    @works
    def admit(self) -> None:
        """Raises when new work is refused now (a shared machine's rules); nothing is queued."""
        if self._admit is not None:
            self._admit()

    @works
    def jobs_changed(self) -> None:
        """Tell whoever keeps count (a shared machine's queue) the queued jobs as they are now."""
        if self._jobs_changed is not None:
            self._jobs_changed(self.jobs())

    @works
    def add(self, graph: Graph, target: str | None, source: str) -> tuple[int, dict[str, str]]:
        """Queue a run of ``graph`` and start it when nothing runs; its id and plan. Raises
        GraphInvalid (nothing is queued) if the needed part of the graph is invalid."""
        plan, keys = self.executor.planned(graph, target)
        with self._lock:
            run_id = self.store.create(graph, target, source, status="queued")
            self._announce(run_id, plan, keys, target)
            self.start_next()
            return run_id, plan

    @works
    def add_sweep(self, branches: list[tuple[Graph, dict[str, Any]]], target: str | None,
                  grid: list[tuple[str, list[Any]]], graph_name: str, source: Callable[[int], str],
                  metric: str | None = None) -> int:
        """Queue every branch (graph, its values) of a sweep as one job; returns the sweep id. ``source``
        names the runs' source by the sweep id; ``metric`` is what ranks the branches (None: the default)."""
        planned = [self.executor.planned(graph, target) for graph, _ in branches]
        with self._lock:
            run_ids = [self.store.create(graph, target, "sweep", status="queued") for graph, _ in branches]
            sweep_id = self.store.create_sweep(grid, target, graph_name,
                                               [(params, run_id) for (_, params), run_id in zip(branches, run_ids)],
                                               metric)
            self.store.set_source(run_ids, source(sweep_id))
            for run_id, (plan, keys) in zip(run_ids, planned):
                self._announce(run_id, plan, keys, target)
            self.start_next()
            return sweep_id

    def _announce(self, run_id: int, plan: dict[str, str], keys: dict[str, str], target: str | None) -> None:
        self.plans[run_id] = plan
        self.keys[run_id] = {keys[n] for n, action in plan.items() if action == "run"}
        self.tell(RunQueued(plan=plan, target=target))

    @reads
    def place(self, run_id: int) -> tuple[str, int | None]:
        """A run's status and queue position; a run of the job starting now is running already."""
        with self._lock:
            if run_id in self.current and not self.awaiting_turn:
                return "running", None
        return self.store.place(run_id)

    @reads
    def jobs(self) -> list[tuple[int, ...]]:
        """The queued runs as the jobs they start in, in order: a run alone, or a sweep's queued
        branches together."""
        jobs: dict[str, list[int]] = {}
        for run_id in self.store.queued():
            sweep = self.store.sweep_of(run_id)
            jobs.setdefault(f"run {run_id}" if sweep is None else f"sweep {sweep}", []).append(run_id)
        return [tuple(runs) for runs in jobs.values()]

    @reads
    def ahead(self) -> set[str]:
        """The cache keys that queued or running runs will compute."""
        with self._lock:
            return set().union(*self.keys.values()) if self.keys else set()

    @works
    def cancel(self, *run_ids: int) -> str:
        """Cancel queued runs, or stop the job of a running one (it ends ``cancelled``); what became of
        the last one."""
        status, stopping = "", False
        try:
            for run_id in run_ids:
                status = self._cancel(run_id)
                stopping = stopping or status == "cancelling"
        finally:
            if stopping:  # once every run asked for is marked: a job stopped earlier may end before the
                self.stop()  # rest are, and they would end ``stopped`` (one stop with two names)
            self.jobs_changed()
        return status

    def _cancel(self, run_id: int) -> str:
        status = self.store.cancel(run_id)
        with self._lock:
            if status == "cancelled":
                self.plans.pop(run_id, None)
                self.keys.pop(run_id, None)
            elif status == "running" and run_id in self.current:
                self._cancelling.add(run_id)
                return "cancelling"
        return status

    @works
    def stop(self) -> None:
        self._stop.set()
        self.backend.stop()

    @reads
    @property
    def running(self) -> bool:
        return bool(self.current) and not self.awaiting_turn

    @reads
    def pending(self) -> set[str]:
        """The nodes that queued or running runs will compute."""
        with self._lock:
            return {n for plan in self.plans.values() for n, action in plan.items() if action == "run"}

    @reads
    def wait(self, timeout: float | None = None) -> RunReport | None:
        """Wait for the running job and the jobs queued behind it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (thread := self._thread) is not None and thread.is_alive():
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if deadline is not None and time.monotonic() >= deadline:
                break
        return self.last_report

    @reads
    @property
    def closing(self) -> bool:
        return self._closing

    @writes
    def close(self) -> None:
        """Stop the running job; queued runs stay queued for the next start."""
        self._closing = True
        self.stop()
        self.turns.leave()
        self.wait(10)

    # -- running ---------------------------------------------------------------------------------------
    @works
    def start_next(self) -> None:
        """Start the oldest queued run (with the rest of its sweep) when nothing runs. When its turn is
        free its runs are claimed at once; otherwise they stay queued until the turn comes."""
        with self._lock:
            if self.current or self._closing:
                return
            jobs = self.jobs()
            if not jobs:
                return
            wanted = list(jobs[0])
            self.run_id = wanted[-1]
            self.last_error = None
            if self.turns.acquire(wanted, blocking=False):
                self.current = [i for i in wanted if self.store.claim(i)]
                target, args = self._run_turn, (self.current,)
            else:
                self.current, self.awaiting_turn = wanted, True
                target, args = self._wait_turn, (wanted,)
            self._thread = threading.Thread(target=target, args=args, daemon=True, name="nodeflow-run")
            self._thread.start()

    def _wait_turn(self, wanted: list[int]) -> None:
        """Wait for the job's turn, then claim its runs (those not cancelled meanwhile) and run them."""
        if self.turns.acquire(wanted, blocking=True):
            with self._lock:
                self.current = [] if self._closing else [i for i in wanted if self.store.claim(i)]
                self.awaiting_turn = False
            self._run_turn(self.current)
        else:
            with self._lock:
                self.current, self.awaiting_turn = [], False
            self.start_next()

    def _run_turn(self, claimed: list[int]) -> None:
        try:
            if claimed:
                self._run(claimed)
        finally:
            self.turns.release(claimed)
            if not claimed:
                with self._lock:
                    self.current = []
                    self.start_next()

    def _run(self, run_ids: list[int]) -> None:
        self._stop.clear()
        try:
            jobs = []
            for run_id in run_ids:
                graph, target = self.store.graph_of(run_id)
                jobs.append(Job(graph, target, run_id=run_id))
            drive(self.executor, jobs, self.backend, self.store, self._stop.is_set, keep_going=True,
                  cancelled=lambda run_id: run_id in self._cancelling)
            for job in jobs:
                if job.broke is not None:
                    self.last_error = job.broke
                if job.report is not None:
                    self.last_report = job.report
        finally:
            with self._lock:  # the queue goes on first, whatever the hooks then do
                self._cancelling -= set(run_ids)
                for run_id in run_ids:
                    self.plans.pop(run_id, None)
                    self.keys.pop(run_id, None)
                self.current = []
                self.start_next()
            for run_id in run_ids:
                for hook in self.finished_hooks:
                    hook(run_id)
