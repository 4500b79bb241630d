"""More than one device, or more than one machine, for a trainer node: PyTorch's
DistributedDataParallel, launched the way torchrun does it.

A trainer with ``devices > 1`` runs itself under ``python -m torch.distributed.run`` (torchrun),
one process per device on 127.0.0.1 and a free port, NCCL on CUDA and gloo on CPU. A subprocess
rather than multiprocessing, because the editor's own worker is a daemon process (which may not
have children) and because torchrun is what users run by hand anyway.

With ``num_nodes > 1`` every machine runs the same graph (``nodeflow run graph.json``), and each
machine's trainer starts its torchrun with ``--nnodes num_nodes`` and torchrun's c10d rendezvous
at ``rdzv_endpoint``, the rendezvous id derived from the node's cache key so that all machines
meet in the same one. Under ``srun`` the three params come from SLURM (``machines``).

Everything between the launcher and its ranks goes through files in the job folder, which lies in
the node's checkpoint folder on the workspace (shared storage when there are several machines):
the machine with ``node_rank`` 0 writes the job (params, inputs through the port codecs, no
pickles); global rank 0 appends its events to a JSON-lines file that this machine's launcher
tails into the editor; a stop request is a file every rank polls; rank 0 writes the result, and
each failing rank an error file. Every rank trains on its shard of the data (``Shard``),
gradients are averaged by DDP, epoch metrics are reduced across ranks and rank 0 alone writes
checkpoints. When nodeflow itself already runs under ``torchrun`` the trainer joins that group
instead of starting processes.

``batch_size`` stays the global batch: each rank takes its share, so the same settings give the
same optimisation on one device or several.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nodeflow.events import Event, from_json, to_json
from nodeflow.node import Interrupted, ParamProblem, RunContext, StopFile
from nodes.engine.checkpoint import background_checkpoints
from nodes.engine.distributed import Group, current, use_group
from nodes.engine.pipeline import available_cores
from nodes.ports import MODEL, TRAINED_MODEL, ImageSet, ModelValue


#: torchrun's default port for the c10d rendezvous; under SLURM the job id is added (mod 1000), so
#: two jobs that share their first machine do not meet in one rendezvous
RDZV_PORT = 29400
#: how long a rank waits to see the job folder that the machine with node_rank 0 wrote, before it
#: calls the workspace not shared (network file systems may cache a missing file for ~30 s)
SHARED_WAIT = 60.0
#: how long the machines wait for each other in the rendezvous (torchrun's join_timeout)
JOIN_TIMEOUT = 600
#: how often a rank looks for the stop file (it is polled before every layer's forward)
STOP_POLL = 0.25
EVENTS = "events.jsonl"
ENV = {"num_nodes": "NODEFLOW_NUM_NODES", "node_rank": "NODEFLOW_NODE_RANK", "rdzv_endpoint": "NODEFLOW_RDZV_ENDPOINT"}


class WorkspaceNotShared(RuntimeError):
    """The machines of one training do not see the same workspace."""


@dataclass(frozen=True)
class Machines:
    """Which machines one training runs on: how many, this one's place, and where they meet."""

    count: int = 1
    rank: int = 0
    endpoint: str = ""

    @property
    def several(self) -> bool:
        return self.count > 1


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``node[01-04]`` → ``node01``, ``a,b`` → ``a``,
    ``gpu[3,7-9],cpu1`` → ``gpu3``, ``rack[1-2]-n[5-6]`` → ``rack1-n5``."""
    depth, first = 0, ""
    for char in nodelist.strip():
        if char == "," and depth == 0:
            break
        depth += {"[": 1, "]": -1}.get(char, 0)
        first += char
    host = re.sub(r"\[([^\]]*)\]", lambda m: m.group(1).split(",")[0].split("-")[0], first)
    if not host or "[" in host or "]" in host:
        raise ValueError(f"cannot read the node list {nodelist!r}")
    return host


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port`` (an IPv6 host in brackets) → (host, port); ValueError saying what is wrong."""
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9._-]*):(\d{1,5})", endpoint.strip())
    if match is None:
        raise ValueError(f"'{endpoint}' is not host:port (e.g. node01:{RDZV_PORT})")
    port = int(match.group(2))
    if not 0 < port < 65536:
        raise ValueError(f"port {port} of '{endpoint}' is not between 1 and 65535")
    return match.group(1).strip("[]"), port


