"""Atomic file writes for what the engine persists (checkpoints, plots, exported models), and the stamp that
says whether a file it reads (an image, a weights file) changed."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` so that ``path`` holds either the old content or all of the new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def file_stamp(stat: os.stat_result) -> str:
    """What every cache key that depends on a file's content records of it: size, mtime and the inode's
    change time. Size and mtime alone miss a file rewritten in place with its old size whose mtime was put
    back (``os.utime``, ``touch -r``, an archive or a sync that keeps times); the change time is set by the
    kernel on every write and every utime, and no user can set it back. It changes too on a chmod, a rename
    or a copy of the folder, which costs one needless re-run, never a stale result. One stat, no reading:
    this runs for every image each time a run is planned."""
    return f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}"
