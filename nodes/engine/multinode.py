"""More than one device, or more than one machine, for one training: PyTorch's
DistributedDataParallel, launched the way torchrun does it.

:func:`fit_launched` takes what :func:`~nodes.engine.fit.fit` takes, plus a :class:`Launch`. With
``devices > 1`` it runs the training under ``python -m torch.distributed.run`` (torchrun), one
process per device on 127.0.0.1 and a free port, NCCL on CUDA and gloo on CPU. A subprocess rather
than multiprocessing, because the editor's own worker is a daemon process (which may not have
children) and because torchrun is what users run by hand anyway.

With ``num_nodes > 1`` every machine runs the same graph, and each machine's launcher starts its
torchrun with ``--nnodes num_nodes`` and torchrun's c10d rendezvous at ``rdzv_endpoint``. Under
``srun`` the three settings come from SLURM (:func:`machines`). The rendezvous id is a secret, so
that whoever reaches the endpoint cannot join a training as one of its machines: an HMAC of
``Launch.run_id`` (the trainer's cache key, the same on every machine but shown by the run store)
keyed with NODEFLOW_RDZV_SECRET, or, where that is unset, with a random secret kept in the shared
workspace (:func:`rendezvous_secret`). It travels to torchrun in its environment, never on a
command line or in a message. ``Launch.allowed_hosts`` (a shared server's limit) names the hosts a
rendezvous may be at; another is refused before anything connects.

Ranks exchange tensors and JSON only, never pickles (``nodes.engine.distributed``).
Everything between the launcher and its ranks goes through files in the job folder, which lies in
the run's checkpoint folder (``Hooks.checkpoints``, shared storage when there are several machines):
the machine with node_rank 0 writes the job (the config as JSON, the model as safetensors, no
pickles); global rank 0 appends what it reports to a JSON-lines file of plain ``{"kind", "data"}``
records, which this machine's launcher tails into its own hooks; a stop request is a file every
rank polls; rank 0 writes the result, and each failing rank an error file, which the launcher
raises as the engine error it was. Every rank trains on its shard of the data (``Shard``),
gradients are averaged by DDP, epoch metrics are reduced across ranks and rank 0 alone writes
checkpoints. When the caller itself already runs under ``torchrun`` the training joins that group
instead of starting processes.

``batch_size`` stays the global batch: each rank takes its share, so the same settings give the
same optimisation on one device or several.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from nodes.engine.checkpoint import background_checkpoints
from nodes.engine.distributed import Group, all_gather_json, broadcast_json, current, use_group
from nodes.engine.fit import FitConfig, FitResult, NothingToTrain, TeacherMismatch, fit
from nodes.engine.hooks import Hooks, Stopped
from nodes.engine.launch import NO_SERVER_SECRET, SECRET_ENV, Launch, Machines, SettingError, machines, parse_endpoint
from nodes.engine.loop import NonFiniteLoss
from nodes.engine.pipeline import available_cores
from nodes.engine.values import ImageSet, ModelValue, load_model, save_model

#: how long a rank waits to see the job folder that the machine with node_rank 0 wrote, before it
#: calls the workspace not shared (network file systems may cache a missing file for ~30 s)
SHARED_WAIT = 60.0
#: how long the machines wait for each other in the rendezvous (torchrun's join_timeout)
JOIN_TIMEOUT = 600
#: the same on a shared server (``Launch.allowed_hosts`` set): a training waiting for machines that
#: may never come holds one of the server's slots all that time
RESTRICTED_JOIN_TIMEOUT = 60
#: seconds, overriding both (the admin's, or a person's own)
JOIN_TIMEOUT_ENV = "NODEFLOW_RDZV_JOIN_TIMEOUT"
#: where the rendezvous secret is kept in a shared workspace when SECRET_ENV is unset
SECRET_FILE = "rendezvous.secret"
#: how often a rank looks for the stop file (it is polled before every layer's forward)
STOP_POLL = 0.25
EVENTS = "events.jsonl"
#: the hooks whose calls rank 0 writes to the events file, with the names of their positional arguments
REPORTS = {"progress": ("done", "total"), "metric": ("name", "value"), "log": ("message",),
           "preview": ("kind", "payload")}


class WorkspaceNotShared(RuntimeError):
    """The machines of one training do not see the same workspace."""


class MalformedJobFile(RuntimeError):
    """A file of the job folder (a report, an error, the result) is not what the ranks write."""


def rendezvous_id(run_id: str, secret: str) -> str:
    """The rendezvous id of the training ``run_id`` names: the same on every machine that holds
    ``secret``, and not to be found from ``run_id`` (which the run store shows) without it."""
    digest = hmac.new(secret.encode(), run_id.encode(), hashlib.sha256).hexdigest()
    return f"nodeflow-{digest[:40]}"


def rendezvous_secret(workspace: Path, launch: Launch, rank: int, environ: Mapping[str, str] | None = None,
                      wait: float | None = None) -> str:
    """The key of :func:`rendezvous_id`: NODEFLOW_RDZV_SECRET, which a shared server's admin sets on
    every machine (required there); else, on one's own machines, a random one kept in the shared
    workspace, written once by a machine with node_rank 0 and awaited by the others for up to
    ``wait`` seconds (default SHARED_WAIT; WorkspaceNotShared when it never appears)."""
    env = os.environ if environ is None else environ
    given = env.get(SECRET_ENV, "").strip()
    if given:
        if len(given) < 16:
            raise SettingError(f"{SECRET_ENV} has {len(given)} characters; give it at least 16 (e.g. the output of "
                               "`python -c \"import secrets; print(secrets.token_hex(16))\"`), the same on every "
                               "machine", "num_nodes")
        return given
    if launch.restricted:
        raise SettingError(NO_SERVER_SECRET, "num_nodes")
    path = workspace / SECRET_FILE
    if rank == 0 and not path.exists():
        workspace.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=".rendezvous-", dir=workspace)  # readable by its owner only
        with os.fdopen(handle, "w") as out:
            out.write(secrets.token_hex(32))
        try:
            os.link(name, path)  # whole or not at all, and never over one another machine wrote first
        except FileExistsError:
            pass
        finally:
            os.unlink(name)
    deadline = time.monotonic() + (SHARED_WAIT if wait is None else wait)
    while True:
        try:
            secret = path.read_text().strip()
        except FileNotFoundError:
            if time.monotonic() > deadline:
                raise WorkspaceNotShared(
                    f"workspace: {workspace} is not shared between the machines of this training: the rendezvous "
                    f"secret the machine with node_rank 0 keeps there ({path}) did not appear here within "
                    f"{SHARED_WAIT if wait is None else wait:g} s; put the workspace (--workspace) on storage every "
                    f"machine mounts at the same path, or set {SECRET_ENV} on every machine") from None
            time.sleep(0.2)
            continue
        if not re.fullmatch(r"[0-9a-f]{64}", secret):
            raise SettingError(f"{path} does not hold a rendezvous secret (64 hex digits); delete it and start the "
                               "training again on every machine", "num_nodes")
        return secret


def join_timeout(launch: Launch, environ: Mapping[str, str] | None = None) -> int:
    """Seconds the machines wait for each other: NODEFLOW_RDZV_JOIN_TIMEOUT, else short on a shared
    server (``RESTRICTED_JOIN_TIMEOUT``) and torchrun's usual wait elsewhere (``JOIN_TIMEOUT``)."""
    env = os.environ if environ is None else environ
    raw = env.get(JOIN_TIMEOUT_ENV, "").strip()
    if not raw:
        return RESTRICTED_JOIN_TIMEOUT if launch.restricted else JOIN_TIMEOUT
    try:
        seconds = int(raw)
    except ValueError:
        seconds = 0
    if not 1 <= seconds <= 86_400:
        raise SettingError(f"{JOIN_TIMEOUT_ENV}={raw!r} is not a whole number of seconds from 1 to 86400",
                           "num_nodes")
    return seconds