def _slurm(env: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    """num_nodes, node_rank and rdzv_endpoint from an ``srun`` step over several machines (a batch
    script's own shell is no step: its SLURM_NNODES counts machines nothing runs on yet)."""
    if "SLURM_STEP_NUM_NODES" not in env:
        return {}
    try:
        count = int(env["SLURM_STEP_NUM_NODES"])
        tasks = int(env.get("SLURM_STEP_NUM_TASKS", count))
        rank = int(env["SLURM_NODEID"])
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env["SLURM_NODELIST"]
        host = first_host(nodelist)
        port = RDZV_PORT + int(env.get("SLURM_JOB_ID", "0")) % 1000
    except (KeyError, ValueError) as exc:
        raise ParamProblem(f"cannot read the SLURM environment of this srun step ({exc}); set num_nodes, "
                           "node_rank and rdzv_endpoint yourself", param="num_nodes") from None
    if count < 2:
        return {}
    if tasks != count:
        raise ParamProblem(f"srun started {tasks} tasks on {count} machines: start one nodeflow per machine "
                           "(srun --ntasks-per-node=1); the trainer starts one process per device itself",
                           param="num_nodes")
    return {"num_nodes": (count, "SLURM_STEP_NUM_NODES"), "node_rank": (rank, "SLURM_NODEID"),
            "rdzv_endpoint": (f"{host}:{port}", f"the first host of {nodelist}")}


def machines(params: Any, environ: Mapping[str, str] | None = None) -> Machines:
    """The machines a trainer runs on. A param left at its default (num_nodes 1, node_rank 0,
    rdzv_endpoint empty) takes its value from NODEFLOW_NUM_NODES / NODEFLOW_NODE_RANK /
    NODEFLOW_RDZV_ENDPOINT, else from SLURM inside an ``srun`` step over several machines; a
    param set to anything else in the graph wins. ParamProblem naming the param (and where its
    value came from) when they do not fit together."""
    env = os.environ if environ is None else environ
    defaults = {"num_nodes": 1, "node_rank": 0, "rdzv_endpoint": ""}
    slurm: dict[str, tuple[Any, str]] | None = None
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name, default in defaults.items():
        value = getattr(params, name, default)
        values[name], origin[name] = value, ""
        if value != default:
            continue
        if env.get(ENV[name], "").strip():
            raw = env[ENV[name]].strip()
            if name != "rdzv_endpoint":
                try:
                    raw = int(raw)
                except ValueError:
                    raise ParamProblem(f"{ENV[name]}={env[ENV[name]]!r} is not a whole number", param=name) from None
            values[name], origin[name] = raw, f" (from {ENV[name]})"
            continue
        if slurm is None:
            slurm = _slurm(env)
        if name in slurm:
            values[name], origin[name] = slurm[name][0], f" (from {slurm[name][1]})"
    count, rank, endpoint = values["num_nodes"], values["node_rank"], values["rdzv_endpoint"]
    if count < 1:
        raise ParamProblem(f"num_nodes is {count}{origin['num_nodes']}; it must be at least 1", param="num_nodes")
    if not 0 <= rank < count:
        raise ParamProblem(f"node_rank is {rank}{origin['node_rank']} but num_nodes is {count}{origin['num_nodes']}: "
                           f"number the machines 0 to {count - 1}", param="node_rank")
    if count == 1:
        return Machines()
    if not endpoint:
        raise ParamProblem(f"num_nodes is {count}{origin['num_nodes']} but rdzv_endpoint is empty: set it to "
                           f"host:port of a machine every machine can reach (usually the one with node_rank 0, "
                           f"e.g. node01:{RDZV_PORT}), or start nodeflow with srun under SLURM", param="rdzv_endpoint")
    try:
        parse_endpoint(endpoint)
    except ValueError as exc:
        raise ParamProblem(f"rdzv_endpoint{origin['rdzv_endpoint']}: {exc}", param="rdzv_endpoint") from None
    return Machines(count, rank, endpoint.strip())


def launching(run: Callable[..., dict]) -> Callable[..., dict]:
    """Decorates a trainer's ``run``: with ``devices > 1`` or several machines (and not already
    inside a group) it runs the node under torchrun, one process per device, and returns rank 0's
    result (on the machine with node_rank 0; the others return nothing, see ``Node.assists``)."""

    @functools.wraps(run)
    def wrapper(self, ctx: RunContext, params: Any, *args: Any, **kwargs: Any) -> dict:
        if not current().active:
            spread = machines(params)
            if params.devices > 1 or spread.several:
                if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # nodeflow itself was started by torchrun
                    _join_torchrun_group(ctx)
                    return run(self, ctx, params, *args, **kwargs)
                bound = inspect.signature(run).bind(self, ctx, params, *args, **kwargs)
                inputs = {k: v for k, v in bound.arguments.items() if k not in ("self", "ctx", "params")}
                return launch(type(self), ctx, params, inputs, params.devices, spread)
        with background_checkpoints():
            return run(self, ctx, params, *args, **kwargs)

    return wrapper


def assists(params: Any) -> bool:
    """Whether this machine only takes part in a training that another machine records (node_rank
    above 0); never raises: the run itself reports bad settings."""
    try:
        return machines(params).rank > 0
    except ParamProblem:
        return False


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


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def _torchrun(job: Path, devices: int, spread: Machines, key: str, backend: str, kind: str) -> list[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(devices)]
    if spread.several:
        command += ["--nnodes", str(spread.count), "--rdzv-backend", "c10d",
                    "--rdzv-endpoint", spread.endpoint, "--rdzv-id", f"nodeflow-{key[:24] or 'run'}",
                    "--rdzv-conf", f"join_timeout={JOIN_TIMEOUT}", "--max-restarts", "0"]
        if _is_loopback(parse_endpoint(spread.endpoint)[0]):  # every "machine" is this one
            command += ["--local-addr", "127.0.0.1"]
    else:
        command += ["--nnodes", "1", "--master-addr", "127.0.0.1", "--master-port", str(free_port())]
    return command + ["-m", "nodes.launch", str(job), backend, kind, str(SHARED_WAIT)]


def launch(node_cls: type, ctx: RunContext, params: Any, inputs: dict[str, Any], devices: int,
           spread: Machines = Machines(), grace: float = 15.0) -> dict:
    """torchrun ``-m nodes.launch JOB``: every rank runs ``node_cls().run`` on the inputs saved in
    JOB. The machine with node_rank 0 writes the job, tails rank 0's events into ``ctx`` and
    returns rank 0's result; another machine runs its ranks and returns nothing. The stop button,
    on any machine, becomes the stop file."""
    backend, kind = _backend(ctx.device, devices)
    job = ctx.checkpoints / "ddp-job"
    leader = spread.rank == 0
    if leader:
        shutil.rmtree(job, ignore_errors=True)  # a stopped or failed attempt's files
        job.mkdir(parents=True, exist_ok=True)
        spec = {"node": f"{node_cls.__module__}:{node_cls.__qualname__}", "params": params.model_dump(mode="json"),
                "inputs": _save_inputs(inputs, job / "inputs"), "node_id": ctx.node_id,
                "workspace": str(ctx.workspace), "seed": ctx.seed, "key": ctx.key, "token": secrets.token_hex(8)}
        (job / "job.json.tmp").write_text(json.dumps(spec))
        os.replace(job / "job.json.tmp", job / "job.json")
        log_path = job / "torchrun.log"
    else:  # this machine's log stays on it: the job folder is the first machine's to clear
        handle, name = tempfile.mkstemp(prefix=f"nodeflow-torchrun-node{spread.rank}-", suffix=".log")
        os.close(handle)
        log_path = Path(name)
    processes = devices * spread.count
    where = f"{devices} {kind.upper()} process(es) on each of {spread.count} machines (this is node_rank " \
            f"{spread.rank}, rendezvous at {spread.endpoint})" if spread.several else \
            f"{devices} {kind.upper()} processes"
    ctx.log(f"training in {where} with DistributedDataParallel ({backend}, torchrun, {processes} ranks)")
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, available_cores() // devices)) if kind == "cpu"
           else os.environ.get("OMP_NUM_THREADS", "1")}
    with open(log_path, "wb") as output:
        proc = subprocess.Popen(_torchrun(job, devices, spread, ctx.key, backend, kind), stdout=output,
                                stderr=subprocess.STDOUT, env=env)
    events = _EventTail(job / EVENTS) if leader else None
    interrupted = False
    stopped_at = None
    try:
        while True:
            finished = proc.poll() is not None
            for message in events.read() if events else ():
                try:
                    _forward(ctx, from_json({**message, "node_id": ctx.node_id}))
                except Interrupted:
                    interrupted = True
            if finished:
                break
            if (interrupted or ctx.interrupted) and stopped_at is None:
                interrupted = True
                job.mkdir(parents=True, exist_ok=True)
                (job / "stop").touch()
                stopped_at = time.monotonic()
            if stopped_at is not None and time.monotonic() - stopped_at > grace:
                proc.terminate()  # ranks stuck in a collective after another one stopped
                proc.wait(timeout=30)
                break
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
    stopped = interrupted or (job / "stop").exists()
    _raise_failure(ctx, job, proc.returncode, log_path, spread, stopped, devices)
    if not leader:
        log_path.unlink(missing_ok=True)
        ctx.log(f"this machine's part of the training is done (node_rank {spread.rank}); the machine with "
                "node_rank 0 records the trained model")
        return {}
    value = TRAINED_MODEL.codec.load(job / "result")
    shutil.rmtree(job, ignore_errors=True)
    return {"model": value}


