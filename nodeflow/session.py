"""One open project for the editor and its HTTP API: the only object they talk to.

A thin façade over the parts that do the work:

- the document (:mod:`nodeflow.document`: undo, autosave), changed by :func:`nodeflow.edits.apply`;
- the run queue (:mod:`nodeflow.runqueue`), whose jobs the one scheduler runs on a backend: this
  process, a worker process (``isolate``: a crash cannot take the editor down) or a Dask cluster;
- the run store (:mod:`nodeflow.runs`): history, sweeps, and each node's settled state;
- the live state of the nodes, folded from the runs' events by the one reducer
  (:mod:`nodeflow.events`), which :meth:`snapshot` lays over what the cache and the store say.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodeflow import edits
from nodeflow.access import guarded, reads, works, writes
from nodeflow.document import AUTOSAVE_KEEP, Document
from nodeflow.edits import EditError
from nodeflow.errors import GraphProblem, ParamError
from nodeflow.estimates import Estimates
from nodeflow.events import ACTIVE, SETTLED, UNFINISHED, Board, Event, NodeState, Seen
from nodeflow.executor import Executor, RunReport
from nodeflow.graph import Graph
from nodeflow.limits import NO_LIMITS, JobLimits
from nodeflow.node import Registry
from nodeflow.paths import path_problems, settle_file, settle_graph, started_in
from nodeflow.predictions import PredictionStore
from nodeflow.recent import remember
from nodeflow.results import Results
from nodeflow.runqueue import RunQueue, Turns
from nodeflow.runs import RunNotFound, RunStore, run_number
from nodeflow.scheduler import InProcess
from nodeflow.trying import close_tryer
from nodeflow.worker import EstimateWorker, WorkerBackend

__all__ = ["AUTOSAVE_KEEP", "EditError", "Session", "Sharing", "SweepNotFound"]

#: how many stored curves (per cache key) a session keeps at hand for cached nodes' Output tabs
STORED_CURVES = 256
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


class SweepNotFound(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


@guarded
class Session:
    """The open document, its runs, and what the editor shows of them.

    Why the session keeps an :class:`Executor` in the editor's process even when runs go to a
    worker process or a cluster: validation, plans and the per-node state the editor polls several
    times a second are answered here, from the catalogue, the cache on disk and the run store, while
    the worker may be busy training for minutes and cannot answer."""

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
        graph, settled = self._settle_paths(graph, path)
        self.document = Document(graph, path, self.workspace, autosave_delay)
        #: said to each tab that opens until the document is saved or another one is opened
        #: ("Reopened graph.json with unsaved edits from ...", a path rewritten by _settle_paths)
        self.notice: str | None = settled
        self._lock = threading.RLock()
        self.board = Board()
        self._log: list[dict[str, Any]] = []
        self._listeners: list[Callable[[Event], None]] = []
        #: how many events this session has told (a cheap "has anything happened" for pollers)
        self.events = 0
        self._stored: dict[str, dict[str, Any]] = {}
        stop = threading.Event()
        self.worker = None
        if cluster is not None:
            backend = cluster
        elif isolate:
            self.worker = backend = WorkerBackend(registry, self.workspace, device, self.allowed_roots,
                                                  on_memory=self.executor.cache.set_elsewhere, limits=limits)
        else:
            backend = InProcess(stop)
        self.run_queue = RunQueue(self.runs, self.executor, backend, stop, self._tell,
                                  sharing.turns if sharing is not None else None)
        self.run_queue.finished_hooks.append(self._log_to_mlflow)
        if sharing is not None:
            self.run_queue.finished_hooks.append(sharing.finished)
        self.results = Results(self.executor, self.workspace)
        apart = estimates_apart or estimates_apart is None and isolate and cluster is None
        measurer = EstimateWorker(registry, self.workspace, device, self.allowed_roots, limits,
                                  keep=not estimates_apart) if apart else None
        self.estimator = Estimates(self.executor, self.runs, ahead=self.run_queue.ahead, worker=measurer)
        self.auto_estimate = auto_estimate
        self._profile_timer: threading.Timer | None = None
        self.run_queue.finished_hooks.append(self._after_run)
        self.document.on_change.append(self._profile_later)
        self.mlflow_uri: str | None = None
        self._mlflow: Any = None  # the thread logging finished runs to MLflow, started with the first
        self._queue_changed()  # runs queued before the last stop wait on the machine's queue
        self.run_queue.start_next()

    # -- the document -----------------------------------------------------------------------------
    @reads
    @property
    def graph(self) -> Graph:
        return self.document.graph

    @reads
    @property
    def version(self) -> int:
        return self.document.version

    @reads
    @property
    def dirty(self) -> bool:
        return self.document.dirty

    @dirty.setter
    def dirty(self, value: bool) -> None:
        self.document.dirty = value

    @reads
    @property
    def path(self) -> Path | None:
        return self.document.path

    @path.setter
    def path(self, value: Path | None) -> None:
        self.document.path = value

    @reads
    @property
    def can_undo(self) -> bool:
        return self.document.can_undo

    @reads
    @property
    def can_redo(self) -> bool:
        return self.document.can_redo

    @reads
    @property
    def autosave_delay(self) -> float | None:
        return self.document.autosave_delay

    @autosave_delay.setter
    def autosave_delay(self, value: float | None) -> None:
        self.document.autosave_delay = value

    @reads
    @property
    def autosave_folder(self) -> Path:
        return self.document.autosave_folder

    @writes
    def replace(self, graph: Graph, record: bool = True) -> None:
        self._check_paths(graph)
        self.document.change(graph, record)

    @writes
    def edit(self, op: str, **args: Any) -> Graph:
        """Apply one edit (see :mod:`nodeflow.edits`); all-or-nothing, recorded for undo."""
        return self.edits([{"op": op, **args}])

    @writes
    def edits(self, ops: list[Any]) -> Graph:
        """Apply several edits (their JSON form, or :mod:`nodeflow.edits` records) as one undo step
        (a bulk move, a paste, deleting a selection). Every path param of every node is checked
        again afterwards, whatever the edit touched: a node removed and added back with the same
        id, or given another type, gets no pass."""
        with self.document.lock:
            graph = edits.apply(self.graph, ops, self.registry)
            self._check_paths(graph)
            self.document.change(graph)
            return graph

    @writes
    def undo(self) -> bool:
        return self.document.undo()

    @writes
    def redo(self) -> bool:
        return self.document.redo()

    @writes
    def save(self, path: Path | None = None) -> Path:
        try:
            saved = self.document.save(path)
        except ValueError as exc:
            raise EditError(str(exc)) from None
        self.notice = None
        return saved

    @writes
    def open(self, path: Path) -> None:
        self.load(Graph.load(path), Path(path))

    @writes
    def load(self, graph: Graph, path: Path | None = None) -> None:
        """Make ``graph`` the open document (undoable), saved at ``path`` (None: not saved yet)."""
        graph, settled = self._settle_paths(graph, path)
        self.replace(graph)
        self.document.path = path
        self.document.dirty = False
        self.notice = settled
        remember(self.workspace, path, graph.name, None, False)

    @writes
    def save_group(self, group_id: str) -> str:
        """Save a group of the open graph to the project's palette of groups (KeyError: no such
        group); returns the name it shows under."""
        from nodeflow import fragments

        return fragments.save_group(self.workspace, self.graph, group_id)

    @writes
    def autosave(self) -> Path:
        return self.document.autosave()

    @reads
    def autosaves(self) -> list[Path]:
        return self.document.autosaves()

    def _check_paths(self, graph: Graph) -> None:
        """Every path param of every node of ``graph`` (as its current type declares them) must lie
        in the allowed folders; raises EditError naming each one that does not."""
        problems = self._path_problems(graph)
        if problems:
            raise EditError("; ".join(str(p) for p in problems))

    def _path_problems(self, graph: Graph) -> list[GraphProblem]:
        """Path params that lead outside the allowed folders; relative ones are taken from the
        workspace, as every run takes them, whatever folder the editor was started from."""
        if self.allowed_roots is None:
            return []
        # what the person can do about it: a shared server's project uses its own folder only
        hint = ("; a project on a shared server reads and writes its own folder only: upload the data into it"
                if self.sharing is not None else
                "; to use another folder, start the editor with --allow-root FOLDER (repeatable)")
        return [ParamError(spec.id, why + hint, param=name) for spec in graph.nodes if spec.type in self.registry
                for name, why in path_problems(self.registry.get(spec.type).Params, spec.params,
                                               self.allowed_roots, self.workspace)]

    def _settle_paths(self, graph: Graph | None, path: Path | None) -> tuple[Graph | None, str | None]:
        """A graph opened here whose relative paths were written when they started at the folder the
        editor was started in: those that name nothing in the workspace but name a folder from there
        are rewritten (:func:`nodeflow.paths.settle_graph`, within the allowed folders when there are
        some), its file ``path`` too, once; and the notice that tells the user (None: nothing was)."""
        if graph is None:
            return graph, None
        old_base = started_in()
        graph, rewritten = settle_graph(graph, self.registry, self.workspace, old_base, self.allowed_roots)
        if not rewritten:
            return graph, None
        saved = settle_file(path, self.registry, self.workspace, old_base, self.allowed_roots) if path else ""
        return graph, " ".join([*(r.note + "." for r in rewritten), saved]).strip()

    # -- checking and costs -----------------------------------------------------------------------
    @reads
    def validate(self) -> list[GraphProblem]:
        """The graph's problems, and each path param that leads outside the allowed folders as the
        disk stands now (a folder swapped for a link since it was set): what a run would refuse."""
        graph = self.graph
        return self.executor.validate(graph) + self._path_problems(graph)

    @reads
    def input_facts(self, node_id: str) -> dict[str, dict[str, Any]]:
        return self.executor.input_facts(self.graph, node_id)

    @works
    def estimate(self, target: str | None = None) -> dict[str, Any]:
        """Measure what running ``target`` (or everything) would cost (:meth:`Estimates.estimate`); on a
        shared machine, counted against its owner's estimates at once while it is measured."""
        with self.sharing.estimating() if self.sharing is not None else contextlib.nullcontext():
            return self.estimator.estimate(self.graph, target)

    @reads
    def price(self, target: str | None = None) -> dict[str, Any]:
        """What running ``target`` costs as far as it is known now, at once (:meth:`Estimates.price`)."""
        return self.estimator.price(self.graph, target)

    @reads
    def estimates(self, keys: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
        """Each stale node's price, for its card (:meth:`Estimates.prices`)."""
        return self.estimator.prices(self.graph, keys)

    # -- running ------------------------------------------------------------------------------------
    @reads
    @property
    def running(self) -> bool:
        return self.run_queue.running

    @reads
    @property
    def last_report(self) -> RunReport | None:
        return self.run_queue.last_report

    @reads
    @property
    def last_error(self) -> str | None:
        return self.run_queue.last_error

    @reads
    @property
    def run_id(self) -> int | None:
        return self.run_queue.run_id

    @works
    def run(self, target: str | None = None) -> dict[str, str]:
        """Start a run (or queue it behind the running one); returns the plan (node -> run|cached) at
        once. Raises GraphInvalid (nothing started) if the needed part of the graph is invalid."""
        return self.submit(target)["plan"]

    @works
    def submit(self, target: str | None = None, source: str = "editor") -> dict[str, Any]:
        """Record a run of the current document and start it, or queue it while another runs;
        returns its id, status, queue position and plan."""
        self._admit()
        try:
            run_id, plan = self.run_queue.add(self.graph, target, source)  # GraphInvalid: nothing is queued
        finally:
            self._queue_changed()
        status, position = self.run_queue.place(run_id)
        return {"id": run_id, "status": status, "position": position, "plan": plan}

    def _admit(self) -> None:
        if self.sharing is not None:
            self.sharing.admit()

    def _queue_changed(self) -> None:
        if self.sharing is not None:
            self.sharing.queue_changed(self.run_queue.jobs())

    @works
    def cancel(self, run_id: int) -> str:
        """Cancel a queued run, or stop the running one (it ends ``cancelled``)."""
        try:
            return self.run_queue.cancel(run_id)
        finally:
            self._queue_changed()

    @reads
    def queue(self) -> list[dict[str, Any]]:
        """Queued runs in the order they will run, with their positions."""
        return [self.runs.get(i) for i in self.runs.queued()]

    @works
    def stop(self) -> None:
        self.run_queue.stop()

    @reads
    def wait(self, timeout: float | None = None) -> RunReport | None:
        """Wait for the running run and the runs queued behind it."""
        return self.run_queue.wait(timeout)

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
        self.run_queue.close()
        if self.worker is not None:
            self.worker.close()
        if self._mlflow is not None:
            self._mlflow.close(timeout=10)

    @writes
    def close(self) -> None:
        """Stop any run and end the worker process; queued runs stay queued for the next start (and on
        a shared machine, unsaved changes as the newest autosave, which the project opens with next)."""
        if self.sharing is not None and self.sharing.keep_unsaved and self.dirty:
            self.autosave()
        if self._profile_timer is not None:
            self._profile_timer.cancel()
        self.document.flush()
        self.estimator.close()
        self.run_queue.close()
        if self.worker is not None:
            self.worker.close()
        close_tryer(self)
        if self._mlflow is not None:
            self._mlflow.close(timeout=60)

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
        if self.running or self.run_queue.closing:
            return
        if self.estimator.profile_unknown(self.graph):
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

    # -- sweeps (nodeflow.sweep): one job of the queue, each branch a run tagged with the sweep -------
    @works
    def submit_sweep(self, grid: list[tuple[str, list[Any]]], target: str | None = None,
                     metric: str | None = None) -> dict[str, Any]:
        """Check a grid over the open document (every value against its param, every branch as a
        whole; a GridError names what is wrong and nothing is queued), then queue its branches as one
        job behind whatever runs now; ``metric`` (``NODE.METRIC``) ranks them, by default a validation
        metric. Returns the sweep as :meth:`sweep` does."""
        from nodeflow import sweep

        def confined(graph: Graph, values: dict[str, Any]) -> Graph:
            """The values set, with path params held to the allowed folders as an edit's are (an
            EditError, a ValueError, which ``expand`` turns into a GridError naming the param)."""
            result = sweep.with_values(graph, values)
            self._check_paths(result)
            return result

        self._admit()
        base = self.graph
        if target is not None and not base.has_node(target):
            raise sweep.GridError(f"target: no node '{target}'", "target")
        sweep.check_metric(base, metric)
        branches = sweep.expand(base, grid, self.executor, target, assign=confined)
        try:
            sweep_id = self.run_queue.add_sweep([(b.graph, b.params) for b in branches], target, grid, base.name,
                                                sweep.source_tag, metric)
        finally:
            self._queue_changed()
        return self.sweep(sweep_id)

    def _sweep_record(self, sweep_id: int | str) -> dict[str, Any]:
        try:
            return self.runs.sweep(sweep_id)
        except RunNotFound as exc:
            raise SweepNotFound(str(exc)) from None

    @reads
    def sweep(self, sweep_id: int | str, curves: bool = False) -> dict[str, Any]:
        """A sweep's branches (values, run, status, the target's main metric, time), the best one and
        its progress (see :func:`nodeflow.sweep.summary`); ``curves`` adds each branch's curves (for a
        branch that came from the cache, those of the run that computed its result)."""
        from nodeflow import sweep

        record = self._sweep_record(sweep_id)
        runs = [self.runs.get(b["run"]) for b in record["branches"]]
        data = sweep.summary(record, runs, self.registry, self.predictions.of)
        if curves:
            for branch, run in zip(data["branches"], runs):
                branch["curves"] = self.runs.run_curves(run)
        return data

    @works
    def cancel_sweep(self, sweep_id: int | str) -> dict[str, Any]:
        """Cancel the sweep's queued branches, then stop its running ones (they end ``cancelled``)."""
        record = self._sweep_record(sweep_id)
        try:
            for branch in record["branches"]:
                self.run_queue.cancel(branch["run"])
        finally:
            self._queue_changed()
        return self.sweep(sweep_id)

    # -- a finished node's details ------------------------------------------------------------------
    @reads
    @property
    def predictions(self) -> PredictionStore:
        """The per-image predictions nodes kept beside their cached results (run comparisons)."""
        return PredictionStore(self.executor.cache, self.workspace)

    @reads
    @property
    def overlay_folder(self) -> Path:
        return self.results.overlay_folder

    @reads
    def node_tables(self, node_id: str) -> dict[str, Any]:
        return self.results.tables(self.graph, node_id)

    @works
    def cell_gallery(self, node_id: str, true: str, predicted: str, page: int = 1,
                     per_page: int = 12, run: int | str | None = None) -> dict[str, Any]:
        """One page of a confusion cell's images, drawing the Grad-CAM overlays not drawn yet; of
        the graph open now, or with ``run`` of the graph that run ran (a compared run's flipped
        image: its stored result, whatever was edited since; RunNotFound, a LookupError)."""
        return self.results.cell_gallery(self._graph_of(run), node_id, true, predicted, page, per_page)

    @reads
    def drawn_cell_gallery(self, node_id: str, true: str, predicted: str, page: int = 1,
                           per_page: int = 12, run: int | str | None = None) -> dict[str, Any]:
        """The same page with only the overlays drawn before: nothing is drawn or written."""
        return self.results.cell_gallery(self._graph_of(run), node_id, true, predicted, page, per_page,
                                         draw=False)

    @works
    def predict(self, node_id: str, pictures: list[Any], overlay: bool = False, top: int | None = None) -> dict[str, Any]:
        """Classify pictures with the trained model of ``node_id``, in a process of its own (see
        :mod:`nodeflow.trying`); raises TryRefused."""
        from nodeflow.trying import tryer_of

        return tryer_of(self).predict(self.graph, node_id, pictures, overlay, top)

    @reads
    def predicted_overlay(self, name: str) -> bytes | None:
        """A Grad-CAM overlay of a recent :meth:`predict` answer, by its name (kept in memory only)."""
        found = self.__dict__.get("_tryer")
        return found.overlay(name) if found is not None else None

    def _graph_of(self, run: int | str | None) -> Graph:
        return self.graph if run is None else self.runs.graph_of(run_number(run))[0]

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
            if event.kind in ("log", "node_failed", "node_stopped", "node_finished") and event.node_id:
                node = self.board.nodes[event.node_id]
                self._note(event.node_id, "stopped" if event.kind == "node_stopped" else event.kind,
                           event.data.get("message") or _summary(event, node))
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
        graph = self.graph
        states, problems, keys, seen = self.executor.inspect(graph)
        pending = self.run_queue.pending()
        with self._lock:
            nodes = {}
            for spec in graph.nodes:
                state = states[spec.id]
                key = keys.get(spec.id) if state != "invalid" else None
                view = self._view(spec.id, state, key, seen.get(spec.id), pending)
                view["problems"] = [str(p) for p in problems if p.node_id == spec.id]
                nodes[spec.id] = view
            return {"version": self.version, "running": self.running, "nodes": nodes, "keys": keys,
                    "problems": [p.to_json() for p in problems], "log": list(self._log[-200:]),
                    "error": self.last_error, "dirty": self.dirty, "path": str(self.path) if self.path else None}

    def _view(self, node_id: str, state: str, key: str | None, seen: Seen | None, pending: set[str]) -> dict:
        live = self.board.get(node_id)
        if live is not None and (node_id in pending and live.state in ACTIVE or live.state == "running" and self.running):
            return _with_words(copy.deepcopy(live.to_json()), live)  # queued or running now
        if live is not None and key is not None and live.key == key and live.state in SETTLED and state != "disabled":
            return _with_words(copy.deepcopy(live.to_json()), live)  # what this session's latest run of it told
        shown = NodeState(state=state, key=key)
        if seen is not None and seen.same is not None and state != "disabled":  # what the store kept of it
            for name in ("error", "param", "epoch", "epochs", "resumable", "seconds", "metrics"):
                setattr(shown, name, getattr(seen.same, name))
        if state in ("done", "cached", *UNFINISHED) and key is not None:
            stored = self._stored_curves(key, None if state in ("done", "cached") else node_id)
            shown.series, shown.started, shown.finished = stored["series"], stored["started"], stored["finished"]
            if not shown.metrics and state in ("done", "cached"):  # a result no run of this store recorded
                shown.metrics = self.executor.cache.metrics(key)  # (an older store, a copied cache)
        view = _with_words(shown.to_json(), shown)
        if live is not None and live.previous and live.state in ACTIVE:
            view["previous"] = live.previous
        return view

    def _stored_curves(self, key: str, node_id: str | None = None) -> dict[str, Any]:
        """The curves of the run that computed ``key`` (what a cached node's Output tab shows); with
        ``node_id``, of the run that left that node stopped, failed or interrupted under ``key``: its
        curves up to where it ended, after a restart as before it. Kept at hand by run, as a later run
        may stop the node again under the same key."""
        run_id = None if node_id is None else self.runs.settled_run(node_id, key)
        if node_id is not None and run_id is None:
            return {"series": {}, "started": None, "finished": None}
        held = key if node_id is None else f"run {run_id} {node_id}"  # never a cache key: those have no spaces
        found = self._stored.get(held)
        if found is None:
            found = self.runs.result_curves(key) if run_id is None else self.runs.node_curves(run_id, node_id)
            if len(self._stored) >= STORED_CURVES:
                self._stored.pop(next(iter(self._stored)))
            self._stored[held] = found
        return found


def _with_words(view: dict[str, Any], state: NodeState) -> dict[str, Any]:
    view["words"] = state.words()
    view["error_param"] = state.param
    view["run"] = {"started": state.started, "finished": state.finished}
    return view


def _summary(event: Event, node: NodeState) -> str:
    if event.kind == "node_stopped":
        where = f" at epoch {node.epoch}/{node.epochs}" if node.epochs else ""
        resume = ", resumes from its checkpoint" if node.resumable else ""
        return f"stopped by the user{where}{resume}; finished nodes stay cached"
    if event.kind == "node_finished":
        return "cached" if event.data.get("from_cache") else f"done in {event.data.get('seconds', 0):.2f}s"
    return event.kind