def fit_launched(model: ModelValue, data: ImageSet, config: FitConfig, hooks: Hooks,
                 teacher: ModelValue | None = None, launch: Launch = Launch()) -> FitResult | None:
    """``fit`` as ``launch`` says: in this process; in the group of processes this one belongs to
    when it was started by torchrun; or in ``devices`` processes on each machine, started here.
    Returns the training's result, or None on a machine after the first one (the first one has it).

    Raises what ``fit`` raises (from whichever rank raised it first), SettingError naming a launch
    setting that cannot work, and WorkspaceNotShared."""
    if not current().active:
        spread = machines(launch)
        if launch.devices > 1 or spread.several:
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # the caller itself was started by torchrun
                _join_torchrun_group(config.device)
                return fit(model, data, config, hooks, teacher)
            return _launch(model, data, config, hooks, teacher, launch, spread)
    with background_checkpoints():
        return fit(model, data, config, hooks, teacher)


def _join_torchrun_group(device: str) -> None:
    if not torch.distributed.is_initialized():
        cuda = device in ("auto", "cuda") and torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group("nccl" if cuda else "gloo")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _backend(device: str, devices: int) -> tuple[str, str]:
    """(backend, device kind) for ``devices`` processes; SettingError when there are not enough GPUs."""
    wants_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if wants_cuda:
        count = torch.cuda.device_count()
        if devices > count:
            raise SettingError(f"devices is {devices} but this machine has {count} GPU(s); set devices to at most "
                               f"{count}", "devices")
        return "nccl", "cuda"
    return "gloo", "cpu"


