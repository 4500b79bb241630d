"""The fast data path: decode and resize each image once, keep the small uint8 tensors (in memory,
on the GPU when training there, or memory-mapped from the workspace), and do the per-epoch work
(random crop, flips, the other augmentations, normalisation) on those tensors in whole batches.

Results match ``nodes.engine.images.make_transform``: that transform also resizes a uint8 tensor of the
decoded image, so caching the resized (and, when the crop is fixed, cropped) tensor changes only
when the work happens. A random resized crop needs the full image, so it keeps the per-file path
(a DataLoader with worker processes).

``Batches`` draws its shuffle exactly as a DataLoader with the same generator does, so switching
between the per-file path, decoded tensors and cached features leaves the batch order unchanged.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nodes.engine.files import file_stamp
from nodes.engine.hooks import Stopped
from nodes.engine.images import IMAGENET_MEAN, IMAGENET_STD, load_rgb, make_transform
from nodes.engine.standalone import ImageFiles
from nodes.engine.store import MEMORY, EntryWriter, fits_gpu, memory_budget, nbytes, read_entry
from nodes.engine.values import ImageSet

#: bump when the stored layout or the decode/resize rule changes
DECODE_VERSION = 1


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def default_format(fmt: dict[str, Any] | None) -> dict[str, Any]:
    return fmt or {"height": 224, "width": 224, "channels": 3, "resize": "shorter_side", "crop": "center",
                   "normalize": "imagenet"}


def random_reason(data: ImageSet) -> str | None:
    """Why the training split's inputs differ from epoch to epoch, or None when they do not."""
    fmt = default_format(data.format)
    ops = [a["op"] for a in data.augment]
    if ops:
        return f"the training images are randomly augmented ({', '.join(ops)})"
    if fmt["resize"] != "stretch" and fmt["crop"] == "random":
        return "the image formatter crops training images at random (crop: random)"
    return None


def files_digest(items: Sequence[tuple[str, int]]) -> str:
    """Changes when a file of the split is added, removed, relabelled or rewritten (its file_stamp)."""
    digest = hashlib.blake2b(digest_size=16)
    for path, label in items:
        try:
            stat = os.stat(path)
            digest.update(f"{path}\0{label}\0{file_stamp(stat)}\n".encode())
        except OSError:
            digest.update(f"{path}\0{label}\0missing\n".encode())
    return digest.hexdigest()


# -- batches --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shard:
    """This process's part of the data under DistributedDataParallel."""

    rank: int
    world: int
    seed: int


class Batches:
    """Batches of ``fetch(indices)`` in DataLoader order: shuffled with the same draws from the
    same generator, or split across ranks like DistributedSampler (padded so every rank runs the
    same number of steps when training; unpadded for evaluation)."""

    def __init__(self, n: int, fetch: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], batch_size: int,
                 shuffle: bool, generator: torch.Generator | None = None, shard: Shard | None = None,
                 on_epoch: Callable[[int], None] | None = None) -> None:
        self.n, self.fetch, self.batch_size, self.shuffle = n, fetch, batch_size, shuffle
        self.generator, self.shard, self.epoch, self.on_epoch = generator, shard, 0, on_epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.on_epoch is not None:
            self.on_epoch(epoch)

    def indices(self) -> torch.Tensor:
        if self.shard is None:
            if not self.shuffle:
                return torch.arange(self.n)
            generator = self.generator
            if generator is None:
                generator = torch.Generator()
                generator.manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))
            else:  # what a DataLoader iterator draws first (its workers' base seed)
                torch.empty((), dtype=torch.int64).random_(generator=generator)
            order = torch.randperm(self.n, generator=generator)
            torch.randperm(self.n, generator=generator)  # RandomSampler draws (and drops) a second one
            return order
        rank, world = self.shard.rank, self.shard.world
        if not self.shuffle:
            return torch.arange(rank, self.n, world)
        generator = torch.Generator()
        generator.manual_seed(self.shard.seed + self.epoch)
        order = torch.randperm(self.n, generator=generator)
        total = math.ceil(self.n / world) * world
        if total > self.n:
            order = torch.cat([order, order[: total - self.n]])
        return order[rank:total:world]

    def __len__(self) -> int:
        if self.shard is None:
            count = self.n
        elif self.shuffle:
            count = math.ceil(self.n / self.shard.world)
        else:
            count = len(range(self.shard.rank, self.n, self.shard.world))
        return math.ceil(count / self.batch_size)

    @property
    def samples(self) -> int:
        """How many samples this process sees per pass."""
        if self.shard is None:
            return self.n
        return math.ceil(self.n / self.shard.world) if self.shuffle else len(range(self.shard.rank, self.n,
                                                                                   self.shard.world))

    def __iter__(self):
        order = self.indices()
        for start in range(0, len(order), self.batch_size):
            yield self.fetch(order[start:start + self.batch_size])


