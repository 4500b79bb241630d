"""What one job may use on a shared server, set by its admin (``serve --users --job-memory 8G`` ...).

One frozen record, :class:`JobLimits`, travels from the server to every place a limit is applied:
the worker process that runs a project's jobs and the one that measures its estimates (their
memory, see :func:`limit_memory`), the run context a node reads (``ctx.limits``: image side, batch,
devices, the machines a training may meet). Each field left at None means "no limit of this
server's": the one-person editor and the command line run unlimited. A refusal names the node's
parameter and the admin's flag (:class:`LimitExceeded`), so the person knows what to change and
whom to ask.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from nodeflow.words import size_words


class LimitExceeded(ValueError):
    """A setting over one of the server's limits; ``param`` names the node's parameter and ``limit``
    the admin's setting, so the page can point at both."""

    def __init__(self, message: str, param: str | None = None, limit: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.limit = limit


@dataclass(frozen=True)
class JobLimits:
    """The admin's limits on one job (None: none). Each field's ``flag`` is the ``serve`` option that
    sets it, and ``what`` how a refusal words it: both are said where the limit is applied."""

    #: bytes of memory one job's worker process may take
    memory_bytes: int | None = field(default=None, metadata={"flag": "--job-memory",
                                                             "what": "memory limit per job"})
    #: the largest image side (pixels) a node may resize to
    max_image_side: int | None = field(default=None, metadata={"flag": "--max-image-side",
                                                               "what": "largest image side (pixels)"})
    #: the largest batch a node may ask for
    max_batch: int | None = field(default=None, metadata={"flag": "--max-batch", "what": "largest batch"})
    #: processes (devices) one training may start
    max_devices: int | None = field(default=None, metadata={"flag": "--max-devices",
                                                            "what": "devices per training"})
    #: hosts a multi-machine training may meet (None: any, as its owner chooses; empty: none)
    rendezvous_hosts: tuple[str, ...] | None = field(default=None, metadata={
        "flag": "--rendezvous-hosts", "what": "machines a training may meet"})

    @property
    def unlimited(self) -> bool:
        return self == JobLimits()

    # -- the refusals nodes raise, before any work starts ------------------------------------------------
    def check_image_side(self, value: int, param: str) -> None:
        """Refuse an image side (a formatter's height, width or resize_to) over ``max_image_side``."""
        self._check("max_image_side", value, param)

    def check_batch(self, value: int, param: str = "batch_size") -> None:
        """Refuse a batch over ``max_batch``."""
        self._check("max_batch", value, param)

    def check_devices(self, value: int, param: str = "devices") -> None:
        """Refuse a training on more devices (processes) than ``max_devices``."""
        self._check("max_devices", value, param)

    def _check(self, name: str, value: int, param: str) -> None:
        limit = getattr(self, name)
        if limit is None or value <= limit:
            return
        flag, what = _meta(name)
        raise LimitExceeded(f"{param} {value} is over this server's {what}, {limit} (serve {flag}); set {param} to "
                            f"{limit} or less, or ask the server's admin", param=param, limit=flag)

    # -- memory ------------------------------------------------------------------------------------------
    @property
    def memory_words(self) -> str:
        """``memory_bytes`` as a person reads it: 8 GiB, 1.5 GiB, 512 MiB."""
        return size_words(self.memory_bytes or 0)

    def over_memory(self, detail: str) -> str:
        """What a job that failed for want of memory under ``memory_bytes`` is told: the limit by its
        size and flag, so it is not mistaken for the machine running out."""
        flag, what = _meta("memory_bytes")
        return (f"needed more memory than this server allows one job ({detail.strip() or 'MemoryError'}): over this "
                f"server's {what}, {self.memory_words} (serve {flag}); try a smaller batch_size or smaller images")

    def name_memory_limit(self, error: str | None) -> str | None:
        """``error`` said again as :meth:`over_memory` when it is a want of (host) memory under a memory
        limit; as it was otherwise."""
        if error is None or self.memory_bytes is None or not memory_failure(error):
            return error
        return self.over_memory(error)

    def died_under(self, cause: str) -> str:
        """Why a process running a job died, with the memory limit it ran under: a process over
        RLIMIT_DATA that cannot raise MemoryError (a C++ library's abort) dies instead."""
        if self.memory_bytes is None:
            return cause
        flag, what = _meta("memory_bytes")
        return (f"{cause}; it ran under this server's {what}, {self.memory_words} (serve {flag}), and a job that "
                "needs more than that ends so: try a smaller batch_size or smaller images")


def _meta(name: str) -> tuple[str, str]:
    found = next(f for f in fields(JobLimits) if f.name == name)
    return found.metadata["flag"], found.metadata["what"]


def flag_of(name: str) -> str:
    """The ``serve`` option that sets the limit ``name`` (a field of :class:`JobLimits`)."""
    return _meta(name)[0]


#: no limits: the one-person editor and the command line
NO_LIMITS = JobLimits()

#: how running out of host memory reads in an error: Python's MemoryError (numpy's too), torch's CPU
#: allocator, the C library; never a GPU's memory, which the job memory limit does not cover
_MEMORY = re.compile(r"MemoryError|can't allocate memory|Cannot allocate memory|std::bad_alloc|\bENOMEM\b")


def memory_failure(error: str) -> bool:
    """Whether ``error`` (a node's failure message or traceback) is a want of host memory."""
    return bool(_MEMORY.search(error)) and "CUDA" not in error


def limit_memory(count: int | None) -> None:
    """Hold this process (and what it starts) to ``count`` bytes of memory, for good: RLIMIT_DATA, the
    heap and every private writable mapping, which is what malloc, numpy and torch's CPU allocator
    take. An allocation over it fails in that process (MemoryError), and the limit cannot be raised
    again from inside. Address space reserved without being writable is not counted, as it would be
    by RLIMIT_AS: CUDA reserves far more than it uses. Not on platforms without ``resource``."""
    if count is None:
        return
    try:
        import resource
    except ImportError:  # Windows: no rlimits
        return
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    count = count if hard == resource.RLIM_INFINITY else min(count, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (count, count))


# -- a class server's defaults ---------------------------------------------------------------------------

#: the largest image side a class server allows by default (ImageNet's 224, or 384 and 448, fit)
CLASS_IMAGE_SIDE = 512
#: the largest batch a class server allows by default
CLASS_BATCH = 256
#: the projects one person may have open at once on a class server (each holds files and threads open)
CLASS_OPEN_PROJECTS = 5
#: the least memory a job may be given: a worker with torch and the catalogue takes about 1 GiB to start
MIN_JOB_MEMORY = 2**30


def machine_memory() -> int | None:
    """This machine's memory in bytes (None where it cannot be told)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def machine_devices(device: str = "auto") -> int:
    """How many devices one training could use on this machine, told without importing torch (the
    command line refuses bad flags before torch loads): the NVIDIA GPUs the driver lists, as many as
    CUDA_VISIBLE_DEVICES leaves visible; one (the CPU, or the one device named) otherwise."""
    if device in ("cpu", "mps") or device.startswith("cuda:"):
        return 1
    gpus = Path("/proc/driver/nvidia/gpus")
    count = len(list(gpus.iterdir())) if gpus.is_dir() else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        names = []
        for name in visible.split(","):
            if not name.strip() or name.strip().startswith("-"):  # CUDA stops at the first invalid entry
                break
            names.append(name)
        count = min(count, len(names))
    return max(count, 1)


def class_limits(device: str = "auto") -> JobLimits:
    """What a class server (``serve --users``) allows one job when its admin sets nothing: half the
    machine's memory, images up to 512 pixels a side, batches up to 256, the machine's devices, and
    no training that meets other machines."""
    memory = machine_memory()
    return JobLimits(memory_bytes=max(memory // 2, MIN_JOB_MEMORY) if memory else None,
                     max_image_side=CLASS_IMAGE_SIDE, max_batch=CLASS_BATCH, max_devices=machine_devices(device),
                     rendezvous_hosts=())


__all__ = ["CLASS_BATCH", "CLASS_IMAGE_SIDE", "CLASS_OPEN_PROJECTS", "JobLimits", "LimitExceeded", "MIN_JOB_MEMORY",
           "NO_LIMITS", "class_limits", "flag_of", "limit_memory", "machine_devices", "machine_memory",
           "memory_failure"]
