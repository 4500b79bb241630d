"""Node outputs by cache key, in memory and on disk in the workspace."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from nodeflow.files import atomic_write_text
from nodeflow.node import Node

MEMORY_ENTRIES = 64


class Cache:
    """Node outputs by cache key: in memory for this process, on disk for nodes whose outputs
    can be written (every output port type has a codec)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = Path(folder) if folder is not None else None
        self._memory: OrderedDict[str, tuple[dict[str, Any], dict[str, float]]] = OrderedDict()
        #: keys whose values live in another process's memory (a worker's), with their metrics
        self._elsewhere: dict[str, dict[str, float]] = {}
        #: the report tables (``ctx.table``) of results kept only in memory
        self._tables: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def _entry(self, key: str) -> Path | None:
        return self.folder / key[:2] / key if self.folder is not None else None

    def has(self, key: str) -> bool:
        if key in self._memory or key in self._elsewhere:
            return True
        entry = self._entry(key)
        return entry is not None and (entry / "meta.json").is_file()

    def get(self, key: str, node: type[Node]) -> tuple[dict[str, Any], dict[str, float]]:
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                return self._memory[key]
        entry = self._entry(key)
        if entry is None:
            raise KeyError(key)
        meta = json.loads((entry / "meta.json").read_text())
        outputs = {}
        for port in node.outputs:
            if port.name in meta["ports"]:
                assert port.type.codec is not None
                outputs[port.name] = port.type.codec.load(entry / port.name)
        value = (outputs, meta.get("metrics", {}))
        self._remember(key, value)
        return value

    def _remember(self, key: str, value: tuple[dict[str, Any], dict[str, float]]) -> None:
        """Keep the most recently used results in memory; older ones are reloaded from disk (or,
        without a codec, recomputed), so a long editing session does not hoard every model."""
        with self._lock:
            self._memory[key] = value
            self._memory.move_to_end(key)
            while len(self._memory) > MEMORY_ENTRIES:
                self._memory.popitem(last=False)

    def metrics(self, key: str) -> dict[str, float]:
        with self._lock:
            if key in self._memory:
                return dict(self._memory[key][1])
            if key in self._elsewhere:
                return dict(self._elsewhere[key])
        entry = self._entry(key)
        try:
            return dict(json.loads((entry / "meta.json").read_text()).get("metrics", {})) if entry else {}
        except (OSError, ValueError):
            return {}

    def tables(self, key: str) -> dict[str, Any]:
        """The report tables a node put beside its metrics (``ctx.table``), for a cached node's report."""
        with self._lock:
            if key in self._tables:
                return dict(self._tables[key])
        entry = self._entry(key)
        try:
            return dict(json.loads((entry / "meta.json").read_text()).get("tables", {})) if entry else {}
        except (OSError, ValueError):
            return {}

    def files(self, key: str) -> Path | None:
        """The folder of the files a node wrote (``ctx.scratch``) for a persisted result, if any."""
        entry = self._entry(key)
        return entry / "files" if entry is not None and (entry / "files").is_dir() else None

    def put(self, key: str, node: type[Node], outputs: dict[str, Any], metrics: dict[str, float],
            scratch: Path | None = None, tables: dict[str, Any] | None = None) -> Path | None:
        """Keep a node's results; returns where the files of ``scratch`` were moved to, if anywhere."""
        self._remember(key, (outputs, dict(metrics)))
        entry = self._entry(key)
        if entry is None or not persistent(node):
            if tables:
                with self._lock:
                    self._tables[key] = dict(tables)
            return None
        entry.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key[:8]}-", dir=entry.parent))
        try:
            for port in node.outputs:
                if port.name in outputs:
                    assert port.type.codec is not None
                    (staging / port.name).mkdir()
                    port.type.codec.save(outputs[port.name], staging / port.name)
            if scratch is not None and scratch.exists():
                shutil.copytree(scratch, staging / "files")
            meta = {"node_type": node.type, "ports": sorted(outputs), "metrics": metrics, "created": time.time()}
            if tables:
                meta["tables"] = tables
            atomic_write_text(staging / "meta.json", json.dumps(meta))
            if entry.exists():
                shutil.rmtree(entry)
            staging.rename(entry)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return entry / "files" if scratch is not None and scratch.exists() else None

    def computing(self, key: str, node: type[Node]):
        """Hold the cache key while its node is computed, so processes that share the workspace
        (workers on other machines too, the folder being shared) compute one key once: the second
        waits here, then finds the entry the first wrote. A ``filelock.FileLock`` (an OS lock on a
        file beside the entry) is released by the OS when its holder dies, so a crashed worker
        leaves no stale lock behind. Only persisted outputs are worth it; others are a no-op."""
        entry = self._entry(key)
        if entry is None or not persistent(node):
            return contextlib.nullcontext()
        from filelock import FileLock

        entry.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(entry.parent / f".{key}.lock"))

    def quarantine(self, key: str) -> Path | None:
        """Move a damaged entry out of the way (never delete it silently); returns where it went."""
        with self._lock:
            self._memory.pop(key, None)
        entry = self._entry(key)
        if entry is None or not entry.exists():
            return None
        aside = entry.with_name(f"{entry.name}.damaged-{int(time.time())}")
        entry.rename(aside)
        return aside

    def memory_metrics(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {key: dict(metrics) for key, (_, metrics) in self._memory.items()}

    def set_elsewhere(self, metrics_by_key: dict[str, dict[str, float]]) -> None:
        """Record what a worker process holds in memory, so status and plans here count it."""
        with self._lock:
            self._elsewhere = dict(metrics_by_key)


def persistent(node: type[Node]) -> bool:
    """Whether a node's outputs are written to disk: unless it opts out, when every output type
    can be saved."""
    return node.persist and all(p.type.codec is not None for p in node.outputs)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
