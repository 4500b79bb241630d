"""Epoch checkpoints a trainer can resume from, with no pickles.

One safetensors file holds every tensor (model weights, optimizer state, RNG states); its
metadata holds the rest as JSON (epoch, config, history, scheduler state, optimizer structure).
The file is written atomically, so an interrupted or killed run leaves the previous epoch's
checkpoint whole.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import random
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load, save_file

FORMAT = "nodeflow.checkpoint/1"


class CheckpointError(RuntimeError):
    pass


def _split(tree: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Move every tensor of a nested dict/list into ``tensors``; what is left is JSON."""
    if isinstance(tree, torch.Tensor):
        tensors[prefix] = tree.detach().cpu().contiguous()
        return {"__tensor__": prefix}
    if isinstance(tree, dict):
        return {"__dict__": [[_key(k), _split(v, f"{prefix}.{k}", tensors)] for k, v in tree.items()]}
    if isinstance(tree, (list, tuple)):
        return [_split(v, f"{prefix}.{i}", tensors) for i, v in enumerate(tree)]
    return tree


def _join(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(tree, dict) and "__tensor__" in tree:
        return tensors[tree["__tensor__"]]
    if isinstance(tree, dict) and "__dict__" in tree:
        return {_unkey(k): _join(v, tensors) for k, v in tree["__dict__"]}
    if isinstance(tree, list):
        return [_join(v, tensors) for v in tree]
    return tree


def _key(k: Any) -> Any:
    return {"int": k} if isinstance(k, int) else k


def _unkey(k: Any) -> Any:
    return k["int"] if isinstance(k, dict) else k


def rng_state(generator: torch.Generator | None) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate(),
                             "numpy": list(np.random.get_state())}
    state["numpy"][1] = torch.from_numpy(state["numpy"][1].astype(np.int64))
    if generator is not None:
        state["loader"] = generator.get_state()
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None) -> None:
    torch.set_rng_state(state["torch"])
    version, *rest = state["python"]
    random.setstate((version, tuple(rest[0]), rest[1]))
    numpy_state = list(state["numpy"])
    numpy_state[1] = numpy_state[1].numpy().astype(np.uint32)
    np.random.set_state(tuple(numpy_state))
    if generator is not None and "loader" in state:
        generator.set_state(state["loader"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, **state: Any) -> None:
    tensors, meta = checkpoint_payload(**state)
    _write_atomically(Path(path), tensors, meta)


def _write_atomically(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """safetensors straight into a temporary file beside ``path`` (no second in-memory copy of
    every tensor), fsync, then rename: a reader sees the old checkpoint or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"nodeflow": json.dumps(meta)})
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def checkpoint_payload(*, epoch: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                       scheduler: Any, config: dict[str, Any], history: list[dict[str, Any]],
                       generator: torch.Generator | None = None, extra: dict[str, Any] | None = None,
                       frozen: tuple[str, ...] = ()) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and the JSON of a checkpoint, taken now (RNG states included). The blocks named
    in ``frozen`` are left out: a training never changes them (they stay in eval mode, without
    gradients), and a frozen ResNet-18 under a cached head is 45 MB to copy and write every epoch
    for a head of a few kB."""
    tensors: dict[str, torch.Tensor] = {}
    state = {k: v for k, v in model.state_dict().items() if k.split(".", 1)[0] not in frozen}
    meta = {
        "format": FORMAT,
        "epoch": epoch,
        "config": config,
        "history": history,
        "model": _split(state, "model", tensors),
        "optimizer": _split(optimizer.state_dict(), "optimizer", tensors),
        "scheduler": _split(_scheduler_state(scheduler), "scheduler", tensors),
        "rng": _split(rng_state(generator), "rng", tensors),
        "extra": extra or {},
    }
    return tensors, meta


def read_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The metadata and tensors of a checkpoint; CheckpointError if it is not one of ours."""
    try:
        data = Path(path).read_bytes()
        tensors = load(data)
        from safetensors import safe_open  # metadata is only exposed through safe_open

        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {})["nodeflow"])
    except (OSError, SafetensorError, KeyError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {Path(path).name} is unreadable ({exc})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {Path(path).name} has an unknown format {meta.get('format')!r}")
    return meta, tensors


def restore_checkpoint(path: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                       generator: torch.Generator | None = None, frozen: tuple[str, ...] = ()) -> dict[str, Any]:
    """Load a checkpoint into the given objects; returns its metadata (epoch, config, history). The
    blocks named in ``frozen`` may be missing from it: ``model`` already holds them."""
    meta, tensors = read_checkpoint(path)
    missing, unexpected = model.load_state_dict(_join(meta["model"], tensors), strict=False)
    missing = [k for k in missing if k.split(".", 1)[0] not in frozen]
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {Path(path).name} is of another network (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
    optimizer.load_state_dict(_join(meta["optimizer"], tensors))
    if scheduler is not None and meta["scheduler"]:
        scheduler.load_state_dict(_join(meta["scheduler"], tensors))
    set_rng_state(_join(meta["rng"], tensors), generator)
    return meta


def _scheduler_state(scheduler: Any) -> dict[str, Any] | None:
    if scheduler is None:
        return None
    state = dict(scheduler.state_dict())
    state.pop("lr_lambdas", None)  # functions: rebuilt from the config, not saved
    return state


class BackgroundCheckpoints:
    """Epoch checkpoints written on a thread. The state is copied when ``save`` is called (a
    memcpy); serialising and fsync, which take longer than a whole epoch of a cached head or a
    fast GPU, overlap the next epoch. One write at a time, so memory stays bounded."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, path: Path, **state: Any) -> None:
        self.wait()
        tensors, meta = checkpoint_payload(**state)
        tensors = {k: v.clone() for k, v in tensors.items()}  # training goes on changing the originals
        self._thread = threading.Thread(target=self._write, args=(Path(path), tensors, meta), daemon=True,
                                        name="checkpoint-writer")
        self._thread.start()

    def _write(self, path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        try:
            _write_atomically(path, tensors, meta)
        except BaseException as exc:  # raised by the next save() or wait()
            self._error = exc

    def wait(self) -> None:
        """Block until the last checkpoint is on disk; raise its write error, if any."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


_PENDING: contextvars.ContextVar[BackgroundCheckpoints | None] = contextvars.ContextVar("nodeflow_checkpoints",
                                                                                         default=None)


@contextlib.contextmanager
def background_checkpoints():
    """Scope of a trainer run: checkpoints saved inside are on disk when it ends, however it ends."""
    writer = BackgroundCheckpoints()
    token = _PENDING.set(writer)
    try:
        yield writer
    except BaseException:
        try:
            writer.wait()
        except Exception:
            pass
        raise
    else:
        writer.wait()
    finally:
        _PENDING.reset(token)


def pending_checkpoints() -> BackgroundCheckpoints:
    """The writer of the current trainer run (a fresh one outside ``background_checkpoints``)."""
    return _PENDING.get() or _Synchronous()


class _Synchronous(BackgroundCheckpoints):
    def save(self, path: Path, **state: Any) -> None:
        save_checkpoint(path, **state)
