"""A backend that computes tasks in a child process, so that a crash there (the OOM killer, a
segfault, kill -9) takes down only the worker: the editor stays up, the running node fails with the
cause, every cached result is kept, and the next task starts a fresh worker.

The worker is kept between tasks and runs, so values that live only in memory stay cached too; the
editor's executor is told which (:meth:`nodeflow.cache.Cache.set_elsewhere`).

On a shared server each worker runs under the job's limits (:mod:`nodeflow.limits`): its memory is
capped in the child, so a job that wants more fails alone, as a node failure that names the limit.
:class:`EstimateWorker` measures estimates (real batches profiled) in a process of its own under the
same limits, so the server process never holds them.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import multiprocessing as mp
import os
import signal
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from nodeflow.errors import GraphInvalid, describe_exception
from nodeflow.events import Event, from_json, to_json
from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodeflow.limits import NO_LIMITS, JobLimits, limit_memory
from nodeflow.node import Registry, preloaded_modules
from nodeflow.scheduler import Task
from nodeflow.task import Outcome

#: where every child that runs a user's work starts from: a fork server, a fresh interpreter of its own (never
#: this process, so none of the server's state, threads or CUDA context is inherited) that has imported the
#: built-in catalogue's heavy modules once (torch: about 4 s a process on a small machine), so a run, an
#: estimate, the doctor or a model's process starts in a fraction of a second instead. Where there is no fork
#: (Windows), each child is a fresh interpreter that imports what it needs itself.
_CONTEXT = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")


@functools.cache
def _preloaded() -> None:
    """Name what the fork server imports when it starts (with the first child): once, before it starts."""
    if _CONTEXT.get_start_method() == "forkserver":
        _CONTEXT.set_forkserver_preload([__name__, *preloaded_modules()])


def start_child(target: Callable[..., None], name: str, *args: Any) -> tuple[Any, Any]:
    """Start ``target(conn, *args)`` in a child process from the fork server; its process and this end of its
    pipe. The child gets this process's environment and folder as they are now, as a newly started program
    would, not the fork server's from when it started."""
    _preloaded()
    parent, child = _CONTEXT.Pipe()
    try:
        folder = os.getcwd()
    except OSError:  # the folder this process started in is gone
        folder = None
    process = _CONTEXT.Process(target=_as_started_here, name=name, daemon=True,
                               args=(dict(os.environ), folder, target, child, *args))
    process.start()
    child.close()
    return process, parent


def _as_started_here(environment: dict[str, str], folder: str | None, target: Callable[..., None],
                     *args: Any) -> None:
    """In the child: the starting process's environment and folder, then ``target``."""
    os.environ.clear()
    os.environ.update(environment)
    if folder is not None:
        with contextlib.suppress(OSError):
            os.chdir(folder)
    target(*args)


class WorkerDied(RuntimeError):
    pass


class SharedStopFlag:
    """The stop flag the editor shares with its worker: one byte of shared memory, and no lock.
    ``multiprocessing.Event`` guards its value with a lock that a kill -9 of the worker, landing while
    the worker reads the flag (it does before every layer's forward), leaves held for good; the next
    stop or run would then hang the editor's run thread. A byte needs no lock: a read sees either the
    old value or the new one."""

    def __init__(self) -> None:
        self._value = _CONTEXT.RawValue(ctypes.c_bool, False)

    def is_set(self) -> bool:
        return bool(self._value.value)

    def set(self) -> None:
        self._value.value = True

    def clear(self) -> None:
        self._value.value = False


def _messages(conn) -> Iterator[tuple]:
    """What the parent sends a worker or an estimate process, after saying it is ready, until it
    says exit or goes away."""
    conn.send(("ready",))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message[0] == "exit":
            return
        yield message


