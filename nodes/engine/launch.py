"""Where one training runs, read from its settings and the environment (NODEFLOW_*, SLURM): how
many machines, this one's place among them, where they meet, and whether a shared server allows
it. Plain Python, no torch: checking a graph asks it (a trainer's launch params) without paying for
torch's import; :mod:`nodes.engine.multinode` runs the training there.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: torchrun's default port for the c10d rendezvous; under SLURM the job id is added (mod 1000), so
#: two jobs that share their first machine do not meet in one rendezvous
RDZV_PORT = 29400
#: the key of the rendezvous id's HMAC, the same on every machine of a training (at least 16 characters)
SECRET_ENV = "NODEFLOW_RDZV_SECRET"
ENV = {"num_nodes": "NODEFLOW_NUM_NODES", "node_rank": "NODEFLOW_NODE_RANK", "rdzv_endpoint": "NODEFLOW_RDZV_ENDPOINT"}


class SettingError(ValueError):
    """A launch setting cannot work; ``setting`` names it (devices, num_nodes, node_rank, rdzv_endpoint)."""

    def __init__(self, message: str, setting: str = "") -> None:
        super().__init__(message)
        self.setting = setting


@dataclass(frozen=True)
class Launch:
    """Where one training runs: ``devices`` processes on each of ``num_nodes`` machines, this one
    being ``node_rank``, meeting at ``rdzv_endpoint``. The defaults (one machine, rank 0, no
    endpoint) may be filled from the environment (:func:`machines`). ``run_id`` is the same on
    every machine (the trainer's cache key); the rendezvous id is a secret derived from it
    (:func:`rendezvous_id`). ``allowed_hosts``: the hosts a rendezvous may be at (a shared
    server's admin names them; empty: one machine only; None: any, as on one's own machines)."""

    devices: int = 1
    num_nodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str = ""
    run_id: str = ""
    allowed_hosts: tuple[str, ...] | None = None

    @property
    def restricted(self) -> bool:
        return self.allowed_hosts is not None


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
        raise SettingError(f"cannot read the SLURM environment of this srun step ({exc}); set num_nodes, "
                           "node_rank and rdzv_endpoint yourself", "num_nodes") from None
    if count < 2:
        return {}
    if tasks != count:
        raise SettingError(f"srun started {tasks} tasks on {count} machines: start one nodeflow per machine "
                           "(srun --ntasks-per-node=1); the trainer starts one process per device itself",
                           "num_nodes")
    return {"num_nodes": (count, "SLURM_STEP_NUM_NODES"), "node_rank": (rank, "SLURM_NODEID"),
            "rdzv_endpoint": (f"{host}:{port}", f"the first host of {nodelist}")}


def machines(launch: Launch, environ: Mapping[str, str] | None = None) -> Machines:
    """The machines a training runs on. A setting left at its default (num_nodes 1, node_rank 0,
    rdzv_endpoint empty) takes its value from NODEFLOW_NUM_NODES / NODEFLOW_NODE_RANK /
    NODEFLOW_RDZV_ENDPOINT, else from SLURM inside an ``srun`` step over several machines; a
    setting given anything else wins. SettingError naming the setting (and where its value came
    from) when they do not fit together."""
    env = os.environ if environ is None else environ
    defaults = Launch()
    slurm: dict[str, tuple[Any, str]] | None = None
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name in ENV:
        value = getattr(launch, name)
        values[name], origin[name] = value, ""
        if value != getattr(defaults, name):
            continue
        if env.get(ENV[name], "").strip():
            raw = env[ENV[name]].strip()
            if name != "rdzv_endpoint":
                try:
                    raw = int(raw)
                except ValueError:
                    raise SettingError(f"{ENV[name]}={env[ENV[name]]!r} is not a whole number", name) from None
            values[name], origin[name] = raw, f" (from {ENV[name]})"
            continue
        if slurm is None:
            slurm = _slurm(env)
        if name in slurm:
            values[name], origin[name] = slurm[name][0], f" (from {slurm[name][1]})"
    count, rank, endpoint = values["num_nodes"], values["node_rank"], values["rdzv_endpoint"]
    if count < 1:
        raise SettingError(f"num_nodes is {count}{origin['num_nodes']}; it must be at least 1", "num_nodes")
    if not 0 <= rank < count:
        raise SettingError(f"node_rank is {rank}{origin['node_rank']} but num_nodes is {count}{origin['num_nodes']}: "
                           f"number the machines 0 to {count - 1}", "node_rank")
    if launch.allowed_hosts is not None and (count > 1 or endpoint.strip()):
        _check_allowed(launch.allowed_hosts, count, origin["num_nodes"], endpoint.strip(), origin["rdzv_endpoint"])
        if count > 1 and not env.get(SECRET_ENV, "").strip():
            raise SettingError(NO_SERVER_SECRET, "num_nodes")
    if count == 1:
        return Machines()
    if not endpoint:
        raise SettingError(f"num_nodes is {count}{origin['num_nodes']} but rdzv_endpoint is empty: set it to "
                           f"host:port of a machine every machine can reach (usually the one with node_rank 0, "
                           f"e.g. node01:{RDZV_PORT}), or start nodeflow with srun under SLURM", "rdzv_endpoint")
    try:
        parse_endpoint(endpoint)
    except ValueError as exc:
        raise SettingError(f"rdzv_endpoint{origin['rdzv_endpoint']}: {exc}", "rdzv_endpoint") from None
    return Machines(count, rank, endpoint.strip())


#: the refusal of a multi-machine training on a shared server without the rendezvous secret
NO_SERVER_SECRET = (f"multi-machine training on this server needs its admin to set {SECRET_ENV} (the same secret on "
                     "every machine of a training); until then set num_nodes to 1")


def normal_host(host: str) -> str:
    """A host as the rendezvous limit compares it, resolving nothing: lower case, no brackets or
    trailing dot, an IP address in its canonical form (``::0:1`` → ``::1``)."""
    host = host.strip().strip("[]").rstrip(".").lower()
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def _check_allowed(allowed: tuple[str, ...], count: int, count_origin: str, endpoint: str,
                   endpoint_origin: str) -> None:
    """SettingError unless a training of ``count`` machines meeting at ``endpoint`` keeps to the
    hosts a shared server's admin allows (``serve --rendezvous-hosts``)."""
    if not allowed:
        setting, said = ("rdzv_endpoint", f"rdzv_endpoint is {endpoint!r}{endpoint_origin}") if endpoint else \
            ("num_nodes", f"num_nodes is {count}{count_origin}")
        raise SettingError(f"{said}, but this server trains on one machine only (its admin allows no rendezvous "
                           "hosts, --rendezvous-hosts): set num_nodes to 1 and leave rdzv_endpoint empty", setting)
    try:
        host = parse_endpoint(endpoint)[0]
    except ValueError as exc:
        raise SettingError(f"rdzv_endpoint{endpoint_origin}: {exc}", "rdzv_endpoint") from None
    hosts = sorted({normal_host(h) for h in allowed})
    if normal_host(host) not in hosts:
        raise SettingError(f"rdzv_endpoint is {endpoint!r}{endpoint_origin}, but this server's admin allows "
                           f"multi-machine trainings to meet only at {', '.join(hosts)} (--rendezvous-hosts): "
                           "use one of those hosts, or set num_nodes to 1 and leave rdzv_endpoint empty",
                           "rdzv_endpoint")


def assists(launch: Launch) -> bool:
    """Whether this machine only takes part in a training that another machine records (node_rank
    above 0); never raises: the training itself reports bad settings."""
    try:
        return machines(launch).rank > 0
    except SettingError:
        return False
