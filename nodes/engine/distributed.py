"""Training in a group of processes with PyTorch's DistributedDataParallel: this process's place in
the group (``Group``), how it shards data, wraps the trained module and reduces epoch metrics.

How the processes are started (torchrun) is ``nodes.engine.multinode``'s business; this module
only reads which group it runs in.

Ranks exchange tensors, and small facts as JSON (:func:`broadcast_json`, :func:`all_gather_json`),
never pickles: another machine of a training may be anyone who reached the rendezvous, and
``broadcast_object_list`` or ``all_gather_object`` would run what it sent.

``batch_size`` stays the global batch: each rank takes its share, so the same settings give the
same optimisation on one device or several.
"""

from __future__ import annotations

import contextvars
import functools
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nodes.engine.loop import forward
from nodes.engine.pipeline import Shard


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
    """The group this trainer runs in: set by ``multinode`` in the processes it starts, or taken from torchrun's
    environment when nodeflow was started by torchrun."""
    group = _GROUP.get()
    if group.active:
        return group
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        return Group(torch.distributed.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0")))
    return group


def use_group(group: Group) -> None:
    """Make ``group`` the one this process's trainings run in (set once per torchrun rank)."""
    _GROUP.set(group)


# -- small facts between ranks: JSON bytes in uint8 tensors ---------------------------------------

#: the most bytes one rank takes from another in one exchange: the facts are a token and a host name
EXCHANGE_LIMIT = 64 * 1024


class MalformedExchange(ValueError):
    """What another rank sent is not the JSON this rank expects (a peer that is not nodeflow's, or
    not this version's)."""


def broadcast_json(value: Any, src: int, device: torch.device, expect: Callable[[Any], bool], what: str) -> Any:
    """``value`` of rank ``src``, on every rank: its length as one int64, then its JSON as bytes
    (the layout ``broadcast_object_list`` uses, so a peer sending a pickle is read, and refused, as
    bytes). Every rank checks the length before taking the bytes; a receiver checks the decoded
    value with ``expect``. MalformedExchange names ``what`` and the sender."""
    sending = torch.distributed.get_rank() == src
    payload = _encode(value) if sending else b""
    length = torch.tensor([len(payload)], dtype=torch.int64, device=device)
    torch.distributed.broadcast(length, src)
    size = _checked_length(int(length.item()), src, what)  # the sender too: every rank stops here alike
    data = _to_tensor(payload, device) if sending else torch.empty(size, dtype=torch.uint8, device=device)
    torch.distributed.broadcast(data, src)
    return value if sending else decode_json(_to_bytes(data, size), src, expect, what)


def all_gather_json(value: Any, device: torch.device, expect: Callable[[Any], bool], what: str) -> list[Any]:
    """Every rank's ``value``, by rank: the lengths as int64s, then each rank's JSON bytes padded to
    the longest (``all_gather_object``'s layout, read as bytes). Each rank checks every length
    before taking the bytes and every decoded value with ``expect``, so all of them refuse a bad
    peer alike (MalformedExchange naming ``what`` and the rank) instead of waiting on each other."""
    world, own = torch.distributed.get_world_size(), torch.distributed.get_rank()
    payload = _encode(value)
    lengths = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world)]
    torch.distributed.all_gather(lengths, torch.tensor([len(payload)], dtype=torch.int64, device=device))
    sizes = [_checked_length(int(length.item()), rank, what) for rank, length in enumerate(lengths)]
    longest = max(sizes)
    padded = _to_tensor(payload + b"\0" * (longest - len(payload)), device)
    gathered = [torch.empty(longest, dtype=torch.uint8, device=device) for _ in range(world)]
    torch.distributed.all_gather(gathered, padded)
    return [value if rank == own else decode_json(_to_bytes(data, size), rank, expect, what)
            for rank, (data, size) in enumerate(zip(gathered, sizes))]


def _encode(value: Any) -> bytes:
    return json.dumps(value, allow_nan=False, separators=(",", ":")).encode()


def _checked_length(size: int, rank: int, what: str) -> int:
    if not 0 <= size <= EXCHANGE_LIMIT:
        raise MalformedExchange(f"rank {rank} sent {what} of {size} bytes; nodeflow's ranks send at most "
                                f"{EXCHANGE_LIMIT} (is every machine of this training running nodeflow?)")
    return size


def _to_tensor(payload: bytes, device: torch.device) -> torch.Tensor:
    return torch.frombuffer(bytearray(payload), dtype=torch.uint8).to(device) if payload else \
        torch.empty(0, dtype=torch.uint8, device=device)


def _to_bytes(data: torch.Tensor, size: int) -> bytes:
    return data[:size].cpu().numpy().tobytes()


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_json(raw: bytes, rank: int, expect: Callable[[Any], bool], what: str) -> Any:
    """The JSON value in ``raw`` that rank ``rank`` sent, if it is what ``expect`` accepts;
    MalformedExchange naming ``what`` otherwise. Bytes are only ever read as UTF-8 JSON."""
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise MalformedExchange(f"rank {rank} sent {what} that is not JSON (it starts {raw[:24]!r}); nodeflow's "
                                "ranks exchange JSON only, so it was not read (is every machine of this training "
                                "running nodeflow?)") from None
    if not expect(value):
        raise MalformedExchange(f"rank {rank} sent {what} of an unexpected form ({json.dumps(value)[:80]})")
    return value
