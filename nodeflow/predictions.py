"""Per-image predictions of a node's run: for each image of a split, its true class, the class the
model chose and how sure it was. Two runs scored on the same images can then be compared image by
image (:mod:`nodeflow.compare`): which images one got right and the other wrong.

A node keeps them with ``ctx.keep_predictions(...)``. They are written among the node's files
(``ctx.scratch``), which the executor moves into the node's cache entry, so a cached node still has
them and they go when the entry goes. A split costs a few bytes per image: class indices as the
smallest unsigned integers that hold them, confidences as float16. The split's file list, the
largest part, is stored once per workspace under the hash of the list (``filelists/``), so a
hundred runs on one data set share one copy.
"""

from __future__ import annotations
from nodeflow.access import guarded, reads

import functools
import gzip
import hashlib
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from nodeflow.files import atomic_write_bytes

#: the folder among a node's files that holds one ``SPLIT.npz`` per split
FOLDER = "predictions"
#: the workspace folder of the shared file lists, one ``DIGEST.json.gz`` per distinct list
FILE_LISTS = "filelists"
SPLIT_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


@dataclass(frozen=True)
class SplitPredictions:
    """One model's outcome on every image of one split, in the split's file order."""

    split: str
    classes: tuple[str, ...]
    #: the hash of the split's file list: two runs scored the same images when it is the same
    digest: str
    files: tuple[str, ...]
    true: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray

    def __len__(self) -> int:
        return len(self.true)

    @property
    def correct(self) -> np.ndarray:
        return self.true == self.predicted


def files_digest(files: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(files), ensure_ascii=False).encode("utf-8")).hexdigest()


def save(folder: Path, workspace: Path, split: str, files: Sequence[str], true: Any, predicted: Any,
         confidence: Any, classes: Sequence[str]) -> Path:
    """Write one split's predictions among a node's files (``folder``, its ``ctx.scratch``) and the
    split's file list, once, into the workspace; returns the split's file."""
    if not SPLIT_NAME.fullmatch(split):
        raise ValueError(f"'{split}' is not a split name (lower-case letters, digits and _)")
    true, predicted = np.asarray(true), np.asarray(predicted)
    confidence = np.asarray(confidence, dtype=np.float32)
    if not len(true) == len(predicted) == len(confidence) == len(files):
        raise ValueError(f"{split}: {len(files)} files but {len(true)} true classes, {len(predicted)} "
                         f"predictions and {len(confidence)} confidences")
    digest = files_digest(files)
    shared = Path(workspace) / FILE_LISTS / f"{digest}.json.gz"
    if not shared.is_file():
        atomic_write_bytes(shared, gzip.compress(json.dumps(list(files), ensure_ascii=False).encode("utf-8"), mtime=0))
    index = np.min_scalar_type(max(len(classes) - 1, 0))  # uint8 up to 256 classes
    buffer = io.BytesIO()
    np.savez_compressed(buffer, true=true.astype(index), predicted=predicted.astype(index),
                        confidence=confidence.astype(np.float16), classes=np.array(list(classes), dtype=str),
                        digest=np.array(digest))
    path = Path(folder) / FOLDER / f"{split}.npz"
    atomic_write_bytes(path, buffer.getvalue())
    return path


def load(folder: Path | None, workspace: Path) -> dict[str, SplitPredictions]:
    """The splits kept in ``folder`` (a node's files); a split whose files are missing or damaged is
    left out, as is everything when there is no folder."""
    found: dict[str, SplitPredictions] = {}
    if folder is None or not (Path(folder) / FOLDER).is_dir():
        return found
    for path in sorted((Path(folder) / FOLDER).glob("*.npz")):
        try:
            with np.load(path, allow_pickle=False) as arrays:
                digest = str(arrays["digest"])
                files = file_list(str(Path(workspace) / FILE_LISTS), digest)
                split = SplitPredictions(path.stem, tuple(str(c) for c in arrays["classes"]), digest, files,
                                         arrays["true"].astype(np.int64), arrays["predicted"].astype(np.int64),
                                         arrays["confidence"].astype(np.float32))
        except (OSError, ValueError, KeyError, EOFError):
            continue
        if len(split.files) == len(split.true):
            found[split.split] = split
    return found


@functools.lru_cache(maxsize=64)
def file_list(folder: str, digest: str) -> tuple[str, ...]:
    """A shared file list, read once per process: it is named by its content, so it never changes."""
    path = Path(folder) / f"{digest}.json.gz"
    if files_digest(files := json.loads(gzip.decompress(path.read_bytes()))) != digest:
        raise ValueError(f"{path}: its content does not match its name")
    return tuple(files)


class KeptFiles(Protocol):
    """Where results keep their files, by cache key (:class:`nodeflow.cache.Cache`): the folder of a
    result's files, None when it has none."""

    def files(self, key: str) -> Path | None: ...


@guarded
class PredictionStore:
    """The per-image predictions of results (by cache key) in one workspace."""

    def __init__(self, cache: KeptFiles, workspace: Path) -> None:
        self.cache = cache
        self.workspace = Path(workspace)

    @reads
    def of(self, key: str | None) -> dict[str, SplitPredictions]:
        return load(self.cache.files(key), self.workspace) if key else {}


__all__ = ["FILE_LISTS", "FOLDER", "PredictionStore", "SplitPredictions", "files_digest", "load", "save"]
