"""Computing one node of a checked graph: what every backend does with a task, in the manner of
Kedro's ``runner/task.py``. The node's hooks are its run context (:class:`nodeflow.node.RunContext`:
progress, metrics, logs, the stop flag) and the events told around it: ``node_started``, the files
it wrote, and an :class:`Outcome` (ran, cached, failed, stopped, elsewhere) that the scheduler turns
into the node's record.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodeflow.cache import Cache
from nodeflow.checker import Checked, path_values
from nodeflow.errors import describe_exception
from nodeflow.events import Event, Log, NodeStarted
from nodeflow.limits import NO_LIMITS, JobLimits
from nodeflow.node import Interrupted, Node, ParamProblem, RunContext


@dataclass
class Outcome:
    """What a backend says of a task: ``status`` ran, cached (computed meanwhile by another process
    holding the key), failed, stopped or elsewhere (a machine after the first of a multi-node
    training: its part ran, and the machine with node_rank 0 recorded the result under the key).
    ``inline``: the outcomes of nodes computed inside this task (not persisted, or an unreadable
    cache entry computed again). ``fatal``: the backend cannot go on (its worker died)."""

    status: str
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    tables: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    traceback: str = ""
    param: str | None = None
    note: str | None = None
    epoch: int | None = None
    epochs: int | None = None
    resumable: bool = False
    inline: dict[str, Outcome] = field(default_factory=dict)
    fatal: bool = False

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "inline"}
        data["inline"] = {n: o.to_json() for n, o in self.inline.items()}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Outcome:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "inline"}
        return cls(**fields, inline={n: cls.from_json(o) for n, o in (data.get("inline") or {}).items()})

    @property
    def ok(self) -> bool:
        return self.status in ("ran", "cached", "elsewhere")


class NodeTask:
    """Computes nodes with ``cache``: their results go there, and their inputs come from there when
    this run's values do not hold them. ``workspace``, ``device``, ``allowed_roots`` and ``limits``
    are handed to each node's run context."""

    def __init__(self, cache: Cache, workspace: Path | None, device: str = "auto",
                 allowed_roots: list[Path] | None = None, limits: JobLimits | None = None) -> None:
        self.cache = cache
        self.workspace = workspace
        self.device = device
        self.allowed_roots = allowed_roots
        self.limits = limits or NO_LIMITS

    def compute(self, checked: Checked, node_id: str, key: str, emit: Callable[[Event], None], stop_flag: Any,
                force: bool = False, values: dict[str, dict[str, Any]] | None = None,
                fetch: bool = False) -> Outcome:
        """Compute one node: what every backend does with a task (in the manner of Kedro's
        ``runner/task.py``). Inputs come from ``values`` (this process's results of this run), else
        the cache. An input that is not here (kept only in another process's memory) is computed
        first; an unreadable cache entry is set aside (never deleted) and computed again; either is
        told in the outcome's ``inline``. ``fetch``: the node is cached; only load its outputs (a
        cached target whose value the caller wants), computing it again if its entry is unreadable."""
        values = {} if values is None else values
        inline: dict[str, Outcome] = {}
        try:
            if fetch:
                self._output(checked, node_id, values, inline, emit, stop_flag)
                own = inline.pop(node_id, None)
                outcome = own or Outcome("cached", metrics=self.cache.metrics(key), tables=self.cache.tables(key))
                outcome.inline.update(inline)
                return outcome
            inputs = {e.target_port: self._output(checked, e.source, values, inline, emit, stop_flag)[e.source_port]
                      for e in checked.graph.incoming(node_id)}
        except _UnreadableEntry as exc:
            return Outcome("failed", error=str(exc), traceback=exc.trace, inline=inline)
        outcome = self._hold_and_compute(checked, node_id, key, inputs, values, emit, stop_flag, force)
        outcome.inline.update(inline)
        return outcome

    def _output(self, checked: Checked, node_id: str, values: dict[str, dict[str, Any]],
                inline: dict[str, Outcome], emit: Callable[[Event], None], stop_flag: Any) -> dict[str, Any]:
        """A finished node's outputs: from this run, else loaded from the cache on first use, else
        (kept only in another process's memory, or unreadable) computed again here."""
        if node_id in values:
            return values[node_id]
        key = checked.keys[node_id]
        reason = kept = ""
        if self.cache.has(key):
            try:
                values[node_id] = self.cache.get(key, checked.types[node_id])[0]
                return values[node_id]
            except Exception as exc:
                reason = describe_exception(exc)
                aside = self.cache.quarantine(key)
                kept = f"; the damaged entry was kept as {aside}" if aside else ""
                emit(Log(node_id=node_id, message=f"cached outputs could not be read ({reason}){kept}; "
                                                  "computing them again"))
        inputs = {e.target_port: self._output(checked, e.source, values, inline, emit, stop_flag)[e.source_port]
                  for e in checked.graph.incoming(node_id)}
        outcome = self._hold_and_compute(checked, node_id, key, inputs, values, emit, stop_flag, False)
        inline[node_id] = outcome
        if outcome.status not in ("ran", "cached"):
            what = f"cached outputs of '{node_id}' could not be read ({reason}){kept}, and computing them again" \
                if reason else f"computing '{node_id}' here"
            raise _UnreadableEntry(f"{what} {_past(outcome.status)}: {outcome.error}", outcome.traceback)
        if node_id not in values:  # computed meanwhile by another process: take its result
            values[node_id] = self.cache.get(key, checked.types[node_id])[0]
        return values[node_id]

    def _hold_and_compute(self, checked: Checked, node_id: str, key: str, inputs: dict[str, Any],
                          values: dict[str, dict[str, Any]], emit: Callable[[Event], None], stop_flag: Any,
                          force: bool) -> Outcome:
        """Compute one node while holding its cache key: when another process sharing the
        workspace (a second run, a Dask worker) computed the same key meanwhile, take its result."""
        node, params = checked.types[node_id], checked.params[node_id]
        if node.recorded_elsewhere(params):
            return self._take_part(node_id, node, params, inputs, key, values, emit, stop_flag)
        with self.cache.computing(key, node):
            if not force and self.cache.has(key):
                return Outcome("cached", metrics=self.cache.metrics(key), tables=self.cache.tables(key),
                               note="computed meanwhile (the same cache key, here or in another process); "
                                    "using that result")
            return self._compute(node_id, node, params, inputs, key, values, emit, stop_flag)

    def _context(self, node_id: str, node: type[Node], params: Any, key: str, emit: Callable[[Event], None],
                 stop_flag: Any) -> RunContext:
        workspace = self.workspace or Path(tempfile.gettempdir()) / "nodeflow"
        return RunContext(node_id, workspace, device=self.device, seed=int(key[:8], 16), emit=emit,
                          stop_flag=stop_flag, scratch=workspace / "scratch" / key, key=key,
                          allowed_roots=self.allowed_roots, limits=self.limits, path_params=path_values(node, params))

    def _compute(self, node_id: str, node: type[Node], params: Any, inputs: dict[str, Any], key: str,
                 values: dict[str, dict[str, Any]], emit: Callable[[Event], None], stop_flag: Any) -> Outcome:
        ctx = self._context(node_id, node, params, key, emit, stop_flag)
        scratch_root = ctx.scratch_root
        shutil.rmtree(scratch_root, ignore_errors=True)
        emit(NodeStarted(node_id=node_id, key=key, type=node.type))
        started = time.perf_counter()
        try:
            ctx.check_inputs(node, inputs)
            outputs = node().run(ctx, params, **inputs) or {}
            missing = [p.name for p in node.outputs if not p.optional and p.name not in outputs]
            if missing:
                raise RuntimeError(f"{node.type}.run() returned no value for output(s) {missing}")
            ctx.check_interrupted()
            has_files = scratch_root.exists() and any(scratch_root.iterdir())
            kept = self.cache.put(key, node, outputs, ctx.metrics, scratch_root if has_files else None,
                                  tables=ctx.tables)
            if has_files:
                if kept is not None:
                    shutil.rmtree(scratch_root, ignore_errors=True)  # its files now live in the cache entry
                names = ", ".join(sorted(p.name for p in (kept or scratch_root).iterdir()))
                emit(Log(node_id=node_id, message=f"files written: {names} (in {kept or scratch_root})"))
        except Exception as exc:
            return _ended(exc, ctx, started)
        shutil.rmtree(ctx.workspace / "checkpoints" / key, ignore_errors=True)  # the cached result supersedes them
        values[node_id] = outputs
        return Outcome("ran", time.perf_counter() - started, dict(ctx.metrics), tables=dict(ctx.tables))

    def _take_part(self, node_id: str, node: type[Node], params: Any, inputs: dict[str, Any], key: str,
                   values: dict[str, dict[str, Any]], emit: Callable[[Event], None], stop_flag: Any) -> Outcome:
        """A process that only takes part in a computation another machine records under the same key
        (a machine after the first of a multi-node training, see :meth:`Node.recorded_elsewhere`). Its
        part runs without holding the key, which the recording machine holds while it waits for this
        one; then the result that machine wrote is taken. The outcome says so: "elsewhere"."""
        ctx = self._context(node_id, node, params, key, emit, stop_flag)
        emit(NodeStarted(node_id=node_id, key=key, type=node.type))
        started = time.perf_counter()
        try:
            ctx.check_inputs(node, inputs)
            node().run(ctx, params, **inputs)
            with self.cache.computing(key, node):
                if not self.cache.has(key):
                    raise RuntimeError("this machine's part ran, but the process that records this node "
                                       "(node_rank 0) wrote no result; see its log")
                values[node_id], metrics = self.cache.get(key, node)
        except Exception as exc:
            return _ended(exc, ctx, started)
        return Outcome("elsewhere", time.perf_counter() - started, dict(metrics),
                       note="recorded by another machine under the same cache key")


