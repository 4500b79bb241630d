"""What one job may use on a shared server, set by its admin (``serve --users --job-memory 8G`` ...).

One frozen record, :class:`JobLimits`, travels from the server to every place a limit is applied:
the worker process that runs a project's jobs (its memory), the run context a node reads
(``ctx.limits``: image side, batch, devices, the machines a training may meet). Each field left at
None means "no limit of this server's": the one-person editor and the command line run unlimited.
A refusal names the node, its parameter and the limit (:class:`LimitExceeded`).
"""

from __future__ import annotations

from dataclasses import dataclass


class LimitExceeded(ValueError):
    """A setting over one of the server's limits; ``param`` names the node's parameter and ``limit``
    the admin's setting, so the page can point at both."""

    def __init__(self, message: str, param: str | None = None, limit: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.limit = limit


@dataclass(frozen=True)
class JobLimits:
    """The admin's limits on one job (None: none)."""

    #: bytes of memory one job's worker process may take
    memory_bytes: int | None = None
    #: the largest image side (pixels) a node may resize to
    max_image_side: int | None = None
    #: the largest batch a node may ask for
    max_batch: int | None = None
    #: processes (devices) one training may start
    max_devices: int | None = None
    #: hosts a multi-machine training may meet (None: any, as its owner chooses; empty: none)
    rendezvous_hosts: tuple[str, ...] | None = None

    @property
    def unlimited(self) -> bool:
        return self == JobLimits()


#: no limits: the one-person editor and the command line
NO_LIMITS = JobLimits()

__all__ = ["JobLimits", "LimitExceeded", "NO_LIMITS"]
