"""A backend that computes tasks in a child process, so that a crash there (the OOM killer, a
segfault, kill -9) takes down only the worker: the editor stays up, the running node fails with the
cause, every cached result is kept, and the next task starts a fresh worker.

The worker is kept between tasks and runs, so values that live only in memory stay cached too; the
editor's executor is told which (:meth:`nodeflow.cache.Cache.set_elsewhere`).
"""

from __future__ import annotations

import ctypes
import hashlib
import multiprocessing as mp
import signal
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nodeflow.events import Event, from_json, to_json
from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodeflow.node import Registry
from nodeflow.scheduler import Outcome, Task

_CONTEXT = mp.get_context("spawn")  # a fresh interpreter: no threads or CUDA state inherited


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


def _serve(conn, origins, workspace: str, device: str, stop, allowed_roots: list[str] | None = None) -> None:
    """The worker's main loop: build the registry, then compute tasks on request. ``allowed_roots``
    confines every path a node resolves (a run for the editor)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal is the parent's to handle
    registry = Registry.rebuild(origins)
    roots = None if allowed_roots is None else [Path(r) for r in allowed_roots]
    executor = Executor(registry, Path(workspace), device=device, stop_flag=stop, allowed_roots=roots)
    checked: tuple[str, Any] = ("", None)
    values: dict[str, dict[str, dict[str, Any]]] = {}
    conn.send(("ready",))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message[0] == "exit":
            return
        _, graph_text, node_id, key, force, fetch, run = message
        digest = hashlib.sha256(graph_text.encode()).hexdigest()
        try:
            if checked[0] != digest:  # the graph is checked once for all the tasks of a run
                checked = (digest, executor.check(Graph.loads(graph_text, "the run's graph")))
            if run not in values:  # values passed between the tasks of the latest run only
                values = {run: {}}
            outcome = executor.compute(checked[1], node_id, key, lambda e: conn.send(("event", to_json(e))), stop,
                                       force=force, values=values[run], fetch=fetch)
        except Exception as exc:  # a bug in checking or computing: say so, keep the worker
            outcome = Outcome("failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        conn.send(("outcome", outcome.to_json(), executor.cache.memory_metrics()))


class WorkerBackend:
    """Tasks computed one at a time in one worker process, started on first use and again after it
    dies. ``on_memory`` is told, after each task, the metrics of every result the worker holds in
    memory (so the editor counts them as cached)."""

    keeps_values = True
    wants_outputs = False

    def __init__(self, registry: Registry, workspace: Path, device: str = "auto",
                 allowed_roots: list[Path] | None = None,
                 on_memory: Callable[[dict[str, dict[str, float]]], None] = lambda metrics: None) -> None:
        self.origins = registry.origins
        self.workspace = Path(workspace)
        self.device = device
        self.allowed_roots = None if allowed_roots is None else [str(r) for r in allowed_roots]
        self.on_memory = on_memory
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
        parent, child = _CONTEXT.Pipe()
        self._process = _CONTEXT.Process(target=_serve, name="nodeflow-worker", daemon=True,
                                         args=(child, self.origins, str(self.workspace), self.device, self.stop_flag,
                                               self.allowed_roots))
        self._process.start()
        child.close()
        self._conn = parent
        reply = self._receive(None)
        if reply is None or reply[0] != "ready":
            raise WorkerDied(f"the worker process did not start: {reply}")

    def _receive(self, timeout: float | None) -> tuple | None:
        """The worker's next message; None when none came within ``timeout`` (None: wait for one)."""
        if self._process is None:
            raise WorkerDied("the worker process did not start")
        waited = 0.0
        while True:
            step = 0.2 if timeout is None else min(0.2, max(0.0, timeout - waited))
            if self._conn.poll(step):
                try:
                    return self._conn.recv()
                except EOFError:
                    break
            if not self._process.is_alive():
                break
            waited += step
            if timeout is not None and waited >= timeout:
                return None
        self._process.join(5)
        raise WorkerDied(_death_cause(self._process.exitcode))

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


def _death_cause(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (the system may have run out of memory)" if name == "SIGKILL" else ""
        return f"the worker process was killed by {name}{hint}"
    return f"the worker process exited unexpectedly (exit code {exitcode})"