def _process_executor(origins, workspace: str, device: str, allowed_roots: list[str] | None, limits: JobLimits,
                      stop: Any = None) -> Executor:
    """What a worker or an estimate process starts with: Ctrl-C left to the parent, the job's memory
    limit first of all, then the parent's catalogue rebuilt and an executor under the same limits."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal is the parent's to handle
    limit_memory(limits.memory_bytes)
    registry = Registry.rebuild(origins)
    roots = None if allowed_roots is None else [Path(r) for r in allowed_roots]
    return Executor(registry, Path(workspace), device=device, stop_flag=stop, allowed_roots=roots, limits=limits)


def _serve(conn, origins, workspace: str, device: str, stop, allowed_roots: list[str] | None = None,
           limits: JobLimits = NO_LIMITS) -> None:
    """The worker's main loop: build the registry, then compute tasks on request. ``allowed_roots``
    confines every path a node resolves (a run for the editor); ``limits`` holds the process to the
    job's memory first of all, then reaches every node's run context."""
    executor = _process_executor(origins, workspace, device, allowed_roots, limits, stop)
    checked: tuple[str, Any] = ("", None)
    values: dict[str, dict[str, dict[str, Any]]] = {}
    for message in _messages(conn):
        _, graph_text, node_id, key, force, fetch, run = message
        digest = hashlib.sha256(graph_text.encode()).hexdigest()
        try:
            if checked[0] != digest:  # the graph is checked once for all the tasks of a run
                checked = (digest, executor.check(Graph.loads(graph_text, "the run's graph")))
            if run not in values:  # values passed between the tasks of the latest run only
                values = {run: {}}
            outcome = executor.compute(checked[1], node_id, key, lambda e: conn.send(("event", to_json(e))), stop,
                                       force=force, values=values[run], fetch=fetch)
        except Exception as exc:  # a bug in checking or computing (or no memory left for it): say so, keep the worker
            outcome = Outcome("failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        _name_memory_limit(outcome, limits)
        conn.send(("outcome", outcome.to_json(), executor.cache.memory_metrics()))


def _name_memory_limit(outcome: Outcome, limits: JobLimits) -> None:
    """A node that failed for want of memory under the job's limit says so, naming the limit, for
    itself and for each node computed inside its task."""
    if outcome.status == "failed":
        outcome.error = limits.name_memory_limit(outcome.error)
    for inner in outcome.inline.values():
        _name_memory_limit(inner, limits)


class WorkerBackend:
    """Tasks computed one at a time in one worker process, started on first use and again after it
    dies. ``on_memory`` is told, after each task, the metrics of every result the worker holds in
    memory (so the editor counts them as cached)."""

    keeps_values = True
    wants_outputs = False

    def __init__(self, registry: Registry, workspace: Path, device: str = "auto",
                 allowed_roots: list[Path] | None = None,
                 on_memory: Callable[[dict[str, dict[str, float]]], None] = lambda metrics: None,
                 limits: JobLimits = NO_LIMITS) -> None:
        self.origins = registry.origins
        self.workspace = Path(workspace)
        self.device = device
        self.allowed_roots = None if allowed_roots is None else [str(r) for r in allowed_roots]
        self.on_memory = on_memory
        #: what each job may use (a shared server's); the worker process is held to its memory
        self.limits = limits
        #: the flag the worker reads to stop its node
        self.stop_flag = SharedStopFlag()
        self._process: Any = None
        self._conn: Any = None
        self._lock = threading.Lock()
        self._task: tuple[Task, Callable[[Event], None]] | None = None
        #: how many times the worker died under a task
        self.deaths = 0

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None and self._process.is_alive() else None

    # -- the backend protocol (see nodeflow.scheduler) ------------------------------------------------
    def begin(self, branches: list[Any]) -> None:
        self.stop_flag.clear()

    def end(self) -> None:
        pass

    def free(self) -> int:
        return 0 if self._task is not None else 1

    def submit(self, task: Task, emit: Callable[[Event], None]) -> None:
        with self._lock:
            self._task = (task, emit)
            try:
                self._ensure_started()
                self._conn.send(("task", task.branch.checked.graph.dumps(), task.node_id, task.key, task.force,
                                 task.fetch, task.run))
            except (WorkerDied, OSError):  # OSError: it died between the check and the send
                pass  # collect says why

    def collect(self, timeout: float) -> list[tuple[Task, Outcome]]:
        if self._task is None:
            return []
        task, emit = self._task
        try:
            while True:
                message = self._receive(timeout)
                if message is None:
                    return []
                if message[0] == "event":
                    emit(from_json(message[1]))
                    timeout = 0.0  # relay what came, then let the scheduler look at its stop flags
                    continue
                _, outcome, memory = message
                self.on_memory(memory)
                self._task = None
                return [(task, Outcome.from_json(outcome))]
        except WorkerDied as exc:
            self.deaths += 1
            self._task = None
            self.on_memory({})
            cause = f"{exc}; every other cached result is kept, and the next run starts a new worker"
            return [(task, Outcome("failed", error=cause, fatal=True))]

    def stop(self) -> None:
        self.stop_flag.set()

    # -- the process ---------------------------------------------------------------------------------
    def _ensure_started(self) -> None:
        if self._process is not None and self._process.is_alive():
            return
        self._process, self._conn = start_child(_serve, "nodeflow-worker", self.origins, str(self.workspace),
                                                self.device, self.stop_flag, self.allowed_roots, self.limits)
        reply = self._receive(None)
        if reply is None or reply[0] != "ready":
            raise WorkerDied(f"the worker process did not start: {reply}")

    def _receive(self, timeout: float | None) -> tuple | None:
        """The worker's next message; None when none came within ``timeout`` (None: wait for one)."""
        if self._process is None:
            raise WorkerDied("the worker process did not start")
        return _receive(self._process, self._conn, timeout, self.limits)

    def interrupt(self) -> None:
        self.stop()

    def kill(self) -> None:
        """Kill the worker outright (what the OOM killer would do); used by tests."""
        if self._process is not None and self._process.is_alive():
            self._process.kill()

    def close(self) -> None:
        if self._process is not None and self._process.is_alive():
            try:
                self._conn.send(("exit",))
            except (OSError, BrokenPipeError):
                pass
            self._process.join(5)
            if self._process.is_alive():
                self._process.kill()