# -- the launcher side ----------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def _torchrun(job: Path, devices: int, spread: Machines, backend: str, kind: str, workspace: Path,
              wait: int) -> list[str]:
    """torchrun's command line; the rendezvous id goes in its environment (PET_RDZV_ID), where
    another user of the machine cannot read it as they can a command line."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(devices)]
    if spread.several:
        command += ["--nnodes", str(spread.count), "--rdzv-backend", "c10d", "--rdzv-endpoint", spread.endpoint,
                    "--rdzv-conf", f"join_timeout={wait}", "--max-restarts", "0"]
        if _is_loopback(parse_endpoint(spread.endpoint)[0]):  # every "machine" is this one
            command += ["--local-addr", "127.0.0.1"]
    else:
        command += ["--nnodes", "1", "--master-addr", "127.0.0.1", "--master-port", str(free_port())]
    return command + ["-m", __name__, str(job), backend, kind, str(SHARED_WAIT), str(workspace)]


def _write_job(job: Path, model: ModelValue, data: ImageSet, config: FitConfig, hooks: Hooks,
               teacher: ModelValue | None) -> None:
    shutil.rmtree(job, ignore_errors=True)  # a stopped or failed attempt's files
    job.mkdir(parents=True, exist_ok=True)
    save_model(model, job / "inputs" / "model")
    if teacher is not None:
        save_model(teacher, job / "inputs" / "teacher")
    spec = {"config": config.record(), "data": data.to_json(), "teacher": teacher is not None,
            "workspace": str(hooks.workspace), "token": secrets.token_hex(8)}
    (job / "job.json.tmp").write_text(json.dumps(spec))
    os.replace(job / "job.json.tmp", job / "job.json")


def _launch(model: ModelValue, data: ImageSet, config: FitConfig, hooks: Hooks, teacher: ModelValue | None,
            launch: Launch, spread: Machines, grace: float = 15.0) -> FitResult | None:
    """torchrun ``-m nodes.engine.multinode JOB``: every rank runs ``fit`` on the job in JOB. The
    machine with node_rank 0 writes the job, tails rank 0's reports into ``hooks`` and returns rank
    0's result; another machine runs its ranks and returns None. A stop request (``should_stop``, or
    a hook that raises), on any machine, becomes the stop file."""
    if hooks.checkpoints is None:
        raise ValueError("a training in several processes keeps its job files in the checkpoint folder; give one")
    devices = launch.devices
    backend, kind = _backend(config.device, devices)
    wait = join_timeout(launch)
    # several machines share a secret id; one machine's processes meet at a free local port, under an id of their own
    # (a machine waits for the first one's secret as long as it would wait for it in the rendezvous)
    rdzv_id = rendezvous_id(launch.run_id, rendezvous_secret(hooks.workspace, launch, spread.rank, wait=wait)) \
        if spread.several else f"nodeflow-{secrets.token_hex(20)}"
    job = hooks.checkpoints / "ddp-job"
    leader = spread.rank == 0
    if leader:
        _write_job(job, model, data, config, hooks, teacher)
        log_path = job / "torchrun.log"
    else:  # this machine's log stays on it: the job folder is the first machine's to clear
        handle, name = tempfile.mkstemp(prefix=f"nodeflow-torchrun-node{spread.rank}-", suffix=".log")
        os.close(handle)
        log_path = Path(name)
    processes = devices * spread.count
    where = f"{devices} {kind.upper()} process(es) on each of {spread.count} machines (this is node_rank " \
            f"{spread.rank}, rendezvous at {spread.endpoint})" if spread.several else \
            f"{devices} {kind.upper()} processes"
    hooks.log(f"training in {where} with DistributedDataParallel ({backend}, torchrun, {processes} ranks)")
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, available_cores() // devices)) if kind == "cpu"
           else os.environ.get("OMP_NUM_THREADS", "1"), "PET_RDZV_ID": rdzv_id}
    env.pop(SECRET_ENV, None)  # the ranks need no secret
    with open(log_path, "wb") as output:
        proc = subprocess.Popen(_torchrun(job, devices, spread, backend, kind, hooks.workspace, wait),
                                stdout=output, stderr=subprocess.STDOUT, env=env)
    events = _EventTail(job / EVENTS) if leader else None
    refused: BaseException | None = None  # what a hook raised (the caller's way of saying stop)
    stopped_at = None
    try:
        while True:
            finished = proc.poll() is not None
            for message in events.read() if events else ():
                if refused is None:
                    try:
                        _report(hooks, message)
                    except Exception as exc:  # noqa: BLE001 - raised once the ranks are down
                        refused = exc
            if finished:
                break
            if (refused is not None or hooks.should_stop()) and stopped_at is None:
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
    if refused is not None:
        raise refused
    stopped = stopped_at is not None or (job / "stop").exists()
    _raise_failure(job, proc.returncode, log_path, spread, stopped, devices, wait, rdzv_id)
    if not leader:
        log_path.unlink(missing_ok=True)
        hooks.log(f"this machine's part of the training is done (node_rank {spread.rank}); the machine with "
                  "node_rank 0 records the trained model")
        return None
    trained = load_model(job / "result")
    facts = _job_record(job / "result" / "fit.json", {"best_val_loss": (float, int, type(None)),
                                                      "trainable_params": (int,), "feature_cache": (dict, type(None))})
    shutil.rmtree(job, ignore_errors=True)
    return FitResult(trained, list(trained.history), facts["best_val_loss"], facts["trainable_params"],
                     facts["feature_cache"])


def _job_record(path: Path, fields: Mapping[str, tuple[type, ...]]) -> dict[str, Any]:
    """A JSON object the ranks wrote, with ``fields`` of those types; MalformedJobFile otherwise."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MalformedJobFile(f"cannot read {path}: {exc}") from None
    if not isinstance(record, dict):
        raise MalformedJobFile(f"{path} holds no JSON object")
    for name, types in fields.items():
        if not isinstance(record.get(name), types) or isinstance(record.get(name), bool) and bool not in types:
            raise MalformedJobFile(f"{path}: {name} is {record.get(name)!r}, not what a rank writes")
    return record