# -- decoded images -------------------------------------------------------------------------------


def decode(path: str) -> torch.Tensor:
    """An image file as a uint8 RGB tensor (C×H×W), decoded as the per-file path decodes it (PIL,
    whatever the file's mode), so both paths see the same pixels. torchvision.io's decoders are
    faster on JPEGs but deprecated since torchvision 0.29, and with the decode cache decoding is
    no longer per epoch."""
    from torchvision.transforms.v2.functional import pil_to_tensor

    return pil_to_tensor(load_rgb(path))


def _resized_size(width: int, height: int, target: int) -> tuple[int, int]:
    """(h, w) after resizing the shorter side to ``target``, by torchvision's rounding rule."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(target * long / short)
    return (new_long, target) if width <= height else (target, new_long)


def _header_size(path: str) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size


@dataclass(frozen=True)
class Geometry:
    """What is stored: the image after the deterministic resize, and after the crop when the crop is
    deterministic too; ``crop`` then says what is left to do per epoch. ``shorter`` is the size the
    shorter side is resized to (the formatter's ``resize_to``, else the crop size), as in
    ``make_transform``."""

    resize: str
    height: int
    width: int
    cropped: bool
    shorter: int

    def stored_size(self, path: str) -> tuple[int, int]:
        if self.resize == "stretch":
            return self.height, self.width
        if self.cropped:
            return self.height, self.width
        return _resized_size(*_header_size(path), self.shorter)

    def apply(self, image: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as F

        if self.resize == "stretch":
            return F.resize(image, [self.height, self.width], antialias=True)
        image = F.resize(image, [self.shorter], antialias=True)
        return F.center_crop(image, [self.height, self.width]) if self.cropped else image


def geometry_for(fmt: dict[str, Any], train: bool) -> Geometry:
    """What the decode cache stores for a split read with the training (``train``) or evaluation transform."""
    random_crop = train and fmt["crop"] == "random" and fmt["resize"] != "stretch"
    return Geometry(fmt["resize"], fmt["height"], fmt["width"], not random_crop,
                    fmt.get("resize_to") or max(fmt["height"], fmt["width"]))


def decoded_key(geometry: Geometry, items: Sequence[tuple[str, int]]) -> str:
    digest = hashlib.blake2b(digest_size=20)
    digest.update(f"decoded/{DECODE_VERSION}/{geometry}/{files_digest(items)}".encode())
    return digest.hexdigest()


def decoded_entry(data: ImageSet, split: str, train: bool, workspace: Path) -> Path:
    """Where a split's decoded tensors live in the workspace, whether or not they are there yet
    (the cost preview asks without decoding anything)."""
    geometry = geometry_for(default_format(data.format), train)
    return decoded_path(workspace, decoded_key(geometry, list(data.split(split))))


def decoded_cached(data: ImageSet, split: str, train: bool, workspace: Path) -> bool:
    return decoded_entry(data, split, train, workspace).is_file()


def decoded_path(workspace: Path, key: str) -> Path:
    return Path(workspace) / "decoded" / f"{key}.safetensors"


class DecodedImages:
    """A split's images as resized uint8 tensors, decoded once and cached in the workspace (keyed by
    the files and the resize), with the batch transforms of the training or evaluation path."""

    def __init__(self, data: ImageSet, split: str, train: bool, workspace: Path, device: torch.device,
                 workers: int = 0, log: Callable[[str], None] = lambda message: None,
                 should_stop: Callable[[], bool] = lambda: False) -> None:
        self.fmt = default_format(data.format)
        self.items = list(data.split(split))
        self.train = train
        self.augment = list(data.augment) if train else []
        self.geometry = geometry_for(self.fmt, train)
        self.device = device
        self.key = decoded_key(self.geometry, self.items)
        self.path = decoded_path(workspace, self.key)
        self.labels = torch.tensor([label for _, label in self.items], dtype=torch.long)
        self.should_stop = should_stop
        self._load_or_build(max(1, workers or available_cores()), log)

    def _load_or_build(self, workers: int, log: Callable[[str], None]) -> None:
        cached = MEMORY.get(f"decoded:{self.key}:{self.device}")
        if cached is None:
            if not self.path.is_file():
                log(f"decoding and resizing {len(self.items)} images once (cached for later epochs and runs)")
                self._build(workers)
            try:
                size = self.path.stat().st_size
                tensors, _ = read_entry(self.path, in_memory=size <= memory_budget())
            except (OSError, ValueError):
                self.path.unlink(missing_ok=True)
                self._build(workers)
                tensors, _ = read_entry(self.path, in_memory=True)
            pixels = tensors["pixels"]
            if isinstance(pixels, torch.Tensor) and self.device.type == "cuda" and fits_gpu(pixels.nbytes):
                pixels = pixels.to(self.device)
            cached = {"pixels": pixels, "shapes": torch.as_tensor(np.asarray(tensors["shapes"])),
                      "offsets": torch.as_tensor(np.asarray(tensors["offsets"]))}
            if isinstance(pixels, torch.Tensor):
                MEMORY.put(f"decoded:{self.key}:{self.device}", cached, nbytes(cached))
        self.pixels, self.shapes, self.offsets = cached["pixels"], cached["shapes"], cached["offsets"]
        self.on_device = isinstance(self.pixels, torch.Tensor) and self.pixels.device == self.device
        if self.on_device and self.device.type == "cuda":  # labels next to the images: no per-batch copy
            self.labels = self.labels.to(self.device)

    def _build(self, workers: int) -> None:
        paths = [path for path, _ in self.items]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            sizes = list(pool.map(self.geometry.stored_size, paths))
        shapes = np.array([[3, h, w] for h, w in sizes], dtype=np.int64)
        counts = shapes.prod(axis=1)
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        writer = EntryWriter(self.path, {"pixels": (torch.uint8, (int(counts.sum()),)),
                                         "shapes": (torch.int64, shapes.shape), "offsets": (torch.int64, offsets.shape)},
                             {"nodeflow": "decoded images", "geometry": str(self.geometry)})
        try:
            writer.array("shapes")[:] = shapes
            writer.array("offsets")[:] = offsets
            pixels = writer.array("pixels")

            def one(i: int) -> None:
                if self.should_stop():
                    raise Stopped("stopped while decoding images")
                image = self.geometry.apply(decode(paths[i]))
                if tuple(image.shape) != tuple(shapes[i]):
                    raise ValueError(f"'{paths[i]}' resized to {tuple(image.shape)}, expected {tuple(shapes[i])}")
                pixels[offsets[i]:offsets[i] + counts[i]] = image.reshape(-1).numpy()

            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(one, range(len(paths))))
            writer.commit()
        except BaseException:
            writer.abort()
            raise

    def image(self, i: int) -> torch.Tensor:
        c, h, w = (int(v) for v in self.shapes[i])
        start = int(self.offsets[i])
        if isinstance(self.pixels, torch.Tensor):
            return self.pixels[start:start + c * h * w].view(c, h, w)
        return torch.from_numpy(np.array(self.pixels[start:start + c * h * w])).view(c, h, w)

    def fetch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The transformed batch of images ``index`` (on the training device when they live there)."""
        from torchvision.transforms import v2

        height, width = self.geometry.height, self.geometry.width
        images = [self.image(int(i)) for i in index]
        if not self.geometry.cropped:  # random crop, per image, as views
            cropped = []
            for image in images:
                top = int(torch.randint(0, image.shape[1] - height + 1, (1,)))
                left = int(torch.randint(0, image.shape[2] - width + 1, (1,)))
                cropped.append(image[:, top:top + height, left:left + width])
            images = cropped
        batch = torch.stack(images).to(self.device, non_blocking=True)
        for aug in self.augment:
            op = aug["op"]
            if op in ("hflip", "vflip"):
                flip = torch.rand(len(batch), device=batch.device) < aug["p"]
                flipped = batch.flip(3 if op == "hflip" else 2)
                batch = torch.where(flip[:, None, None, None], flipped, batch)
            elif op != "random_erasing":
                single = make_transform_op(aug)
                batch = torch.stack([single(image) for image in batch])
        batch = network_input(batch, self.fmt)
        erasing = next((a for a in self.augment if a["op"] == "random_erasing"), None)
        if erasing is not None:
            erase = v2.RandomErasing(p=erasing["p"])
            batch = torch.stack([erase(image) for image in batch])
        return batch, self.labels[index]