class EstimateFailed(RuntimeError):
    """An estimate could not be measured at all: its process died, or (``refused``) it refused the
    graph or the target."""

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


def _estimate(conn, origins, workspace: str, device: str, allowed_roots: list[str] | None, limits: JobLimits) -> None:
    """An estimate process's main loop: under the job's limits, measure each graph it is sent
    (:meth:`Executor.estimate`) until told to exit. A node's estimate that fails for want of memory
    names the limit."""
    executor = _process_executor(origins, workspace, device, allowed_roots, limits)
    for message in _messages(conn):
        if message[0] == "findings":
            conn.send(_findings(executor, limits, *message[1:]))
            continue
        _, graph_text, target = message
        try:
            found = executor.estimate(Graph.loads(graph_text, "the estimate's graph"), target)
        except (GraphInvalid, KeyError) as exc:  # the caller checks again to raise it as itself
            conn.send(("refused", describe_exception(exc)))
            continue
        except Exception as exc:  # no memory left even to check, or a bug: the caller says so per node
            conn.send(("failed", limits.name_memory_limit(describe_exception(exc))))
            continue
        for entry in found["nodes"].values():
            if entry.get("status") == "error":
                entry["error"] = limits.name_memory_limit(entry.get("error"))
        conn.send(("estimate", found))


def _findings(executor: Executor, limits: JobLimits, graph_text: str, node: str, port: str) -> tuple:
    """Run a small graph of the catalogue's (the dataset doctor's) and answer its ``node.port``
    output as plain data: a findings record's values and tables, never an object of the graph's."""
    try:
        report = executor.run(Graph.loads(graph_text, "the graph"))
    except Exception as exc:  # no memory left even to start, or a refusal of the graph
        return "failed", limits.name_memory_limit(describe_exception(exc))
    failure = report.failure()
    if failure is not None:
        return "failed", limits.name_memory_limit(str(failure[1].error))
    found = report.outputs[node][port]
    return "findings", {"values": dict(found.values), "tables": dict(found.tables)}


