"""A feature cache that follows the freeze boundary.

The graph knows which leading blocks of a model are frozen (``frozen_prefix``): with frozen
blocks in eval mode and deterministic inputs, their outputs never change, so they are computed
once, stored as fp16, and the trainable rest trains on them. A head-only VGG16/ResNet run then
does almost no convolution after its first pass, and fine-tuning block5 of VGG16 re-uses the
outputs of blocks 1-4.

An entry's key is content only: a hash of the prefix blocks' structure and tensors, of the
split's files (names, labels, sizes, mtimes), the image format (plus augmentation, copy count and
seed when the user opts into K augmented copies), the split and the compute precision. So entries
are shared across epochs, runs, nodes (trainer, evaluate) and processes (they live in
``WORKSPACE/features``), and a change of weights, files or transform simply misses.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nodes.engine.augment import uses_random_batch_augment
from nodes.engine.device import Device
from nodes.engine.hooks import Hooks, Stopped
from nodes.engine.loop import frozen_prefix
from nodes.engine.pipeline import Batches, default_format, files_digest, image_batches, random_reason
from nodes.engine.store import MEMORY, EntryWriter, fits_gpu, memory_budget, nbytes, read_entry
from nodes.engine.values import ImageSet, ModelValue

#: bump when what an entry holds changes meaning
FEATURE_VERSION = 1
#: parameter-free modules whose output depends only on their input, in train mode as in eval mode;
#: a cached prefix extends over them (global pool, flatten) so entries are small
STATELESS = (nn.Flatten, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d, nn.Identity,
             nn.ReLU, nn.Sequential)


def _stateless(block: nn.Module) -> bool:
    return all(isinstance(m, STATELESS) for m in block.modules()) and not any(True for _ in block.parameters()) \
        and not any(True for _ in block.buffers())


def cache_cut(net: nn.Sequential, frozen: tuple[str, ...]) -> int:
    """How many leading blocks the cache stands in for: the frozen prefix, plus the parameter-free
    deterministic blocks right after it, as long as something trainable is left."""
    prefix = frozen_prefix(net, frozen)
    if prefix == 0:
        return 0
    blocks = list(net.children())
    cut = prefix
    while cut < len(blocks) - 1 and _stateless(blocks[cut]):
        cut += 1
    return cut


def prefix_digest(net: nn.Sequential, cut: int) -> str:
    """A hash of the first ``cut`` blocks: names, module structure, and every parameter and buffer
    byte; content only, so equal weights give equal keys in any process."""
    digest = hashlib.blake2b(digest_size=20)
    for name, block in list(net.named_children())[:cut]:
        digest.update(f"block {name}\n{block!r}\n".encode())
        for key, tensor in block.state_dict().items():
            data = tensor.detach().to("cpu").contiguous()
            digest.update(f"{key}:{data.dtype}:{tuple(data.shape)}\n".encode())
            digest.update(data.view(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


@dataclass
class Decision:
    """Whether the training split's prefix outputs are cached, and why not when they are not."""

    train: bool
    evaluation: bool
    reason: str
    cut: int
    blocks: list[str] = field(default_factory=list)


def technique_blockers(batch_augment: str, teacher: Any = None) -> list[str]:
    """Trainer settings that change the images inside each step, after the loader, so the step
    needs the images themselves rather than the prefix's outputs."""
    found = []
    if uses_random_batch_augment(batch_augment):
        found.append(f"batch augmentation ({batch_augment}) mixes images inside each step")
    if teacher is not None:
        found.append("distillation runs the teacher on the images")
    return found


def decide(net: nn.Sequential, model: ModelValue, data: ImageSet, mode: str, copies: int,
           blockers: list[str] = ()) -> Decision:
    cut = cache_cut(net, model.frozen) if mode != "off" else 0
    names = [name for name, _ in list(net.named_children())[:cut]]
    if mode == "off":
        return Decision(False, False, "feature_cache is off", 0)
    if cut == 0:
        return Decision(False, False, "no leading block is frozen, so every layer's output changes as it trains", 0)
    random = random_reason(data)
    if blockers:
        return Decision(False, True, f"{'; '.join(blockers)}: inputs differ every step", cut, names)
    if random and not copies:
        return Decision(False, True, f"{random}; set augmented_copies to cache K augmented copies per image, "
                                     f"or remove the augmentation", cut, names)
    return Decision(True, True, "", cut, names)


