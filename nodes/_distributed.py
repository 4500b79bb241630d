"""More than one device: PyTorch's DistributedDataParallel, launched the way torchrun does it.

A trainer with ``devices > 1`` starts one process per device with torchrun's environment (RANK,
LOCAL_RANK, WORLD_SIZE, MASTER_ADDR=127.0.0.1, a free MASTER_PORT) and the env:// rendezvous;
NCCL on CUDA, gloo on CPU. Every rank runs the same trainer code on its shard of the data
(``Shard``), gradients are averaged by DDP, epoch metrics are reduced across ranks, rank 0
alone writes checkpoints and the result, and only rank 0's events reach the editor (through a
queue). When nodeflow itself already runs under ``torchrun`` the trainer joins that group
instead of starting processes.

``batch_size`` stays the global batch: each rank takes its share, so the same settings give the
same optimisation on one device or several.
"""

from __future__ import annotations

import contextvars
import functools
import math
import os
import queue as queue_module
import shutil
import socket
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nodeflow.node import Event, Interrupted, ParamProblem, RunContext
from nodes._pipeline import Shard, available_cores
from nodes._training import forward


@dataclass(frozen=True)
class Group:
    """This process's place in a training group; the default is a group of one."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def shard(self, seed: int) -> Shard | None:
        return Shard(self.rank, self.world, seed) if self.active else None

    def per_rank(self, batch_size: int) -> int:
        return max(1, math.ceil(batch_size / self.world))

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def main_first(self, build: Callable[[], Any]) -> Any:
        """Rank 0 builds (and caches on disk) first; the others then find its result."""
        if not self.active:
            return build()
        if self.is_main:
            result = build()
            self.barrier()
            return result
        self.barrier()
        return build()

    def main_only(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs) if self.is_main else None
        return call

    def wrap(self, body: nn.Module, prefix: int, device: torch.device, compile: bool = False) -> tuple[nn.Module, int]:
        """``body`` (running its first ``prefix`` blocks without a graph) inside DDP and/or
        torch.compile, as a one-block Sequential so the trainer's loop calls the wrapper's forward
        (DDP's syncs gradients) rather than the wrapped blocks one by one."""
        if not self.active and not compile:
            return body, prefix
        module: nn.Module = _Prefixed(body, prefix)
        if self.active:
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index if device.index is not None else self.local_rank] if device.type == "cuda" else None
            module = DistributedDataParallel(module, device_ids=ids)
        if compile:
            module = torch.compile(module)
        return nn.Sequential(module), 0

    def reduce(self, train: tuple[float, float, int], val: tuple[float, float, int]) -> tuple[float, float, float, float]:
        """Epoch means over all ranks from each rank's (loss, accuracy, count)."""
        (tl, ta, tn), (vl, va, vn) = train, val
        if not self.active:
            return tl, ta, vl, va
        device = torch.device("cuda", torch.cuda.current_device()) \
            if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
        sums = torch.tensor([tl * tn, ta * tn, tn, vl * vn if vn else 0.0, va * vn if vn else 0.0, vn],
                            dtype=torch.float64, device=device)
        torch.distributed.all_reduce(sums)
        tl, ta, tn, vl, va, vn = sums.tolist()
        return tl / max(tn, 1), ta / max(tn, 1), (vl / vn if vn else math.nan), (va / vn if vn else math.nan)


class _Prefixed(nn.Module):
    def __init__(self, net: nn.Module, prefix: int) -> None:
        super().__init__()
        self.net, self.prefix = net, prefix

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return forward(self.net, images, self.prefix)


_GROUP: contextvars.ContextVar[Group] = contextvars.ContextVar("nodeflow_group", default=Group())


