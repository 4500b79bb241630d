"""Training in a group of processes with PyTorch's DistributedDataParallel: this process's place in
the group (``Group``), how it shards data, wraps the trained module and reduces epoch metrics.

How the processes are started (torchrun) is ``nodes.engine.multinode``'s business; this module
only reads which group it runs in.

``batch_size`` stays the global batch: each rank takes its share, so the same settings give the
same optimisation on one device or several.
"""

from __future__ import annotations

import contextvars
import functools
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
