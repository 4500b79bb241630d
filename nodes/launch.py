"""More than one device for a trainer node: PyTorch's DistributedDataParallel, launched the way torchrun does it.

A trainer with ``devices > 1`` runs itself under ``python -m torch.distributed.run`` (torchrun),
one process per device on 127.0.0.1 and a free port, env:// rendezvous, NCCL on CUDA and gloo on
CPU. A subprocess rather than multiprocessing, because the editor's own worker is a daemon process
(which may not have children) and because torchrun is what users run by hand anyway. Inputs go
to the ranks as files through the port codecs (no pickles). Every rank runs the same trainer code on its shard of the data
(``Shard``), gradients are averaged by DDP, epoch metrics are reduced across ranks, rank 0
alone writes checkpoints and the result, and only rank 0's events reach the editor (over an
authenticated loopback connection). When nodeflow itself already runs under ``torchrun`` the trainer joins that group
instead of starting processes.

``batch_size`` stays the global batch: each rank takes its share, so the same settings give the
same optimisation on one device or several.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import queue as queue_module
import secrets
import shutil
import socket
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nodeflow.node import Event, Interrupted, ParamProblem, RunContext
from nodes.engine.checkpoint import background_checkpoints
from nodes.engine.distributed import Group, current, use_group
from nodes.engine.pipeline import available_cores
from nodes.ports import MODEL, TRAINED_MODEL, ImageSet, ModelValue


def launching(run: Callable[..., dict]) -> Callable[..., dict]:
    """Decorates a trainer's ``run``: with ``devices > 1`` (and not already inside a group) it runs
    the node under torchrun, one process per device, and returns rank 0's result."""

    @functools.wraps(run)
    def wrapper(self, ctx: RunContext, params: Any, *args: Any, **kwargs: Any) -> dict:
        devices = params.devices
        if devices > 1 and not current().active:
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # nodeflow itself was started by torchrun
                _join_torchrun_group(ctx)
                return run(self, ctx, params, *args, **kwargs)
            bound = inspect.signature(run).bind(self, ctx, params, *args, **kwargs)
            inputs = {k: v for k, v in bound.arguments.items() if k not in ("self", "ctx", "params")}
            return launch(type(self), ctx, params, inputs, devices)
        with background_checkpoints():
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


# -- the launcher side ----------------------------------------------------------------------------