def network_input(batch: torch.Tensor, fmt: dict[str, Any]) -> torch.Tensor:
    """A batch of uint8 RGB pictures as the network takes it: grey when the format has one channel,
    scaled to [0, 1], normalised as the format says."""
    from torchvision.transforms.v2 import functional as F

    if fmt["channels"] == 1:
        batch = F.rgb_to_grayscale(batch, num_output_channels=1)
    batch = F.to_dtype(batch, torch.float32, scale=True)
    if fmt["normalize"] == "imagenet":
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        if fmt["channels"] == 1:
            mean, std = (sum(mean) / 3,), (sum(std) / 3,)
        batch = F.normalize(batch, list(mean), list(std))
    return batch


def make_transform_op(aug: dict[str, Any]):
    """One augmentation of ``make_transform`` as a transform of a uint8 tensor."""
    from torchvision.transforms import v2

    op = aug["op"]
    if op == "rotation":
        return v2.RandomRotation(aug["degrees"])
    if op == "color_jitter":
        s = aug["strength"]
        return v2.ColorJitter(brightness=s, contrast=s, saturation=s, hue=min(0.5, s / 4))
    if op == "gaussian_blur":
        return v2.RandomApply([v2.GaussianBlur(aug["kernel"], sigma=(0.1, aug["sigma"]))], p=aug["p"])
    if op == "autoaugment":
        return v2.AutoAugment()
    if op == "randaugment":
        return v2.RandAugment(magnitude=aug.get("magnitude", 9))
    if op == "trivialaugment":
        return v2.TrivialAugmentWide()
    raise ValueError(f"augmentation '{op}' has no tensor form")