def _raise_failure(ctx: RunContext, job: Path, code: int | None, log_path: Path, spread: Machines, stopped: bool,
                   devices: int) -> None:
    """Raise what went wrong in the ranks (as the exception they raised, when it is one the editor
    understands), or nothing when the run succeeded."""
    # the first machine needs rank 0's result; another one only that its own ranks succeeded
    done = code == 0 if spread.rank > 0 else (job / "result").is_dir()
    if stopped and not done:
        raise Interrupted(f"node '{ctx.node_id}' was interrupted")
    errors = [json.loads(path.read_text()) for path in sorted(job.glob("error-*.json"))] if job.is_dir() else []
    # the first rank that failed for a reason of its own, not because a peer went away
    errors.sort(key=lambda e: (e["kind"].startswith("Dist") or "Connection closed" in e["message"], e["rank"]))
    if errors:
        error = errors[0]
        if error["kind"] == "Interrupted":
            raise Interrupted(f"node '{ctx.node_id}' was interrupted")
        if error["kind"] == "ParamProblem":
            raise ParamProblem(error["message"], param=error["param"], port=error["port"])
        if error["kind"] == "WorkspaceNotShared":
            raise WorkspaceNotShared(error["message"])
        ranks = devices * spread.count
        raise RuntimeError(f"rank {error['rank']} of {ranks} failed: {error['kind']}: {error['message']}\n"
                           f"{error['traceback']}")
    if code == 0 and done:
        return
    tail = log_path.read_text(errors="replace")[-3000:] if log_path.exists() else ""
    if spread.several and ("RendezvousTimeoutError" in tail or "RendezvousConnectionError" in tail):
        raise ParamProblem(f"the {spread.count} machines did not meet at rdzv_endpoint {spread.endpoint} within "
                           f"{JOIN_TIMEOUT} s: start "
                           f"nodeflow with the same graph on every machine (node_rank 0 to {spread.count - 1}) and "
                           "make sure each can reach that host and port (torchrun's log: "
                           f"{log_path})", param="rdzv_endpoint")
    raise RuntimeError(f"torchrun exited with code {code} (its log: {log_path}):\n{tail}")