def _save_inputs(inputs: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Port values as files (their codecs: JSON and safetensors, no pickles) for the ranks to load."""
    saved: dict[str, Any] = {}
    for name, value in inputs.items():
        if value is None:
            saved[name] = None
        elif isinstance(value, ModelValue):
            MODEL.codec.save(value, folder / name)
            saved[name] = {"model": name}
        elif isinstance(value, ImageSet):
            saved[name] = {"images": value.to_json()}
        else:
            raise TypeError(f"cannot hand input '{name}' ({type(value).__name__}) to training processes")
    return saved


def _load_inputs(saved: dict[str, Any], folder: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, spec in saved.items():
        if spec is None:
            out[name] = None
        elif "model" in spec:
            out[name] = MODEL.codec.load(folder / spec["model"])
        else:
            out[name] = ImageSet.from_json(spec["images"])
    return out


def launch(node_cls: type, ctx: RunContext, params: Any, inputs: dict[str, Any], devices: int,
           grace: float = 15.0) -> dict:
    """``python -m torch.distributed.run --nproc-per-node DEVICES -m nodes.launch JOB``: every
    rank runs ``node_cls().run`` on the inputs saved in JOB; rank 0 streams its events back over an
    authenticated loopback connection and writes the result. The stop button becomes a stop file."""
    import subprocess
    import sys
    from multiprocessing.connection import Listener

    backend, kind = _backend(ctx.device, devices)
    job = ctx.checkpoints / "ddp-job"
    shutil.rmtree(job, ignore_errors=True)
    job.mkdir(parents=True)
    authkey = secrets.token_bytes(16)
    listener = Listener(("127.0.0.1", 0), authkey=authkey)
    spec = {"node": f"{node_cls.__module__}:{node_cls.__qualname__}", "params": params.model_dump(mode="json"),
            "inputs": _save_inputs(inputs, job / "inputs"), "node_id": ctx.node_id, "workspace": str(ctx.workspace),
            "seed": ctx.seed, "key": ctx.key, "backend": backend, "kind": kind, "events": list(listener.address)}
    (job / "job.json").write_text(json.dumps(spec))
    messages: queue_module.Queue = queue_module.Queue()

    def receive() -> None:
        try:
            with listener.accept() as connection:
                while True:
                    messages.put(json.loads(connection.recv_bytes()))
        except (EOFError, OSError):
            pass

    threading.Thread(target=receive, daemon=True, name="ddp-events").start()
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(devices),
               "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "nodes.launch", str(job)]
    env = {**os.environ, "NODEFLOW_DDP_AUTHKEY": authkey.hex(), "OMP_NUM_THREADS":
           str(max(1, available_cores() // devices)) if kind == "cpu" else os.environ.get("OMP_NUM_THREADS", "1")}
    ctx.log(f"training in {devices} {kind.upper()} processes with DistributedDataParallel ({backend}, torchrun)")
    with open(job / "torchrun.log", "wb") as output:
        proc = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    interrupted = False
    stopped_at = None
    try:
        while True:
            try:
                message = messages.get(timeout=0.2)
            except queue_module.Empty:
                message = None
            if message is not None:
                try:
                    _forward(ctx, Event(message["kind"], ctx.node_id, message["data"]))
                except Interrupted:
                    interrupted = True
            if (interrupted or ctx.interrupted) and stopped_at is None:
                interrupted = True
                (job / "stop").touch()
                stopped_at = time.monotonic()
            if proc.poll() is not None and messages.empty():
                break
            if stopped_at is not None and time.monotonic() - stopped_at > grace:
                proc.terminate()  # ranks stuck in a collective after another one stopped
                proc.wait(timeout=30)
                break
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
        listener.close()
    errors = sorted(job.glob("error-*.json"))
    if interrupted and not (job / "result").is_dir():
        raise Interrupted(f"node '{ctx.node_id}' was interrupted")
    if errors:
        error = json.loads(errors[0].read_text())
        if error["kind"] == "Interrupted":
            raise Interrupted(f"node '{ctx.node_id}' was interrupted")
        if error["kind"] == "ParamProblem":
            raise ParamProblem(error["message"], param=error["param"], port=error["port"])
        raise RuntimeError(f"rank {error['rank']} of {devices} failed: {error['kind']}: {error['message']}\n"
                           f"{error['traceback']}")
    if proc.returncode != 0 or not (job / "result").is_dir():
        tail = (job / "torchrun.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"torchrun exited with code {proc.returncode}:\n{tail}")
    value = TRAINED_MODEL.codec.load(job / "result")
    shutil.rmtree(job, ignore_errors=True)
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


# -- the rank side --------------------------------------------------------------------------------


class _StopFile:
    """The launcher's stop button as seen by a rank: a file that appears."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def is_set(self) -> bool:
        return self.path.exists()


def main(job: Path) -> int:
    """One rank, started by torchrun (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT set by it)."""
    import importlib

    spec = json.loads((job / "job.json").read_text())
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    connection = None
    try:
        device = "cpu"
        if spec["kind"] == "cuda":
            torch.cuda.set_device(local_rank)
            device = f"cuda:{local_rank}"
        torch.distributed.init_process_group(spec["backend"], init_method="env://")
        use_group(Group(rank, world, local_rank))
        emit: Callable[[Event], None] | None = None  # only rank 0 reports progress to the editor
        if rank == 0:
            from multiprocessing.connection import Client

            connection = Client(tuple(spec["events"]), authkey=bytes.fromhex(os.environ["NODEFLOW_DDP_AUTHKEY"]))

            def send(event: Event) -> None:
                connection.send_bytes(json.dumps({"kind": event.kind, "data": event.data}, default=str).encode())

            emit = send

        module, _, name = spec["node"].partition(":")
        node_cls = getattr(importlib.import_module(module), name)
        params = node_cls.Params.model_validate(spec["params"])
        ctx = RunContext(spec["node_id"], Path(spec["workspace"]), device=device, seed=spec["seed"], emit=emit,
                         stop_flag=_StopFile(job / "stop"), key=spec["key"])  # type: ignore[arg-type]
        outputs = node_cls().run(ctx, params, **_load_inputs(spec["inputs"], job / "inputs"))
        if rank == 0:
            TRAINED_MODEL.codec.save(outputs["model"], job / "result.tmp")
            os.replace(job / "result.tmp", job / "result")
        # every rank finishes its collectives before any tears the group down: gloo aborts a rank
        # whose peer disappears mid-teardown
        torch.distributed.barrier()
        return 0
    except BaseException as exc:  # reported to the launcher, which raises it in the editor's process
        (job / f"error-{rank}.json").write_text(json.dumps({
            "rank": rank, "kind": type(exc).__name__, "message": str(exc), "param": getattr(exc, "param", None),
            "port": getattr(exc, "port", None), "traceback": traceback.format_exc()}))
        return 1
    finally:
        if connection is not None:
            connection.close()
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    import sys

    sys.exit(main(Path(sys.argv[1])))