def decodable(data: ImageSet, train: bool) -> bool:
    """Whether the decoded-tensor path reproduces this split's transform (all but a random resized
    crop, which needs the full image)."""
    return not (train and any(a["op"] == "random_resized_crop" for a in data.augment))


def image_batches(data: ImageSet, split: str, batch_size: int, train: bool, device: torch.device,
                  workspace: Path | None, generator: torch.Generator | None = None, workers: int = 0,
                  shard: Shard | None = None, log: Callable[[str], None] = lambda message: None,
                  shuffle: bool | None = None, should_stop: Callable[[], bool] = lambda: False):
    """Batches of a split's images: decoded tensors when possible (``workspace`` given), else files
    through a DataLoader with worker processes, persistent workers and pinned memory on CUDA.
    ``train`` picks the training transform; ``shuffle`` defaults to it."""
    shuffle = train if shuffle is None else shuffle
    if workspace is not None and decodable(data, train) and data.split(split):
        images = DecodedImages(data, split, train, workspace, device, workers, log, should_stop)
        return Batches(len(images.items), images.fetch, batch_size, shuffle, generator, shard)
    return file_loader(data, split, batch_size, train, device, generator, workers, shard, shuffle)


def file_loader(data: ImageSet, split: str, batch_size: int, train: bool, device: torch.device,
                generator: torch.Generator | None = None, workers: int = 0, shard: Shard | None = None,
                shuffle: bool | None = None):
    from torch.utils.data import DataLoader, DistributedSampler

    dataset = ImageFiles(data.split(split), make_transform(data.format, data.augment, train=train))
    sampler = None
    shuffle = train if shuffle is None else shuffle
    if shard is not None and shuffle:
        sampler = DistributedSampler(dataset, num_replicas=shard.world, rank=shard.rank, shuffle=True,
                                     seed=shard.seed, drop_last=False)
    elif shard is not None:  # evaluation: each image once, on one rank
        sampler = list(range(shard.rank, len(dataset), shard.world))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle if sampler is None else False, sampler=sampler,
                        generator=generator, num_workers=workers, pin_memory=device.type == "cuda",
                        persistent_workers=workers > 0)
    if isinstance(sampler, DistributedSampler):
        loader.set_epoch = sampler.set_epoch  # type: ignore[attr-defined]
    return loader


def resolve_workers(workers: int) -> int:
    """The trainer's ``workers`` param: -1 means every core this process may use."""
    return available_cores() if workers < 0 else workers