class FeatureSet:
    """The cached prefix outputs of one split: ``copies`` × images × feature shape, fp16, in RAM,
    on the GPU or memory-mapped; ``fetch`` gives float32 batches on the training device."""

    def __init__(self, features: torch.Tensor | np.ndarray, labels: torch.Tensor, device: torch.device,
                 hit: str) -> None:
        if isinstance(features, torch.Tensor) and features.device.type == "cuda":
            labels = labels.to(features.device)  # no per-batch copy
        self.features, self.labels, self.device, self.hit = features, labels, device, hit
        self.copy = 0

    @property
    def copies(self) -> int:
        return int(self.features.shape[0])

    def __len__(self) -> int:
        return int(self.features.shape[1])

    def set_epoch(self, epoch: int) -> None:
        self.copy = (max(epoch, 1) - 1) % self.copies

    def fetch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(self.features, torch.Tensor):
            rows = self.features[self.copy][index.to(self.features.device)]
        else:
            order = index.numpy()
            rows = torch.from_numpy(np.asarray(self.features[self.copy][np.sort(order)]))
            rows = rows[torch.from_numpy(np.argsort(np.argsort(order)))]
        return rows.to(self.device, non_blocking=True).float(), self.labels[index]


def feature_key(digest: str, data: ImageSet, split: str, input_shape: list[int], augmented: bool, copies: int,
                seed: int, device: Device) -> str:
    parts = {"v": FEATURE_VERSION, "prefix": digest, "split": split, "files": files_digest(data.split(split)),
             "format": default_format(data.format), "input": list(input_shape),
             "augment": list(data.augment) if augmented else None, "copies": copies if augmented else 1,
             "seed": seed if augmented else None, "precision": str(device.autocast_dtype)}
    return hashlib.blake2b(json.dumps(parts, sort_keys=True, default=str).encode(), digest_size=20).hexdigest()


def _memory_key(key: str, device: Device) -> str:
    return f"features:{key}:{device.torch}"


def _entry(workspace: Path, key: str) -> Path:
    return Path(workspace) / "features" / f"{key}.safetensors"


def features_cached(digest: str, data: ImageSet, split: str, input_shape: list[int], device: Device, workspace: Path,
                    augmented: bool = False, copies: int = 1, seed: int = 0) -> bool:
    """Whether the frozen prefix's outputs for ``split`` are in memory or in the workspace, without
    computing anything (what the cost preview asks)."""
    key = feature_key(digest, data, split, input_shape, augmented, copies, seed, device)
    return MEMORY.get(_memory_key(key, device)) is not None or _entry(workspace, key).is_file()


def features_for(net: nn.Sequential, cut: int, digest: str, data: ImageSet, split: str, input_shape: list[int],
                 device: Device, workspace: Path, batch_size: int, *, augmented: bool = False, copies: int = 1,
                 seed: int = 0, workers: int = 0, log: Callable[[str], None] = lambda message: None,
                 progress: Callable[[int, int], None] = lambda done, total: None,
                 should_stop: Callable[[], bool] = lambda: False) -> FeatureSet:
    """The split's features from memory, else from the workspace, else computed once and stored.
    ``should_stop`` is polled after every batch of a computation, which then raises ``Stopped``
    and leaves no entry behind."""
    key = feature_key(digest, data, split, input_shape, augmented, copies, seed, device)
    labels = torch.tensor([label for _, label in data.split(split)], dtype=torch.long)
    cached = MEMORY.get(_memory_key(key, device))
    if cached is not None:
        return FeatureSet(cached, labels, device.torch, "memory")
    path = _entry(workspace, key)
    hit = "disk"
    if not path.is_file():
        hit = "computed"
        _compute(net, cut, data, split, path, device, batch_size, augmented, copies, seed, workers, log, progress,
                 should_stop, {"split": split, "blocks": ",".join(n for n, _ in list(net.named_children())[:cut])})
    try:
        tensors, _ = read_entry(path, in_memory=path.stat().st_size <= memory_budget())
    except (OSError, ValueError):  # damaged or half-deleted: compute again
        path.unlink(missing_ok=True)
        return features_for(net, cut, digest, data, split, input_shape, device, workspace, batch_size,
                            augmented=augmented, copies=copies, seed=seed, workers=workers, log=log, progress=progress,
                            should_stop=should_stop)
    features = tensors["features"]
    if isinstance(features, torch.Tensor):
        if device.is_cuda and fits_gpu(features.nbytes):
            features = features.to(device.torch)
        MEMORY.put(_memory_key(key, device), features, nbytes({"f": features}))
    return FeatureSet(features, labels, device.torch, hit)