class _EventTail:
    """Rank 0's events as the launcher reads them: whole lines appended to a file since the last
    read. Opened afresh each time, so a network file system shows what another machine wrote."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def read(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        whole = data[:data.rfind(b"\n") + 1]
        self.offset += len(whole)
        return [json.loads(line) for line in whole.splitlines() if line.strip()]


def _forward(ctx: RunContext, event: Event) -> None:
    data = event.data
    if event.kind == "metric":
        extra = {k: v for k, v in data.items() if k not in ("name", "value", "step")}
        ctx.log_metric(data["name"], data["value"], step=data.get("step"), **extra)
    elif event.kind == "progress":
        ctx.progress(data["done"], data["total"], data.get("message", ""), data.get("epoch"), data.get("epochs"))
    elif event.kind == "log":
        ctx.log(data["message"])
    elif event.kind == "preview":
        ctx.preview(data["kind"], data["payload"])


# -- the rank side --------------------------------------------------------------------------------


def _write_event(path: Path, event: Event) -> None:
    """One event as one JSON line, the file closed after each so another machine sees it."""
    line = json.dumps(to_json(event)) + "\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)


def _read_job(job: Path, rank: int, device: torch.device, wait: float) -> dict[str, Any]:
    """The job every rank runs, once all of them see the one the machine with node_rank 0 wrote:
    rank 0 tells the others its token, each waits up to ``wait`` seconds for the file with that
    token, and all learn which machines did not see it (WorkspaceNotShared on every rank then)."""

    def look(token: str | None) -> dict[str, Any] | None:
        deadline = time.monotonic() + wait
        while True:
            try:
                spec = json.loads((job / "job.json").read_text())
                if token is None or spec.get("token") == token:
                    return spec
            except (FileNotFoundError, ValueError):
                pass
            if time.monotonic() > deadline:
                return None
            time.sleep(0.2)

    spec = look(None) if rank == 0 else None
    token = [spec["token"] if spec else ""]
    torch.distributed.broadcast_object_list(token, src=0, device=device)
    if rank != 0 and token[0]:
        spec = look(token[0])
    seen: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(seen, (socket.gethostname(), spec is not None))
    blind = sorted({host for host, ok in seen if not ok})
    if blind:
        workspace = job.parent.parent.parent
        raise WorkspaceNotShared(
            f"workspace: {workspace} is not shared between the machines of this training: {', '.join(blind)} "
            f"did not see the job the machine with node_rank 0 wrote ({job / 'job.json'}) within {wait:g} s; "
            "put the workspace (--workspace) on storage every machine mounts at the same path")
    assert spec is not None
    return spec


def main(job: Path, backend: str, kind: str, wait: float = SHARED_WAIT) -> int:
    """One rank, started by torchrun (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT set by it)."""
    import importlib

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    try:
        device = "cpu"
        if kind == "cuda":
            torch.cuda.set_device(local_rank)
            device = f"cuda:{local_rank}"
        torch.distributed.init_process_group(backend, init_method="env://")
        use_group(Group(rank, world, local_rank))
        spec = _read_job(job, rank, torch.device(device), wait)
        # only rank 0 reports progress to the editor
        emit: Callable[[Event], None] | None = functools.partial(_write_event, job / EVENTS) if rank == 0 else None
        module, _, name = spec["node"].partition(":")
        node_cls = getattr(importlib.import_module(module), name)
        params = node_cls.Params.model_validate(spec["params"])
        ctx = RunContext(spec["node_id"], Path(spec["workspace"]), device=device, seed=spec["seed"], emit=emit,
                         stop_flag=StopFile(job / "stop", every=STOP_POLL), key=spec["key"])
        outputs = node_cls().run(ctx, params, **_load_inputs(spec["inputs"], job / "inputs"))
        if rank == 0:
            TRAINED_MODEL.codec.save(outputs["model"], job / "result.tmp")
            os.replace(job / "result.tmp", job / "result")
        # every rank finishes its collectives before any tears the group down: gloo aborts a rank
        # whose peer disappears mid-teardown
        torch.distributed.barrier()
        return 0
    except BaseException as exc:  # reported to the launcher, which raises it in the editor's process
        job.mkdir(parents=True, exist_ok=True)
        (job / f"error-{rank}.json").write_text(json.dumps({
            "rank": rank, "kind": type(exc).__name__, "message": str(exc), "param": getattr(exc, "param", None),
            "port": getattr(exc, "port", None), "traceback": traceback.format_exc()}))
        return 1
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])))
