"""One open project for the editor and its HTTP API: the only object they talk to.

A thin façade over the parts that do the work:

- ``document`` (:mod:`nodeflow.document`: edits, undo, saving, autosave, path params held to the
  allowed folders);
- ``queue`` (:mod:`nodeflow.runqueue`): runs and their queue, whose jobs the one scheduler runs on a
  backend: this process, a worker process (``isolate``: a crash cannot take the editor down) or a
  Dask cluster; ``sweeps`` (:class:`nodeflow.sweep.Sweeps`): grids of runs, one job each;
- ``runs`` (:mod:`nodeflow.runs`): history, sweeps, and each node's settled state;
- ``estimator`` (:mod:`nodeflow.estimates`), ``results`` (:mod:`nodeflow.results`) and
  ``predictions`` (:mod:`nodeflow.predictions`): costs, and what finished nodes hold;
- the live state of the nodes, folded from the runs' events by the one reducer
  (:class:`nodeflow.events.Board`), which :meth:`snapshot` lays over what the cache and the store say.

The session hands these parts out rather than repeating their methods; each declares its access
(:mod:`nodeflow.access`), so a viewer's read-only view of the session hands out read-only views of
them.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodeflow.access import guarded, reads, works, writes
from nodeflow.document import AUTOSAVE_KEEP, Document
from nodeflow.edits import EditError
from nodeflow.errors import GraphProblem
from nodeflow.estimates import Estimates
from nodeflow.events import Board, Event, log_line
from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodeflow.limits import NO_LIMITS, JobLimits
from nodeflow.node import Registry
from nodeflow.predictions import PredictionStore
from nodeflow.results import Results
from nodeflow.runqueue import RunQueue, Turns
from nodeflow.runs import RunStore, run_number
from nodeflow.scheduler import InProcess
from nodeflow.sweep import Sweeps
from nodeflow.trying import close_tryer, tryer_of
from nodeflow.worker import EstimateWorker, WorkerBackend

__all__ = ["AUTOSAVE_KEEP", "EditError", "Session", "Sharing"]

#: seconds of quiet after an edit before nodes whose cost is unknown are profiled in the background
PROFILE_DELAY = 1.0


@dataclass(frozen=True)
class Sharing:
    """How a session takes part in a machine that several projects share (built by
    :func:`nodeflow.server.open_project`; a session alone has none). Passed in whole, so the shared
    server adds its rules to a session without subclassing it or patching its parts.

    ``turns``: when this project's jobs may start; ``admit``: raises to refuse new work (a run, a
    sweep) before anything is queued; ``placing``: a queued run's place in the machine's queue (from
    its place in this project's); ``queue_changed``: told the project's queued runs after each run is
    queued or cancelled; ``finished``: told each run id once it is recorded as finished; ``owner``:
    whose project it is; ``estimating``: held while an estimate is measured (raises to refuse one
    past the owner's limit); ``keep_unsaved``: closing keeps unsaved changes as the newest autosave."""

    owner: str
    turns: Turns
    admit: Callable[[], None]
    placing: Callable[[int, int], int | None]
    queue_changed: Callable[[list[tuple[int, ...]]], None]
    finished: Callable[[int], None]
    estimating: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext
    keep_unsaved: bool = True



@guarded
class Session:
    """The open document, its runs, and what the editor shows of them; the parts that do the work are
    handed out (``session.document``, ``session.queue``...), not repeated here.

    Why the session keeps an :class:`Executor` in the editor's process even when runs go to a
    worker process or a cluster: validation, plans and the per-node state the editor polls several
    times a second are answered here, from the catalogue, the cache on disk and the run store, while
    the worker may be busy training for minutes and cannot answer."""

    #: the open graph: edits, undo, saving, autosaves
    document: Document
    #: runs of the document and their queue
    queue: RunQueue
    #: sweeps over the document, one job of the queue each
    sweeps: Sweeps
    #: the run history
    runs: RunStore
    #: what running (part of) the document costs
    estimator: Estimates
    #: what a finished node holds (tables, galleries)
    results: Results
    #: the per-image predictions nodes kept beside their cached results (run comparisons)
    predictions: PredictionStore
    #: the catalogue of node types
    registry: Registry

    def __init__(self, registry: Registry, workspace: Path, graph: Graph | None = None,
                 path: Path | None = None, device: str = "auto", isolate: bool = False,
                 autosave_delay: float | None = None, allowed_roots: list[Path] | None = None,
                 cluster: Any = None, auto_estimate: bool = False, sharing: Sharing | None = None,
                 limits: JobLimits = NO_LIMITS, estimates_apart: bool | None = None) -> None:
        """``isolate`` runs tasks in a worker process; ``cluster`` (a started
        :class:`nodeflow.parallel.DaskBackend`, ``serve --jobs/--scheduler``) runs them on Dask,
        whose worker processes already keep a crash away from the editor. ``auto_estimate``: after an
        edit, and when no run is going, profile in the background the nodes whose cost is not known
        yet (those that never ran), so their cards and the Run confirmation can tell it.
        ``sharing``: the rules of a machine several projects share (:class:`Sharing`); alone, none.
        ``limits``: what each job may use (a shared server's), for the worker and every node.
        ``estimates_apart``: estimates are measured in a process of their own that ends with each one
        (a shared server: the memory a profile took is given back at once); None measures them in a
        process kept for the next one when tasks run in a worker (``isolate``), else here."""
        self.registry = registry
        self.workspace = Path(workspace)
        self.sharing = sharing
        #: whose project this is (None: the person at this machine)
        self.owner = sharing.owner if sharing is not None else None
        #: folders that path params may point into; None = unrestricted (the user's own shell)
        self.allowed_roots = None if allowed_roots is None else [self.workspace, *allowed_roots]
        self.runs = RunStore(self.workspace, placing=sharing.placing if sharing is not None else None)
        self.executor = Executor(registry, self.workspace, device=device, allowed_roots=self.allowed_roots,
                                 history=self.runs, limits=limits)
        self.executor.subscribe(self._tell)
        self.document = Document(graph, path, self.workspace, autosave_delay, registry, self.allowed_roots,
                                 shared=sharing is not None)
        self._lock = threading.RLock()
        self.board = Board()
        self._log: list[dict[str, Any]] = []
        self._listeners: list[Callable[[Event], None]] = []
        #: how many events this session has told (a cheap "has anything happened" for pollers)
        self.events = 0
        stop = threading.Event()
        self.worker = None
        if cluster is not None:
            backend = cluster
        elif isolate:
            self.worker = backend = WorkerBackend(registry, self.workspace, device, self.allowed_roots,
                                                  on_memory=self.executor.cache.set_elsewhere, limits=limits)
        else:
            backend = InProcess(stop)
        self.queue = RunQueue(self.runs, self.executor, backend, stop, self._tell,
                              sharing.turns if sharing is not None else None, document=self.document,
                              admit=sharing.admit if sharing is not None else None,
                              jobs_changed=sharing.queue_changed if sharing is not None else None)
        self.queue.finished_hooks.append(self._log_to_mlflow)
        if sharing is not None:
            self.queue.finished_hooks.append(sharing.finished)
        self.predictions = PredictionStore(self.executor.cache, self.workspace)
        self.sweeps = Sweeps(self.document, self.queue, self.runs, self.executor, self.predictions)
        self.results = Results(self.executor, self.workspace, self.document,
                               graph_of=lambda run: self.runs.graph_of(run_number(run))[0])
        apart = estimates_apart or estimates_apart is None and isolate and cluster is None
        measurer = EstimateWorker(registry, self.workspace, device, self.allowed_roots, limits,
                                  keep=not estimates_apart) if apart else None
        self.estimator = Estimates(self.executor, self.runs, self.document, ahead=self.queue.ahead, worker=measurer,
                                   estimating=sharing.estimating if sharing is not None else contextlib.nullcontext)
        self.auto_estimate = auto_estimate
        self._profile_timer: threading.Timer | None = None
        self.queue.finished_hooks.append(self._after_run)
        self.document.on_change.append(self._profile_later)
        self.mlflow_uri: str | None = None
        self._mlflow: Any = None  # the thread logging finished runs to MLflow, started with the first
        self.queue.jobs_changed()  # runs queued before the last stop wait on the machine's queue
        self.queue.start_next()

    # -- checking ---------------------------------------------------------------------------------
    @reads
    def validate(self) -> list[GraphProblem]:
        """The graph's problems, and each path param that leads outside the allowed folders as the
        disk stands now (a folder swapped for a link since it was set): what a run would refuse."""
        graph = self.document.graph
        return self.executor.validate(graph) + self.document.path_problems(graph)

    @reads
    def input_facts(self, node_id: str) -> dict[str, dict[str, Any]]:
        return self.executor.input_facts(self.document.graph, node_id)

    # -- the session's life -----------------------------------------------------------------------
    @writes
    def free_worker(self) -> None:
        """End the worker process between jobs (a shared machine's next job gets the memory it held);
        the next job starts a new one."""
        if self.worker is not None:
            self.worker.close()
            self.executor.cache.set_elsewhere({})  # what it held in memory is gone with it

    @writes
    def abandon(self) -> None:
        """Stop everything and write nothing more into the workspace: its owner was removed and the
        folder moved away, so an autosave or a new file would make it again."""
        if self._profile_timer is not None:
            self._profile_timer.cancel()
        self.document.drop_pending()
        self.queue.close()
        if self.worker is not None:
            self.worker.close()
        close_tryer(self)
        if self._mlflow is not None:
            self._mlflow.close(timeout=10)

    @writes
    def close(self) -> None:
        """Stop any run and end the worker process; queued runs stay queued for the next start (and on
        a shared machine, unsaved changes as the newest autosave, which the project opens with next)."""
        if self.sharing is not None and self.sharing.keep_unsaved and self.document.dirty:
            self.document.autosave()
        if self._profile_timer is not None:
            self._profile_timer.cancel()
        self.document.flush()
        self.estimator.close()
        self.queue.close()
        if self.worker is not None:
            self.worker.close()
        close_tryer(self)
        if self._mlflow is not None:
            self._mlflow.close(timeout=60)

    # -- trying a trained model (nodeflow.trying) ------------------------------------------------
    @works
    def predict(self, node_id: str, pictures: list[Any], overlay: bool = False, top: int | None = None) -> dict[str, Any]:
        """Classify pictures with the trained model of ``node_id``, in a process of its own (see
        :mod:`nodeflow.trying`); raises TryRefused."""
        return tryer_of(self).predict(self.document.graph, node_id, pictures, overlay, top)

    @reads
    def predicted_overlay(self, name: str) -> bytes | None:
        """A Grad-CAM overlay of a recent :meth:`predict` answer, by its name (kept in memory only)."""
        found = self.__dict__.get("_tryer")
        return found.overlay(name) if found is not None else None

    def _after_run(self, run_id: int) -> None:
        self.estimator.forget_measurements()  # the run measured what it ran
        self._profile_later()

    def _profile_later(self) -> None:
        if not self.auto_estimate:
            return
        if self._profile_timer is not None:
            self._profile_timer.cancel()
        self._profile_timer = threading.Timer(PROFILE_DELAY, self._profile)
        self._profile_timer.daemon = True
        self._profile_timer.start()

    def _profile(self) -> None:
        """Profile the nodes whose cost is unknown, unless a run goes (it would share the machine with
        the profile and distort both); its end asks again."""
        if self.queue.running or self.queue.closing:
            return
        if self.estimator.profile_unknown():
            with self._lock:
                self.events += 1  # the cards have something new to show

    def _log_to_mlflow(self, run_id: int) -> None:
        """Hand a finished run to MLflow's logger thread (:class:`nodeflow.mlflow_log.BackgroundLogger`):
        the run is finished and the next one started before MLflow is asked anything."""
        if not self.mlflow_uri:
            return
        if self._mlflow is None:
            from nodeflow.mlflow_log import BackgroundLogger

            self._mlflow = BackgroundLogger(self.runs, self.mlflow_uri,
                                            log=lambda message: self._note(None, "log", message))
        self._mlflow.submit(run_id)

    # -- what the editor shows --------------------------------------------------------------------
    @reads
    def subscribe(self, listener: Callable[[Event], None]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _tell(self, event: Event) -> None:
        """Every event of this session's runs (and its queue's): folded into the live state, logged."""
        with self._lock:
            self.board.apply(event)
            self.events += 1
            node = self.board.nodes.get(event.node_id) if event.node_id else None
            line = log_line(event, node) if node is not None else None
            if line is not None:
                self._note(event.node_id, *line)
        for listener in list(self._listeners):
            listener(event)

    def _note(self, node: str | None, kind: str, message: str) -> None:
        with self._lock:
            self._log.append({"time": time.time(), "node": node, "kind": kind, "message": message})
            del self._log[:-1000]

    @reads
    def snapshot(self) -> dict[str, Any]:
        """Each node's state for every view (card, minimap, Output tab, Runs panel, API): what the
        cache and the run store say, overlaid with a run of this session that is telling more."""
        document, queue = self.document, self.queue
        graph = document.graph
        states, problems, keys, seen = self.executor.inspect(graph)
        pending, running = queue.pending(), queue.running
        with self._lock:
            nodes = {}
            for spec in graph.nodes:
                state = states[spec.id]
                key = keys.get(spec.id) if state != "invalid" else None
                view = self.board.view(spec.id, state, key, seen.get(spec.id), pending, running,
                                       self.runs.shown_curves, self.executor.cache.metrics)
                view["problems"] = [str(p) for p in problems if p.node_id == spec.id]
                nodes[spec.id] = view
            return {"version": document.version, "running": running, "nodes": nodes, "keys": keys,
                    "problems": [p.to_json() for p in problems], "log": list(self._log[-200:]),
                    "error": queue.last_error, "dirty": document.dirty,
                    "path": str(document.path) if document.path else None}
