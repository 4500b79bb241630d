"""Large tensors cached in the workspace: safetensors files written in place, read back into memory
or memory-mapped, plus a per-process memory budget.

The feature cache and the decoded-image cache can hold more than fits in RAM, so entries are
written through a memory map of a temporary file laid out as safetensors (header, then the raw
tensors) and renamed into place when complete: a reader sees a whole entry or none, and the
file stays readable by any safetensors loader. Small entries are kept in a process-wide LRU so
a second epoch, run or evaluation in the same process does not even touch the disk.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

_DTYPES = {torch.float16: ("F16", np.float16), torch.float32: ("F32", np.float32), torch.uint8: ("U8", np.uint8),
           torch.int64: ("I64", np.int64), torch.int32: ("I32", np.int32)}
_BY_CODE = {code: (dtype, np_dtype) for dtype, (code, np_dtype) in _DTYPES.items()}


class EntryWriter:
    """Lays out a safetensors file for tensors of known dtype and shape; fill them through
    ``array(name)`` (numpy memory maps) and ``commit()`` to publish atomically."""

    def __init__(self, path: Path, tensors: dict[str, tuple[torch.dtype, tuple[int, ...]]],
                 metadata: dict[str, str] | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        header: dict[str, Any] = {"__metadata__": dict(metadata or {})}
        offset = 0
        self._layout: dict[str, tuple[int, np.dtype, tuple[int, ...]]] = {}
        for name, (dtype, shape) in tensors.items():
            code, np_dtype = _DTYPES[dtype]
            size = int(np.prod(shape, dtype=np.int64)) * np.dtype(np_dtype).itemsize
            header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + size]}
            self._layout[name] = (offset, np.dtype(np_dtype), tuple(shape))
            offset += size
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self._start = 8 + len(raw)
        fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(struct.pack("<Q", len(raw)) + raw)
            handle.truncate(self._start + offset)
        self._size = offset
        self._map = np.memmap(self._tmp, mode="r+", dtype=np.uint8, offset=self._start, shape=(max(offset, 1),)) \
            if offset else None

    def array(self, name: str) -> np.ndarray:
        offset, dtype, shape = self._layout[name]
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        return self._map[offset:offset + size].view(dtype).reshape(shape)

    def commit(self) -> None:
        if self._map is not None:
            self._map.flush()
            del self._map
            self._map = None
        with open(self._tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._map = None
        Path(self._tmp).unlink(missing_ok=True)


def read_entry(path: Path, in_memory: bool) -> tuple[dict[str, torch.Tensor | np.ndarray], dict[str, str]]:
    """The tensors of an entry (torch tensors in memory, or read-only numpy memory maps) and its
    metadata. Raises OSError/ValueError for a missing or damaged file."""
    path = Path(path)
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    start = 8 + length
    metadata = header.pop("__metadata__", {}) or {}
    total = max((info["data_offsets"][1] for info in header.values()), default=0)
    if path.stat().st_size < start + total:
        raise ValueError(f"cache entry {path.name} is truncated")
    mapped = np.memmap(path, mode="r", dtype=np.uint8, offset=start, shape=(max(total, 1),))
    out: dict[str, torch.Tensor | np.ndarray] = {}
    for name, info in header.items():
        dtype, np_dtype = _BY_CODE[info["dtype"]]
        lo, hi = info["data_offsets"]
        array = mapped[lo:hi].view(np_dtype).reshape(info["shape"])
        out[name] = torch.from_numpy(np.array(array)) if in_memory else array
    return out, metadata


def nbytes(tensors: dict[str, Any]) -> int:
    return sum(int(t.nbytes) for t in tensors.values())


def memory_budget() -> int:
    """Bytes of cached tensors this process keeps in RAM: NODEFLOW_CACHE_MEMORY_MB, else a quarter
    of physical memory (what does not fit is memory-mapped from the workspace instead)."""
    env = os.environ.get("NODEFLOW_CACHE_MEMORY_MB")
    if env:
        return int(float(env) * 2**20)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):
        return 2 * 2**30


def fits_gpu(size: int) -> bool:
    """Keep cached tensors on the GPU when they take at most a quarter of its free memory."""
    try:
        free, _ = torch.cuda.mem_get_info()
    except Exception:  # no CUDA, or no device visible
        return False
    return size <= free // 4


class MemoryLRU:
    """Entries by key, least recently used dropped first once their bytes exceed the budget."""

    def __init__(self) -> None:
        self._items: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Any | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: str, value: Any, size: int) -> None:
        budget = memory_budget()
        if size > budget:
            return
        with self._lock:
            self._items[key] = (value, size)
            self._items.move_to_end(key)
            while sum(s for _, s in self._items.values()) > budget and len(self._items) > 1:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


#: process-wide: the trainer's epochs, a re-run of a node and the evaluate node share it
MEMORY = MemoryLRU()