def current() -> Group:
    """The group this trainer runs in: set by ``launch`` in its processes, or taken from torchrun's
    environment when nodeflow was started by torchrun."""
    group = _GROUP.get()
    if group.active:
        return group
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        return Group(torch.distributed.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0")))
    return group


def launching(run: Callable[..., dict]) -> Callable[..., dict]:
    """Decorates a trainer's ``run``: with ``devices > 1`` (and not already inside a group) it starts
    one process per device and returns rank 0's result."""

    @functools.wraps(run)
    def wrapper(self, ctx: RunContext, params: Any, *args: Any, **kwargs: Any) -> dict:
        devices = getattr(params, "devices", 1)
        if devices > 1 and not current().active:
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                _join_torchrun_group(ctx)
                return run(self, ctx, params, *args, **kwargs)
            return launch(type(self), ctx, params, args, kwargs, devices)
        return run(self, ctx, params, *args, **kwargs)

    return wrapper


def _join_torchrun_group(ctx: RunContext) -> None:
    if not torch.distributed.is_initialized():
        cuda = ctx.device in ("auto", "cuda") and torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group("nccl" if cuda else "gloo")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _backend(device: str, devices: int) -> tuple[str, str]:
    """(backend, device kind) for ``devices`` processes; ParamProblem when there are not enough GPUs."""
    wants_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if wants_cuda:
        count = torch.cuda.device_count()
        if devices > count:
            raise ParamProblem(f"devices is {devices} but this machine has {count} GPU(s); set devices to at most "
                               f"{count}", param="devices")
        return "nccl", "cuda"
    return "gloo", "cpu"


def launch(node_cls: type, ctx: RunContext, params: Any, args: tuple, kwargs: dict, devices: int) -> dict:
    """Run ``node_cls().run`` in ``devices`` processes (torchrun semantics) and return rank 0's outputs,
    forwarding its events to ``ctx`` and ``ctx``'s stop button to every rank."""
    import torch.multiprocessing as mp

    from nodes._values import TRAINED_MODEL

    backend, kind = _backend(ctx.device, devices)
    spawn = mp.get_context("spawn")
    events, stop = spawn.Queue(), spawn.Event()
    result = ctx.checkpoints / "ddp-result"
    shutil.rmtree(result, ignore_errors=True)
    setup = {"port": free_port(), "world": devices, "backend": backend, "kind": kind, "node_id": ctx.node_id,
             "workspace": str(ctx.workspace), "seed": ctx.seed, "key": ctx.key, "result": str(result)}
    ctx.log(f"starting {devices} {kind.upper()} processes for DistributedDataParallel ({backend})")
    procs = [spawn.Process(target=_worker, args=(rank, setup, node_cls, params, args, kwargs, events, stop),
                           daemon=True) for rank in range(devices)]
    for proc in procs:
        proc.start()
    failure: tuple | None = None
    interrupted = False
    finished: set[int] = set()
    try:
        while len(finished) < devices:
            try:
                message = events.get(timeout=0.2)
            except queue_module.Empty:
                message = None
            if message is not None:
                if message[0] == "event":
                    try:
                        _forward(ctx, message[1])
                    except Interrupted:
                        interrupted = True
                        stop.set()
                elif message[0] == "done":
                    finished.add(message[1])
                elif message[0] == "error":
                    failure = failure or message
                    finished.add(message[1])
                    stop.set()
                    break
            if ctx.interrupted and not stop.is_set():
                interrupted = True
                stop.set()
            dead = [rank for rank, proc in enumerate(procs) if not proc.is_alive() and rank not in finished]
            if dead and message is None:
                failure = failure or ("error", dead[0], "RuntimeError",
                                      f"training process {dead[0]} exited with code {procs[dead[0]].exitcode}",
                                      None, None, "")
                break
    finally:
        for proc in procs:
            proc.join(timeout=5 if failure is None else 1)
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
    if failure is not None:
        _, rank, kind_name, message, param, port, trace = failure
        if kind_name == "Interrupted" or interrupted:
            raise Interrupted(f"node '{ctx.node_id}' was interrupted")
        if kind_name == "ParamProblem":
            raise ParamProblem(message, param=param, port=port)
        raise RuntimeError(f"rank {rank} of {devices}: {kind_name}: {message}\n{trace}")
    if interrupted:
        raise Interrupted(f"node '{ctx.node_id}' was interrupted")
    value = TRAINED_MODEL.codec.load(result)
    shutil.rmtree(result, ignore_errors=True)
    return {"model": value}


def _forward(ctx: RunContext, event: Event) -> None:
    data = event.data
    if event.kind == "metric":
        extra = {k: v for k, v in data.items() if k not in ("name", "value", "step")}
        ctx.log_metric(data["name"], data["value"], step=data.get("step"), **extra)
    elif event.kind == "progress":
        ctx.progress(data["done"], data["total"], data.get("message", ""))
    elif event.kind == "log":
        ctx.log(data["message"])
    elif event.kind == "preview":
        ctx.preview(data["kind"], data["payload"])


def _worker(rank: int, setup: dict, node_cls: type, params: Any, args: tuple, kwargs: dict, events, stop) -> None:
    """One rank: torchrun's environment, the process group, then the trainer's own ``run``."""
    world = setup["world"]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(setup["port"]), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    device = "cpu"
    try:
        if setup["kind"] == "cuda":
            torch.cuda.set_device(rank)
            device = f"cuda:{rank}"
        else:
            torch.set_num_threads(max(1, available_cores() // world))
        torch.distributed.init_process_group(setup["backend"], init_method="env://", rank=rank, world_size=world)
        _GROUP.set(Group(rank, world, rank))
        emit = (lambda event: events.put(("event", event))) if rank == 0 else (lambda event: None)
        ctx = RunContext(setup["node_id"], Path(setup["workspace"]), device=device, seed=setup["seed"], emit=emit,
                         stop_flag=stop, key=setup["key"])
        outputs = node_cls().run(ctx, params, *args, **kwargs)
        if rank == 0:
            from nodes._values import TRAINED_MODEL

            result = Path(setup["result"])
            result.mkdir(parents=True, exist_ok=True)
            TRAINED_MODEL.codec.save(outputs["model"], result)
        events.put(("done", rank))
    except BaseException as exc:  # reported to the launcher, which raises it in the editor's process
        param = getattr(exc, "param", None)
        port = getattr(exc, "port", None)
        events.put(("error", rank, type(exc).__name__, str(exc), param, port, traceback.format_exc()))
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
