"""Runs graphs in a child process, so that a crash there (the OOM killer, a segfault, kill -9)
takes down only the worker: the editor stays up, marks the running node failed with the cause,
keeps every cached result, and starts a fresh worker for the next run.

The worker is kept between runs, so values that live only in memory stay cached too.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nodeflow.errors import GraphInvalid
from nodeflow.executor import Executor, NodeReport, RunReport
from nodeflow.graph import Graph
from nodeflow.node import Event, Registry

_CONTEXT = mp.get_context("spawn")  # a fresh interpreter: no threads or CUDA state inherited


class WorkerDied(RuntimeError):
    pass


def _serve(conn, origins, workspace: str, device: str, stop, allowed_roots: list[str] | None = None) -> None:
    """The worker's main loop: build the registry, then run graphs on request. ``allowed_roots``
    confines every path a node resolves (a run for the editor)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal is the parent's to handle
    registry = Registry.rebuild(origins)
    roots = None if allowed_roots is None else [Path(r) for r in allowed_roots]
    executor = Executor(registry, Path(workspace), device=device, stop_flag=stop, allowed_roots=roots)
    executor.subscribe(lambda e: conn.send(("event", e.kind, e.node_id, e.data)))
    conn.send(("ready",))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message[0] == "exit":
            return
        _, graph_data, target, force = message
        try:
            report = executor.run(Graph.from_data(graph_data), target, force)
            conn.send(("done", report.to_json(), executor.cache.memory_metrics()))
        except GraphInvalid as exc:
            conn.send(("invalid", str(exc)))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))


class WorkerProcess:
    """One worker process, started on first use and again after it dies."""

    def __init__(self, registry: Registry, workspace: Path, device: str = "auto",
                 allowed_roots: list[Path] | None = None) -> None:
        self.origins = registry.origins
        self.workspace = Path(workspace)
        self.device = device
        self.allowed_roots = None if allowed_roots is None else [str(r) for r in allowed_roots]
        self._stop = _CONTEXT.Event()
        self._process: Any = None
        self._conn: Any = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None and self._process.is_alive() else None

    def _ensure_started(self) -> None:
        if self._process is not None and self._process.is_alive():
            return
        parent, child = _CONTEXT.Pipe()
        self._process = _CONTEXT.Process(target=_serve, name="nodeflow-worker", daemon=True,
                                         args=(child, self.origins, str(self.workspace), self.device, self._stop,
                                               self.allowed_roots))
        self._process.start()
        child.close()
        self._conn = parent
        reply = self._receive()
        if reply[0] != "ready":
            raise WorkerDied(f"the worker process did not start: {reply}")

    def _receive(self) -> tuple:
        while True:
            if self._conn.poll(0.2):
                try:
                    return self._conn.recv()
                except EOFError:
                    break
            if not self._process.is_alive():
                break
        self._process.join(5)
        raise WorkerDied(_death_cause(self._process.exitcode))

    def run(self, graph: Graph, target: str | None, force: list[str],
            on_event: Callable[[Event], None],
            on_memory: Callable[[dict[str, dict[str, float]]], None]) -> RunReport:
        """Run in the worker, relaying its events; returns the report, also when the worker dies."""
        with self._lock:
            self._stop.clear()
            running: str | None = None
            reports: dict[str, NodeReport] = {}
            try:
                self._ensure_started()
                self._conn.send(("run", graph.model_dump(mode="json"), target, list(force)))
                while True:
                    message = self._receive()
                    if message[0] == "event":
                        _, kind, node_id, data = message
                        if kind == "node_started":
                            running = node_id
                        elif kind in ("node_finished", "node_failed") and node_id == running:
                            running = None
                        if kind == "node_finished":
                            reports[node_id] = NodeReport("cached" if data.get("from_cache") else "ran",
                                                          data.get("seconds", 0.0), data.get("metrics", {}))
                        on_event(Event(kind, node_id, data))
                    elif message[0] == "done":
                        on_memory(message[2])
                        return RunReport.from_json(message[1])
                    else:  # invalid graph (edited meanwhile) or an executor bug: the message says which
                        raise RuntimeError(message[1])
            except WorkerDied as exc:
                on_memory({})
                cause = f"{exc}; every other cached result is kept, and the next run starts a new worker"
                if running is not None:
                    reports[running] = NodeReport("failed", error=cause)
                    on_event(Event("node_failed", running, {"message": cause, "traceback": ""}))
                on_event(Event("run_finished", None, {"ok": False}))
                return RunReport(ok=False, nodes=reports)

    def interrupt(self) -> None:
        self._stop.set()

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