def _report(hooks: Hooks, message: Any) -> None:
    """One of rank 0's records, as the call of the hook it came from; MalformedJobFile for a
    record that is not one rank 0 writes."""
    if not (isinstance(message, dict) and message.get("kind") in REPORTS and isinstance(message.get("data"), dict)
            and all(name in message["data"] for name in REPORTS[message["kind"]])):
        raise MalformedJobFile(f"a record in the events file is not one rank 0 writes: {json.dumps(message)[:200]}")
    kind, data = message["kind"], dict(message["data"])
    leading = [data.pop(name) for name in REPORTS[kind]]
    try:
        getattr(hooks, kind)(*leading, **data)
    except TypeError as exc:  # a record with arguments the hook does not take
        raise MalformedJobFile(f"a {kind} record in the events file does not fit its hook: {exc}") from None


_ERROR_FIELDS = {"rank": (int,), "kind": (str,), "message": (str,), "facts": (dict,), "traceback": (str,)}


def _raise_failure(job: Path, code: int | None, log_path: Path, spread: Machines, stopped: bool, devices: int,
                   wait: int = JOIN_TIMEOUT, rdzv_id: str = "") -> None:
    """Raise what went wrong in the ranks (as the engine error they raised, when it is one), or
    nothing when the training succeeded. The rendezvous id, a secret, is cut out of what is told."""
    # the first machine needs rank 0's result; another one only that its own ranks succeeded
    done = code == 0 if spread.rank > 0 else (job / "result").is_dir()
    if stopped and not done:
        raise Stopped("stopped on request")
    errors = [_job_record(path, _ERROR_FIELDS) for path in sorted(job.glob("error-*.json"))] if job.is_dir() else []
    # the first rank that failed for a reason of its own, not because a peer went away
    errors.sort(key=lambda e: (e["kind"].startswith("Dist") or "Connection closed" in e["message"], e["rank"]))
    if errors:
        error = errors[0]
        known = _engine_error(error)
        if known is not None:
            raise known
        ranks = devices * spread.count
        raise RuntimeError(f"rank {error['rank']} of {ranks} failed: {error['kind']}: {error['message']}\n"
                           f"{error['traceback']}")
    if code == 0 and done:
        return
    tail = log_path.read_text(errors="replace")[-3000:] if log_path.exists() else ""
    if rdzv_id:
        tail = tail.replace(rdzv_id, "<rendezvous id>")
    if spread.several and ("RendezvousTimeoutError" in tail or "RendezvousConnectionError" in tail):
        raise SettingError(f"the {spread.count} machines did not meet at rdzv_endpoint {spread.endpoint} within "
                           f"{wait} s: start nodeflow with the same graph on every machine (node_rank 0 to "
                           f"{spread.count - 1}), make sure each can reach that host and port, and give them the "
                           f"same rendezvous secret ({SECRET_ENV}, or one shared workspace) (torchrun's log: "
                           f"{log_path})", "rdzv_endpoint")
    raise RuntimeError(f"torchrun exited with code {code} (its log: {log_path}):\n{tail}")