def _compute(net: nn.Sequential, cut: int, data: ImageSet, split: str, path: Path, device: Device, batch_size: int,
             augmented: bool, copies: int, seed: int, workers: int, log, progress, should_stop,
             metadata: dict[str, str]) -> None:
    """Run the prefix once over the split (``copies`` times with random augmentation when opted
    in), in inference mode, in the prefix's eval mode, writing fp16 rows as they come."""
    blocks = list(net.children())[:cut]
    modes = [b.training for b in blocks]
    for block in blocks:
        block.eval()
    count = len(data.split(split))
    log(f"computing the outputs of {cut} frozen block(s) for {count} {split} images"
        + (f" × {copies} augmented copies" if augmented else "") + " once")
    writer = None
    try:
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            for copy in range(copies if augmented else 1):
                torch.manual_seed(seed * 1000 + copy)
                batches = image_batches(data, split, max(batch_size, 32), augmented, device.torch, path.parent.parent,
                                        workers=workers, log=log, shuffle=False, should_stop=should_stop)
                row = 0
                for images, _ in batches:
                    if should_stop():
                        raise Stopped(f"stopped while computing the {split} features")
                    with device.autocast():
                        out = device.batch(images)
                        for block in blocks:
                            out = block(out)
                    out = out.to("cpu", torch.float16)
                    if writer is None:
                        shape = (copies if augmented else 1, count, *out.shape[1:])
                        writer = EntryWriter(path, {"features": (torch.float16, shape)},
                                             {"nodeflow": "prefix features", **metadata})
                        target = writer.array("features")
                    target[copy, row:row + len(out)] = out.numpy()
                    row += len(out)
                    progress(copy * count + row, count * (copies if augmented else 1))
        if writer is None:
            raise ValueError(f"the {split} split has no images")
        writer.commit()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        for block, mode in zip(blocks, modes):
            block.train(mode)


# -- what evaluate uses (the trainer's inputs: fit.prepare_training) ------------------------------


def tail(net: nn.Sequential, cut: int) -> nn.Sequential:
    """The blocks after the cached prefix, sharing their modules (and so their weights) with ``net``."""
    return nn.Sequential(OrderedDict(list(net.named_children())[cut:]))


def prepare_evaluation(hooks: Hooks, net: nn.Sequential, model: ModelValue, data: ImageSet, split: str, device: Device,
                       batch_size: int, mode: str = "auto", workers: int = 0) -> tuple[nn.Module, Any]:
    """The module and batches that score a split: the frozen prefix's cached features (shared with
    the trainer's entries) and the rest of the model, or decoded images and the whole model."""
    cut = cache_cut(net, model.frozen) if mode != "off" else 0
    if cut:
        digest = prefix_digest(net, cut)
        found = features_for(net, cut, digest, data, split, model.spec["input_shape"], device,
                             hooks.workspace, batch_size, workers=workers, log=hooks.log,
                             should_stop=hooks.should_stop)
        hooks.preview("feature_cache", {"enabled": True, "reason": "", "split": split, "hit": found.hit,
                                      "blocks": [n for n, _ in list(net.named_children())[:cut]]})
        return tail(net, cut), Batches(len(found), found.fetch, batch_size, False)
    return net, image_batches(data, split, batch_size, False, device.torch, hooks.workspace,
                              workers=workers, log=hooks.log, should_stop=hooks.should_stop)

