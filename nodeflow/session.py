"""One open graph, its executor and its cache: the only object the editor talks to.

Edits go through :meth:`Session.edit` (recorded for undo/redo), runs happen on a worker thread
so the caller's event loop stays free, and :meth:`Session.snapshot` gives the editor everything
it shows (per-node state, progress, metric series, previews, errors) as plain JSON.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from nodeflow.edits import (AddNode, Connect, Disable, Disconnect, Group, Move, RemoveNode, Rename, SetGroup, SetParams,
                            Ungroup, parse_ops)
from nodeflow.errors import GraphInvalid, GraphProblem, ParamError, describe_exception
from nodeflow.executor import Executor, RunReport
from nodeflow.files import atomic_write_text
from nodeflow.graph import Edge, Graph, NodeSpec, Position, fresh_id
from nodeflow.node import Event, ParamProblem, Registry, RunContext
from nodeflow.paths import path_problems
from nodeflow.predictions import PredictionStore
from nodeflow.recent import AUTOSAVE_FOLDER, remember
from nodeflow.runs import RunRecorder, RunStore, graph_facts, report_status
from nodeflow.worker import WorkerProcess

HISTORY_LIMIT = 200
SERIES_LIMIT = 5000
AUTOSAVE_KEEP = 10


class EditError(ValueError):
    """An edit the document cannot take; nothing was changed."""


class SweepNotFound(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


class Session:
    """The open document, its undo history, and its runs.

    Why the session keeps an :class:`Executor` in the editor's process even when runs go to a
    worker process: validation, plans and the per-node status the editor polls several times a
    second are answered here, from the catalogue and the cache on disk, while the worker may be
    busy training for minutes and cannot answer; the worker's events keep this executor's record
    of the last run keys (stale badges) and of the values it holds in memory. Without a worker
    (``isolate=False``: tests, ``--in-process``) the same executor runs the graphs itself.

    With a ``dispatcher`` (``nodeflow serve --jobs N`` / ``--scheduler ADDR``, see
    :mod:`nodeflow.parallel`) that executor hands the nodes of each run to the Dask cluster, whose
    worker processes already keep a crash away from the editor, so no worker process of our own
    is started."""

    def __init__(self, registry: Registry, workspace: Path, graph: Graph | None = None,
                 path: Path | None = None, device: str = "auto", isolate: bool = False,
                 autosave_delay: float | None = None, allowed_roots: list[Path] | None = None,
                 dispatcher: Any = None) -> None:
        """``isolate`` runs graphs in a worker process (see :mod:`nodeflow.worker`), so a crash
        while training cannot take the editor down; without it runs use a thread (faster start)."""
        self.registry = registry
        self.workspace = Path(workspace)
        #: folders that path params may point into; None = unrestricted (the user's own shell)
        self.allowed_roots = None if allowed_roots is None else [self.workspace, *allowed_roots]
        # This executor stays in the editor's process even when runs go to the worker: it answers
        # validation, plans and per-node status (the cache on disk, the keys of the last runs)
        # while the worker is busy training for minutes, and it runs graphs itself without one.
        self.executor = Executor(registry, self.workspace, device=device, allowed_roots=self.allowed_roots)
        self.executor.subscribe(self._on_event)
        self.executor.dispatcher = dispatcher
        isolate = isolate and dispatcher is None
        self.worker = WorkerProcess(registry, self.workspace, device, self.allowed_roots) if isolate else None
        self.path = Path(path) if path is not None else None
        self._graph = graph or Graph()
        self._undo: list[Graph] = []
        self._redo: list[Graph] = []
        self.version = 0
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._live: dict[str, dict[str, Any]] = {}
        self._log: list[dict[str, Any]] = []
        self._listeners: list[Callable[[Event], None]] = []
        self.last_report: RunReport | None = None
        self.last_error: str | None = None
        self.dirty = False
        #: said to each tab that opens until the document is saved or another one is opened
        #: ("Reopened graph.json with unsaved edits from ...")
        self.notice: str | None = None
        self.autosave_delay = autosave_delay
        self._autosave_timer: threading.Timer | None = None
        # the run history and queue (nodeflow.runs): queued runs left by an earlier server start now
        self.runs = RunStore(self.workspace)
        self.mlflow_uri: str | None = None
        self._mlflow: Any = None  # the thread logging finished runs to MLflow, started with the first
        self.run_id: int | None = None  # the latest run started here
        self._current: int | None = None  # the run going now (changed with the lock held)
        self._recorder: RunRecorder | None = None
        self._cancelling: int | None = None
        self._closing = False
        self._estimate_lock = threading.Lock()
        self._estimates: dict[str, dict[str, Any]] = {}  # node id -> its latest estimate (with its key)
        with self._lock:
            self._start_next()

    # -- document -------------------------------------------------------------------------------
    @property
    def graph(self) -> Graph:
        return self._graph

    def replace(self, graph: Graph, record: bool = True) -> None:
        self._check_paths(graph)
        with self._lock:
            if record:
                self._push_undo()
            self._graph = graph
            self._changed()

    def edit(self, op: str, **args: Any) -> Graph:
        """Apply one edit (see :mod:`nodeflow.edits`); all-or-nothing, recorded for undo."""
        return self.edits([{"op": op, **args}])

    def edits(self, ops: list[Any]) -> Graph:
        """Apply several edits (their JSON form, or :mod:`nodeflow.edits` records) as one undo step
        (a bulk move, a paste, deleting a selection). Every path param of every node is checked
        again afterwards, whatever the edit touched: a node removed and added back with the same
        id, or given another type, gets no pass."""
        try:
            typed = parse_ops(ops)
        except ValueError as exc:
            raise EditError(str(exc)) from None
        with self._lock:
            data = self._graph.model_dump(mode="json")
            index = {node["id"]: node for node in data["nodes"]}
            for number, op in enumerate(typed):
                where = f"ops.{number} ({op.op}): " if len(typed) > 1 else ""  # which of several went wrong
                try:
                    if op.op in APPLY:
                        APPLY[op.op](data, index, op, self.registry)
                    else:
                        getattr(self, f"_apply_{op.op}")(data, index, op)
                except EditError as exc:
                    raise EditError(f"{where}{exc}") from None
                except (KeyError, ValueError) as exc:
                    raise EditError(f"{where}{exc.args[0] if exc.args else exc}") from None
            try:
                graph = Graph.from_data(data, "edit")
            except ValueError as exc:
                raise EditError(str(exc)) from None
            self._check_paths(graph)
            self._push_undo()
            self._graph = graph
            self._changed()
            return graph

    def undo(self) -> bool:
        with self._lock:
            if not self._undo:
                return False
            self._redo.append(self._graph)
            self._graph = self._undo.pop()
            self._changed()
            return True

    def redo(self) -> bool:
        with self._lock:
            if not self._redo:
                return False
            self._undo.append(self._graph)
            self._graph = self._redo.pop()
            self._changed()
            return True

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def save(self, path: Path | None = None) -> Path:
        target = Path(path) if path is not None else self.path
        if target is None:
            raise EditError("no file to save to: choose a name with 'save as'")
        self._graph.save(target)
        self.path = target
        self.dirty = False
        self.notice = None
        remember(self.workspace, target, self._graph.name, None, False)
        return target

    def open(self, path: Path) -> None:
        self.load(Graph.load(path), Path(path))

    def load(self, graph: Graph, path: Path | None = None) -> None:
        """Make ``graph`` the open document (undoable), saved at ``path`` (None: not saved yet)."""
        self.replace(graph)
        self.path = path
        self.dirty = False
        self.notice = None
        remember(self.workspace, path, graph.name, None, False)

    def _push_undo(self) -> None:
        self._undo.append(self._graph)
        del self._undo[:-HISTORY_LIMIT]
        self._redo.clear()

    def _changed(self) -> None:
        self.version += 1
        self.dirty = True
        if self.autosave_delay is not None:
            if self._autosave_timer is not None:
                self._autosave_timer.cancel()
            self._autosave_timer = threading.Timer(self.autosave_delay, self.autosave)
            self._autosave_timer.daemon = True
            self._autosave_timer.start()

    @property
    def autosave_folder(self) -> Path:
        stem = self.path.stem if self.path is not None else _safe_name(self._graph.name)
        return self.workspace / AUTOSAVE_FOLDER / stem

    def autosave(self) -> Path:
        """Write the document beside the earlier autosaves, keeping the newest AUTOSAVE_KEEP."""
        with self._lock:
            folder = self.autosave_folder
            path = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{self.version:06d}.json"
            self._graph.save(path)
            remember(self.workspace, self.path, self._graph.name, path, self.dirty)
        for old in sorted(folder.glob("*.json"))[:-AUTOSAVE_KEEP]:
            old.unlink(missing_ok=True)
        return path

    def autosaves(self) -> list[Path]:
        """Autosaved versions of this document, newest first."""
        return sorted(self.autosave_folder.glob("*.json"), reverse=True)

    # edit operations on the JSON form of the document (``index``: its nodes by id)
    def _apply_add_node(self, data: dict, index: dict, op: AddNode) -> None:
        node_cls = self.registry.get(op.type)
        node_id = op.id or fresh_id(index, op.type.rsplit(".", 1)[-1])
        if node_id in index:
            raise EditError(f"there is already a node with id '{node_id}'")
        position = Position(**(op.position.model_dump() if op.position else {}))
        node = NodeSpec(id=node_id, type=node_cls.type, params=op.params, position=position).model_dump(mode="json")
        data["nodes"].append(node)
        index[node_id] = node

    def _apply_remove_node(self, data: dict, index: dict, op: RemoveNode) -> None:
        find_node(index, op.id)
        del index[op.id]
        data["nodes"] = [n for n in data["nodes"] if n["id"] != op.id]
        data["edges"] = [e for e in data["edges"] if op.id not in (e["source"], e["target"])]
        for group in data.get("groups", []):  # a group that loses its last node goes too
            group["members"] = [m for m in group["members"] if m != op.id]
        data["groups"] = [g for g in data.get("groups", []) if g["members"]]

    def _apply_set_params(self, data: dict, index: dict, op: SetParams) -> None:
        node = find_node(index, op.id)
        merged = dict(op.params) if op.replace else {**node.get("params", {}), **op.params}
        node_cls = self.registry.get(node["type"])
        try:
            node_cls.Params.model_validate(merged)
        except ValidationError as exc:
            reasons = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise EditError(f"{op.id}: {reasons}") from None
        node["params"] = merged

    def _apply_move(self, data: dict, index: dict, op: Move) -> None:
        find_node(index, op.id)["position"] = {"x": op.x, "y": op.y}

    def _apply_rename(self, data: dict, index: dict, op: Rename) -> None:
        find_node(index, op.id)["title"] = op.title or None

    def _apply_connect(self, data: dict, index: dict, op: Connect) -> None:
        src = self.registry.get(find_node(index, op.source)["type"])
        dst = self.registry.get(find_node(index, op.target)["type"])
        out_port, in_port = src.output_port(op.source_port), dst.input_port(op.target_port)
        if out_port is None or in_port is None:
            raise EditError(f"no such port: {op.source}.{op.source_port} -> {op.target}.{op.target_port}")
        if not out_port.type.fits(in_port.type):
            raise EditError(f"{op.target}.{op.target_port} expects {in_port.type.name}, "
                            f"{op.source}.{op.source_port} gives {out_port.type.name}")
        # an input takes one edge: a new connection replaces the old one
        data["edges"] = [e for e in data["edges"]
                         if not (e["target"] == op.target and e["target_port"] == op.target_port)]
        data["edges"].append(Edge(source=op.source, source_port=op.source_port, target=op.target,
                                  target_port=op.target_port).model_dump())

    def _apply_disconnect(self, data: dict, index: dict, op: Disconnect) -> None:
        data["edges"] = [e for e in data["edges"]
                         if not (e["target"] == op.target and e["target_port"] == op.target_port)]

    def _check_paths(self, graph: Graph) -> None:
        """Every path param of every node of ``graph`` (as its current type declares them) must lie
        in the allowed folders; raises EditError naming each one that does not."""
        problems = self._path_problems(graph)
        if problems:
            raise EditError("; ".join(str(p) for p in problems))

    def _path_problems(self, graph: Graph) -> list[GraphProblem]:
        if self.allowed_roots is None:
            return []
        return [ParamError(spec.id, why, param=name) for spec in graph.nodes if spec.type in self.registry
                for name, why in path_problems(self.registry.get(spec.type).Params, spec.params,
                                               self.allowed_roots, Path.cwd())]

    # -- checking -------------------------------------------------------------------------------
    def validate(self) -> list[GraphProblem]:
        """The graph's problems, and each path param that leads outside the allowed folders as the
        disk stands now (a folder swapped for a link since it was set): what a run would refuse."""
        graph = self._graph
        return self.executor.validate(graph) + self._path_problems(graph)

    def input_facts(self, node_id: str) -> dict[str, dict[str, Any]]:
        return self.executor.input_facts(self._graph, node_id)

    # -- cost preview -----------------------------------------------------------------------------
    def estimate(self, target: str | None = None, reuse: bool = False) -> dict[str, Any]:
        """What running ``target`` (or everything) would cost, per stale node (see
        :meth:`Executor.estimate`). It runs here, in the editor's process, with this session's own
        executor, on the caller's thread: the HTTP API calls it from its thread pool and the page
        from a background thread, so the event loop stays free, and the worker process stays free
        to train meanwhile (profiling then shares the machine with that run). One estimate at a
        time: a second caller waits for the first. ``reuse``: answer from the latest estimates when
        every node the run would compute has one for its current key (what Run asks, so pressing
        it twice does not profile twice). Raises GraphInvalid or KeyError as :meth:`run`."""
        if reuse:
            plan = self.executor.plan(self._graph, target)
            known = self.estimates()
            if all(node_id in known for node_id, action in plan.items() if action == "run"):
                nodes = {node_id: known[node_id] if action == "run" else {"status": "cached", "seconds": 0.0}
                         for node_id, action in plan.items()}
                total = sum(e["seconds"] for e in nodes.values() if isinstance(e.get("seconds"), (int, float)))
                return {"target": target, "device": self.executor.device, "nodes": nodes,
                        "total_seconds": round(total, 3),
                        "complete": all(e["status"] in ("cached", "stale", "quick") for e in nodes.values())}
        with self._estimate_lock:
            graph = self._graph
            found = self.executor.estimate(graph, target)
            with self._lock:
                for node_id, entry in found["nodes"].items():
                    self._estimates[node_id] = entry
            return found

    def estimates(self, keys: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
        """The latest estimate of each node that still holds: made for its current cache key
        (``keys``, e.g. a snapshot's, saves working them out again)."""
        if not self._estimates:  # the common case, on every tick of every tab: no checking needed
            return {}
        if keys is None:
            keys = self.executor.keys(self._graph)
        with self._lock:
            return {node_id: entry for node_id, entry in self._estimates.items()
                    if keys.get(node_id) is not None and entry.get("key") == keys.get(node_id)}

    # -- running --------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run(self, target: str | None = None) -> dict[str, str]:
        """Start a run on a worker thread (or queue it behind the running one); returns the plan
        (node -> run|cached) at once. Raises GraphInvalid (nothing started) if the needed part of
        the graph is invalid."""
        return self.submit(target)["plan"]

    def submit(self, target: str | None = None, source: str = "editor") -> dict[str, Any]:
        """Record a run of the current document and start it, or queue it while another runs;
        returns its id, status, queue position and plan."""
        with self._lock:
            graph = self._graph
            plan = self.executor.plan(graph, target)  # raises GraphInvalid: nothing is queued
            run_id = self.runs.create(graph, target, source, status="queued")
            if self._current is None:
                self._start_next()
            run = self.runs.get(run_id)
            return {"id": run_id, "status": run["status"], "position": run.get("position"), "plan": plan}

    def _start_next(self) -> None:
        """Start the oldest queued run (called with the lock held, when nothing runs)."""
        for run_id in self.runs.queued():
            if self._closing or not self.runs.claim(run_id):
                continue
            run = self.runs.get(run_id)
            try:
                graph = Graph.from_data(run["graph"], f"run {run_id}")
                plan = self.executor.plan(graph, run["target"])
            except (GraphInvalid, KeyError, ValueError) as exc:  # e.g. a data folder gone since it was queued
                self.runs.finish(run_id, "failed", str(exc).strip('"'))
                continue
            for node_id, action in plan.items():
                live = self._live.setdefault(node_id, {})
                live.update(state="queued" if action == "run" else "cached", progress=0.0, error=None)
            self.last_error = None
            self.run_id = self._current = run_id
            self._recorder = RunRecorder(self.runs, run_id, graph_facts(self.executor, graph))
            self._thread = threading.Thread(target=self._run_worker, args=(graph, run["target"], run_id),
                                            daemon=True, name="nodeflow-run")
            self._thread.start()
            return

    def cancel(self, run_id: int) -> str:
        """Cancel a queued run, or stop the running one (it ends ``cancelled``)."""
        status = self.runs.cancel(run_id)
        if status == "running" and run_id == self._current:
            self._cancelling = run_id
            self.stop()
            return "cancelling"
        return status

    def queue(self) -> list[dict[str, Any]]:
        """Queued runs in the order they will run, with their positions."""
        return [self.runs.get(i) for i in self.runs.queued()]

    # -- sweeps (nodeflow.sweep): each branch a queued run of this session, tagged with the sweep -----
    def submit_sweep(self, grid: list[tuple[str, list[Any]]], target: str | None = None,
                     metric: str | None = None) -> dict[str, Any]:
        """Check a grid over the open document (every value against its param, every branch as a
        whole; a GridError names what is wrong and nothing is queued), then queue one run per branch
        behind whatever runs now; ``metric`` (``NODE.METRIC``) ranks them, by default a validation
        metric. Returns the sweep as :meth:`sweep` does."""
        from nodeflow import sweep

        def confined(graph: Graph, values: dict[str, Any]) -> Graph:
            """The values set, with path params held to the allowed folders as an edit's are (an
            EditError, a ValueError, which ``expand`` turns into a GridError naming the param)."""
            result = sweep.with_values(graph, values)
            self._check_paths(result)
            return result

        with self._lock:
            base = self._graph
            if target is not None and not base.has_node(target):
                raise sweep.GridError(f"target: no node '{target}'", "target")
            sweep.check_metric(base, metric)
            branches = sweep.expand(base, grid, self.executor, target, assign=confined)
            folder = self.workspace / "sweeps"
            folder.mkdir(parents=True, exist_ok=True)
            sweep_id = max((int(p.stem) for p in folder.glob("*.json") if p.stem.isdigit()), default=0) + 1
            runs = [self.runs.create(b.graph, target, sweep.source_tag(sweep_id), status="queued") for b in branches]
            record = {"id": sweep_id, "grid": [[name, values] for name, values in grid], "target": target,
                      "metric": metric,
                      "graph_name": base.name, "created": time.time(),
                      "branches": [{"params": b.params, "run": run_id} for b, run_id in zip(branches, runs)]}
            atomic_write_text(folder / f"{sweep_id}.json", json.dumps(record))
            if self._current is None:
                self._start_next()
        return self.sweep(sweep_id)

    def _sweep_record(self, sweep_id: int | str) -> dict[str, Any]:
        text = str(sweep_id)
        path = self.workspace / "sweeps" / f"{text}.json"
        if not text.isdigit() or len(text) > 18 or not path.is_file():
            raise SweepNotFound(f"no sweep {text[:40]!r}")
        return json.loads(path.read_text())

    def sweep(self, sweep_id: int | str, curves: bool = False) -> dict[str, Any]:
        """A sweep's branches (values, run, status, the target's main metric, time), the best one and
        its progress (see :func:`nodeflow.sweep.summary`); ``curves`` adds each branch's run curves."""
        from nodeflow import sweep

        record = self._sweep_record(sweep_id)
        runs = [self.runs.get(b["run"]) for b in record["branches"]]
        data = sweep.summary(record, runs, self.registry, self.predictions.of)
        if curves:
            for branch, run in zip(data["branches"], runs):
                branch["curves"] = run["curves"]
        return data

    def cancel_sweep(self, sweep_id: int | str) -> dict[str, Any]:
        """Cancel the sweep's queued branches, then stop its running one (it ends ``cancelled``)."""
        record = self._sweep_record(sweep_id)
        with self._lock:
            for branch in record["branches"]:
                if self.runs.get(branch["run"])["status"] == "queued":
                    self.runs.cancel(branch["run"])
            for branch in record["branches"]:
                if branch["run"] == self._current:
                    self.cancel(branch["run"])
        return self.sweep(sweep_id)

    def _run_worker(self, graph: Graph, target: str | None, run_id: int | None = None) -> None:
        status, error = "failed", None
        try:
            if self.worker is not None:
                self.last_report = self.worker.run(graph, target, [], self._on_worker_event,
                                                   self.executor.cache.set_elsewhere)
            else:
                self.last_report = self.executor.run(graph, target)
            status = report_status(self.last_report)
            if self.worker is not None and self.worker.pid is None:  # the worker died under the run
                status = "interrupted"
                failure = self.last_report.failure()
                error = failure[1].error if failure else "the worker process stopped"
        except Exception as exc:  # validation raced with an edit, or a bug: show it, keep the server up
            self.last_error = error = str(exc)
        finally:
            for live in self._live.values():
                if live.get("state") in ("queued", "running"):
                    live["state"] = "stale"
            if run_id is not None:
                self._finish_run(run_id, status, error)

    def _finish_run(self, run_id: int, status: str, error: str | None) -> None:
        recorder, self._recorder = self._recorder, None
        if recorder is not None:
            recorder.close()
        if self._cancelling == run_id:
            status, self._cancelling = "cancelled", None
        try:
            self.runs.finish(run_id, status, error)
        finally:  # whatever happened, the queue goes on
            with self._lock:
                self._current = None
                self._start_next()
        if self.mlflow_uri:
            self._log_to_mlflow(run_id)

    def _log_to_mlflow(self, run_id: int) -> None:
        """Hand the finished run to MLflow's logger thread (see :class:`nodeflow.mlflow_log.BackgroundLogger`):
        the run is finished and the next one started before MLflow is asked anything."""
        if self._mlflow is None:
            from nodeflow.mlflow_log import BackgroundLogger

            self._mlflow = BackgroundLogger(self.runs, self.mlflow_uri, log=lambda message: self._log.append(
                {"time": time.time(), "node": None, "kind": "log", "message": message}))
        self._mlflow.submit(run_id)

    def _on_worker_event(self, event: Event) -> None:
        if event.kind in ("node_finished", "interrupted") and event.data.get("key"):
            self.executor.remember_run(event.node_id, event.data["key"])
        self._on_event(event)

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.interrupt()
        self.executor.interrupt()

    def close(self) -> None:
        """Stop any run and end the worker process; queued runs stay queued for the next start."""
        self._closing = True
        timer, self._autosave_timer = self._autosave_timer, None
        if timer is not None and not timer.finished.is_set():
            timer.cancel()
            self.autosave()  # the edits of the last seconds are not lost with the process
        self.stop()
        self.wait(10)
        if self.worker is not None:
            self.worker.close()
        if self._mlflow is not None:
            self._mlflow.close(timeout=60)

    def wait(self, timeout: float | None = None) -> RunReport | None:
        """Wait for the running run and the runs queued behind it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (thread := self._thread) is not None and thread.is_alive():
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if deadline is not None and time.monotonic() >= deadline:
                break
        return self.last_report

    # -- a finished node's details ------------------------------------------------------------------
    @property
    def predictions(self) -> PredictionStore:
        """The per-image predictions nodes kept beside their cached results (run comparisons)."""
        return PredictionStore(self.executor.cache, self.workspace)

    @property
    def overlay_folder(self) -> Path:
        """Where drawn-on-demand images (Grad-CAM overlays of a confusion cell) are kept."""
        return self.workspace / "overlays"

    def _finished(self, node_id: str) -> tuple[Graph, type, str, dict[str, str]]:
        """The open graph, the node's type, its cache key and the keys of its inputs by port;
        LookupError when there is no such node or it has no cached result for its current params."""
        graph = self._graph
        if not graph.has_node(node_id):
            raise LookupError(f"no node with id '{node_id}'")
        node_cls = self.registry.get(graph.node(node_id).type)
        keys = self.executor.keys(graph)
        key = keys.get(node_id)
        if key is None or not self.executor.cache.has(key):
            raise LookupError(f"node '{node_id}' has no result for its current parameters: run it first")
        inputs = {e.target_port: keys[e.source] for e in graph.incoming(node_id) if e.source in keys}
        return graph, node_cls, key, inputs

    def node_tables(self, node_id: str) -> dict[str, Any]:
        """The tables a finished node put in its report (``ctx.table``), e.g. the doctor's findings."""
        _, _, key, _ = self._finished(node_id)
        return self.executor.cache.tables(key)

    def cell_gallery(self, node_id: str, true: str, predicted: str, page: int = 1,
                     per_page: int = 12) -> dict[str, Any]:
        """One page of a confusion-matrix cell's images with their overlays, from a finished node
        whose type offers ``cell_gallery`` (error analysis). Reads the node's cached result and
        loads an input (the model) from the cache only when an overlay must be drawn. Raises
        LookupError (no such node, cell or page; not run; no galleries), ParamProblem (a param
        the drawing refuses) or RuntimeError (anything else, with the cause)."""
        graph, node_cls, key, input_keys = self._finished(node_id)
        gallery = getattr(node_cls, "cell_gallery", None)
        if gallery is None:
            raise LookupError(f"node '{node_id}' ({node_cls.type}) has no image galleries; add an Error analysis "
                              "node (eval.errors) on the same model and data")
        spec = graph.node(node_id)
        sources = {e.target_port: e for e in graph.incoming(node_id)}

        def load_input(port: str) -> Any:
            edge = sources[port]
            source_cls = self.registry.get(graph.node(edge.source).type)
            return self.executor.cache.get(input_keys[port], source_cls)[0][edge.source_port]

        try:
            outputs = self.executor.cache.get(key, node_cls)[0]
            return gallery(node_cls.Params.model_validate(spec.params), outputs, input_keys, load_input,
                           self.overlay_folder, self.workspace, self.executor.device, true, predicted, page, per_page,
                           RunContext(node_id, self.workspace, allowed_roots=self.allowed_roots).check_files)
        except KeyError as exc:
            raise LookupError(exc.args[0] if exc.args else str(exc)) from None
        except (LookupError, ParamProblem):
            raise
        except Exception as exc:  # an unreadable cache entry, a missing image file: say which
            raise RuntimeError(f"could not show the images of node '{node_id}': {describe_exception(exc)}") from exc

    # -- what the editor shows --------------------------------------------------------------------
    def subscribe(self, listener: Callable[[Event], None]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _on_event(self, event: Event) -> None:
        recorder = self._recorder
        if recorder is not None:
            recorder(event)
        with self._lock:
            if event.node_id is not None:
                live = self._live.setdefault(event.node_id, {})
                self._record(live, event)
            if event.kind in ("log", "node_failed", "interrupted") or event.kind == "node_finished":
                self._log.append({"time": time.time(), "node": event.node_id, "kind": event.kind,
                                  "message": event.data.get("message") or _summary(event)})
                del self._log[:-1000]
        for listener in list(self._listeners):
            listener(event)

    @staticmethod
    def _record(live: dict[str, Any], event: Event) -> None:
        data = event.data
        if event.kind == "node_started":
            live.update(state="running", progress=0.0, error=None, series={}, message="", key=data.get("key"))
        elif event.kind == "progress":
            total = data.get("total") or 1
            live.update(progress=min(1.0, float(data.get("done", 0)) / float(total)), message=data.get("message", ""))
        elif event.kind == "metric":
            series = live.setdefault("series", {}).setdefault(data["name"], [])
            series.append({"step": data.get("step") if data.get("step") is not None else len(series),
                           "value": data["value"], **{k: v for k, v in data.items()
                                                       if k not in ("name", "value", "step")}})
            del series[:-SERIES_LIMIT]
            live.setdefault("metrics", {})[data["name"]] = data["value"]
        elif event.kind == "node_finished":
            live.update(state="cached" if data.get("from_cache") else "done", progress=1.0, key=data.get("key"),
                        seconds=data.get("seconds"), metrics=data.get("metrics") or live.get("metrics", {}))
        elif event.kind == "node_failed":
            live.update(state="failed", error=data.get("message"), traceback=data.get("traceback"),
                        key=data.get("key") or live.get("key"))
        elif event.kind == "node_skipped":
            live.update(state="stale")
        elif event.kind == "interrupted":
            live.update(state="stale", error=None)
        elif event.kind == "preview":
            live.setdefault("previews", {})[data["kind"]] = data["payload"]

    def snapshot(self) -> dict[str, Any]:
        """Per-node state for the editor: the cache's view, overlaid with this session's live run."""
        with self._lock:
            graph = self._graph
            base, problems, keys = self.executor.inspect(graph)
            running = self.running
            nodes = {}
            for spec in graph.nodes:
                live = copy.deepcopy(self._live.get(spec.id, {}))
                state = live.get("state")
                if base[spec.id] == "disabled" and state not in ("queued", "running"):
                    state = "disabled"  # whatever it did before, a run now leaves it out
                    live["error"] = None
                elif state in ("queued", "running") and running:
                    pass
                elif state == "failed" and live.get("key") == keys.get(spec.id):
                    pass  # failed with exactly these params and inputs: keep showing why
                elif state == "done" and live.get("key") == keys.get(spec.id) and base[spec.id] == "cached":
                    pass  # computed by this session's latest run (not just loaded from the cache)
                else:
                    state = base[spec.id]
                    live["error"] = None
                live["state"] = state
                live["problems"] = [str(p) for p in problems if p.node_id == spec.id]
                nodes[spec.id] = live
            return {"version": self.version, "running": self.running, "nodes": nodes, "keys": keys,
                    "problems": [p.to_json() for p in problems], "log": list(self._log[-200:]),
                    "error": self.last_error, "dirty": self.dirty,
                    "path": str(self.path) if self.path else None}


def find_node(index: dict, node_id: str) -> dict:
    node = index.get(node_id)
    if node is None:
        raise EditError(f"no node with id '{node_id}'")
    return node


# Edit operations on the JSON form of the document (``index``: its nodes by id), as functions of
# (data, index, op, registry).
def apply_disable(data: dict, index: dict, op: Disable, registry: Registry) -> None:
    find_node(index, op.id)["disabled"] = True if op.disabled else None


def _find_group(data: dict, group_id: str) -> dict:
    group = next((g for g in data.setdefault("groups", []) if g["id"] == group_id), None)
    if group is None:
        raise EditError(f"no group with id '{group_id}'")
    return group


def apply_group(data: dict, index: dict, op: Group, registry: Registry) -> None:
    groups = data.setdefault("groups", [])
    members = list(dict.fromkeys(op.members))
    owner = {m: g["id"] for g in groups for m in g["members"]}
    for member in members:
        find_node(index, member)
        if member in owner:
            raise EditError(f"node '{member}' is already in group '{owner[member]}': ungroup it first")
    group_id = op.id or fresh_id({g["id"] for g in groups}, op.title.lower())
    if any(g["id"] == group_id for g in groups):
        raise EditError(f"there is already a group with id '{group_id}'")
    if op.position is not None:
        position = op.position.model_dump()
    else:
        position = {"x": min(index[m]["position"]["x"] for m in members),
                    "y": min(index[m]["position"]["y"] for m in members)}
    groups.append({"id": group_id, "title": op.title, "members": members, "collapsed": op.collapsed,
                   "position": position})


def apply_ungroup(data: dict, index: dict, op: Ungroup, registry: Registry) -> None:
    _find_group(data, op.id)
    data["groups"] = [g for g in data["groups"] if g["id"] != op.id]


def apply_set_group(data: dict, index: dict, op: SetGroup, registry: Registry) -> None:
    group = _find_group(data, op.id)
    if op.title is not None:
        group["title"] = op.title
    if op.collapsed is not None:
        group["collapsed"] = op.collapsed
    if op.position is not None:
        group["position"] = op.position.model_dump()


APPLY = {"disable": apply_disable, "group": apply_group, "ungroup": apply_ungroup, "set_group": apply_set_group}


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:64] or "untitled"


def _summary(event: Event) -> str:
    if event.kind == "interrupted":
        return "stopped by the user; finished nodes stay cached, and a training node resumes from its checkpoint"
    if event.kind == "node_finished":
        return "cached" if event.data.get("from_cache") else f"done in {event.data.get('seconds', 0):.2f}s"
    return event.kind