def _engine_error(error: dict[str, Any]) -> BaseException | None:
    """The engine error a rank wrote to its error file, built again, so the caller handles a
    training in several processes as it handles one in this process; None for any other error."""
    kind, message, facts = error["kind"], error["message"], error["facts"]
    if kind == "NonFiniteLoss":
        if not (all(isinstance(facts.get(name), (int, float)) for name in ("value", "batch"))
                and all(isinstance(facts.get(name), (int, float, type(None))) for name in ("epoch", "lr"))):
            return None  # told as it was written, by the caller's generic error
        found = NonFiniteLoss(facts["value"], facts["batch"])
        found.epoch, found.lr = facts["epoch"], facts["lr"]
        return found
    plain = {cls.__name__: cls for cls in (Stopped, WorkspaceNotShared, NothingToTrain, TeacherMismatch)}
    return plain[kind](message) if kind in plain else None


class _EventTail:
    """Rank 0's records as the launcher reads them: whole lines appended to a file since the last
    read. Opened afresh each time, so a network file system shows what another machine wrote."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def read(self) -> list[Any]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        whole = data[:data.rfind(b"\n") + 1]
        self.offset += len(whole)
        try:
            return [json.loads(line) for line in whole.splitlines() if line.strip()]
        except ValueError as exc:
            raise MalformedJobFile(f"a line of {self.path} is not JSON: {exc}") from None


# -- the rank side --------------------------------------------------------------------------------


def _write_report(path: Path, kind: str, *args: Any, **kwargs: Any) -> None:
    """One hook call as one JSON line ``{"kind", "data"}``, the file closed after each so another
    machine sees it."""
    line = json.dumps({"kind": kind, "data": {**dict(zip(REPORTS[kind], args)), **kwargs}}) + "\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)


class _StopFile:
    """``should_stop`` of a rank: whether the stop file exists, looked for at most every ``every``
    seconds (it is polled before every layer's forward, and a network file system is asked over the
    network); once seen, it stays set."""

    def __init__(self, path: Path, every: float) -> None:
        self.path, self.every = path, every
        self.seen, self.checked = False, float("-inf")

    def __call__(self) -> bool:
        now = time.monotonic()
        if not self.seen and now - self.checked >= self.every:
            self.checked = now
            self.seen = self.path.exists()
        return self.seen


def _rank_hooks(job: Path, rank: int, workspace: Path) -> Hooks:
    """Only rank 0 reports (through the events file); every rank polls the stop file."""
    hooks = Hooks(workspace=workspace, checkpoints=job.parent, should_stop=_StopFile(job / "stop", STOP_POLL))
    if rank == 0:
        for kind in REPORTS:
            setattr(hooks, kind, functools.partial(_write_report, job / EVENTS, kind))
    return hooks


def _read_job(job: Path, rank: int, device: torch.device, wait: float, workspace: Path) -> dict[str, Any]:
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
    token = broadcast_json(spec["token"] if spec else "", 0, device, _is_token, "the job's token")
    if rank != 0 and token:
        spec = look(token)
    seen = all_gather_json([socket.gethostname()[:255] or "?", spec is not None], device, _is_sighting,
                           "whether it saw the job")
    blind = sorted({host for host, ok in seen if not ok})
    if blind:
        raise WorkspaceNotShared(
            f"workspace: {workspace} is not shared between the machines of this training: {', '.join(blind)} "
            f"did not see the job the machine with node_rank 0 wrote ({job / 'job.json'}) within {wait:g} s; "
            "put the workspace (--workspace) on storage every machine mounts at the same path")
    assert spec is not None
    return spec


def _is_token(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{0,64}", value) is not None


def _is_sighting(value: Any) -> bool:
    """[host name, whether that rank saw the job]"""
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and 0 < len(value[0]) <= 255 \
        and isinstance(value[1], bool)


def _write_result(job: Path, result: FitResult) -> None:
    save_model(result.model, job / "result.tmp")
    facts = {"best_val_loss": result.best_val_loss, "trainable_params": result.trainable_params,
             "feature_cache": result.feature_cache}
    (job / "result.tmp" / "fit.json").write_text(json.dumps(facts))
    os.replace(job / "result.tmp", job / "result")


def main(job: Path, backend: str, kind: str, wait: float, workspace: Path) -> int:
    """One rank, started by torchrun (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT set by it)."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    try:
        device = "cpu"
        if kind == "cuda":
            torch.cuda.set_device(local_rank)
            device = f"cuda:{local_rank}"
        torch.distributed.init_process_group(backend, init_method="env://")
        use_group(Group(rank, world, local_rank))
        spec = _read_job(job, rank, torch.device(device), wait, workspace)
        config = FitConfig.from_record({**spec["config"], "device": device})
        teacher = load_model(job / "inputs" / "teacher") if spec["teacher"] else None
        with background_checkpoints():
            result = fit(load_model(job / "inputs" / "model"), ImageSet.from_json(spec["data"]), config,
                         _rank_hooks(job, rank, Path(spec["workspace"])), teacher)
        if rank == 0:
            _write_result(job, result)
        # every rank finishes its collectives before any tears the group down: gloo aborts a rank
        # whose peer disappears mid-teardown
        torch.distributed.barrier()
        return 0
    except BaseException as exc:  # reported to the launcher, which raises it in the caller's process
        job.mkdir(parents=True, exist_ok=True)
        facts = {"value": exc.value, "batch": exc.batch, "epoch": exc.epoch, "lr": exc.lr} \
            if isinstance(exc, NonFiniteLoss) else {}  # what _engine_error needs to build it again
        (job / f"error-{rank}.json").write_text(json.dumps({
            "rank": rank, "kind": type(exc).__name__, "message": str(exc), "facts": facts,
            "traceback": traceback.format_exc()}))
        return 1
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4]), Path(sys.argv[5])))