class EstimateWorker:
    """Estimates measured in a process of their own, under the job's limits: an estimate profiles
    real batches (gigabytes at a large image size and batch), and the process that serves the editor
    must never hold them. ``keep``: the process stays for the next estimate (the one-person editor,
    which profiles after each edit); otherwise it ends with each estimate, so its memory is given back
    (a shared server). One estimate at a time; :meth:`close` ends one that is measuring."""

    def __init__(self, registry: Registry, workspace: Path, device: str = "auto",
                 allowed_roots: list[Path] | None = None, limits: JobLimits = NO_LIMITS, keep: bool = False) -> None:
        self.origins = registry.origins
        self.workspace = Path(workspace)
        self.device = device
        self.allowed_roots = None if allowed_roots is None else [str(r) for r in allowed_roots]
        self.limits = limits
        self.keep = keep
        self._lock = threading.Lock()
        self._process: Any = None
        self._conn: Any = None
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The measuring process (None when there is none now)."""
        process = self._process
        return process.pid if process is not None and process.is_alive() else None

    def estimate(self, graph: Graph, target: str | None = None) -> dict[str, Any]:
        """:meth:`Executor.estimate` of ``graph``, measured in the estimate process. Raises
        EstimateFailed when nothing could be measured, ``refused`` True when the graph or the target
        was refused there (the caller's own check says how)."""
        with self._lock:
            if self._closed:
                raise EstimateFailed("the estimate could not be measured: the project is closing")
            try:
                self._ensure_started()
                self._conn.send(("estimate", graph.dumps(), target))
                reply = _receive(self._process, self._conn, None, self.limits)
            except (WorkerDied, OSError) as exc:
                self._end()
                raise EstimateFailed(f"the estimate could not be measured: {exc}") from None
            finally:
                if not self.keep:
                    self._end()
            if reply[0] == "estimate":
                return reply[1]
            raise EstimateFailed(reply[1], refused=reply[0] == "refused")

    def findings(self, graph: Graph, node: str, port: str) -> dict[str, Any]:
        """Run ``graph`` (a small graph of the catalogue's, such as the dataset doctor's) in the
        process, under the job's limits, and answer the values and tables of ``node``'s ``port``.
        Raises EstimateFailed with the node's error when it fails (the memory limit named)."""
        with self._lock:
            if self._closed:
                raise EstimateFailed("the project is closing")
            try:
                self._ensure_started()
                self._conn.send(("findings", graph.dumps(), node, port))
                reply = _receive(self._process, self._conn, None, self.limits)
            except (WorkerDied, OSError) as exc:
                self._end()
                raise EstimateFailed(str(exc)) from None
            finally:
                if not self.keep:
                    self._end()
            if reply[0] == "findings":
                return reply[1]
            raise EstimateFailed(reply[1])

    def _ensure_started(self) -> None:
        if self._process is not None and self._process.is_alive():
            return
        self._process, self._conn = start_child(_estimate, "nodeflow-estimate", self.origins, str(self.workspace),
                                                self.device, self.allowed_roots, self.limits)
        if self._closed:  # closed while it started: close() found nothing to end yet
            raise WorkerDied("the project is closing")
        reply = _receive(self._process, self._conn, None, self.limits)
        if reply is None or reply[0] != "ready":
            raise WorkerDied(f"the estimate process did not start: {reply}")

    def _end(self) -> None:
        process, conn = self._process, self._conn
        self._process = self._conn = None
        end_child(process, conn)

    def close(self) -> None:
        """End the process, and with it an estimate it is measuring (its caller is told so)."""
        self._closed = True
        process = self._process
        if process is not None and process.is_alive() and self._lock.locked():
            process.kill()  # measuring: the caller's wait ends, and it ends the process
        with self._lock:
            self._end()


def end_child(process: Any, conn: Any) -> None:
    """Ask a child process (an estimate process, a model's) to exit, kill it if it will not, and close
    its pipe; nothing when there is none."""
    if process is None:
        return
    if process.is_alive():
        try:
            conn.send(("exit",))
        except (OSError, BrokenPipeError):
            pass
        process.join(5)
    if process.is_alive():
        process.kill()
        process.join(5)
    conn.close()


def _receive(process: Any, conn: Any, timeout: float | None, limits: JobLimits) -> tuple | None:
    """A child's next message; None when none came within ``timeout`` (None: wait for one).
    WorkerDied, saying why, when the child died instead."""
    waited = 0.0
    while True:
        step = 0.2 if timeout is None else min(0.2, max(0.0, timeout - waited))
        if conn.poll(step):
            try:
                return conn.recv()
            except EOFError:
                break
        if not process.is_alive():
            break
        waited += step
        if timeout is not None and waited >= timeout:
            return None
    process.join(5)
    raise WorkerDied(limits.died_under(_death_cause(process.exitcode)))


def _death_cause(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (the system may have run out of memory)" if name == "SIGKILL" else ""
        return f"the worker process was killed by {name}{hint}"
    return f"the worker process exited unexpectedly (exit code {exitcode})"