def _ended(exc: Exception, ctx: RunContext, started: float) -> Outcome:
    """The outcome of a node that raised: stopped on request (resumable when it left a checkpoint), or
    failed, with the message and the param it blames."""
    seconds = time.perf_counter() - started
    if isinstance(exc, Interrupted):
        checkpoints = ctx.workspace / "checkpoints" / ctx.key
        return Outcome("stopped", seconds, dict(ctx.metrics), epoch=ctx.epoch, epochs=ctx.epochs,
                       resumable=checkpoints.is_dir() and any(checkpoints.iterdir()))
    return Outcome("failed", seconds, dict(ctx.metrics), error=node_message(exc),
                   traceback=traceback.format_exc(), param=getattr(exc, "param", None))


def _past(status: str) -> str:
    return {"stopped": "was stopped", "failed": "failed"}.get(status, status)


class _UnreadableEntry(Exception):
    def __init__(self, message: str, trace: str) -> None:
        super().__init__(message)
        self.trace = trace


def node_message(exc: BaseException) -> str:
    if isinstance(exc, ParamProblem):
        where = f"parameter '{exc.param}': " if exc.param else (f"input '{exc.port}': " if exc.port else "")
        return f"{where}{exc}"
    return describe_exception(exc)


__all__ = ["NodeTask", "Outcome", "node_message"]
