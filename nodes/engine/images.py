"""Finding labelled images on disk, checking them, and turning them into tensors."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import random
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from nodes.engine.files import file_stamp
from nodes.engine.folders import IMAGE_SUFFIXES, SPLIT_ALIASES
from nodes.engine.values import SPLITS, ImageSet

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DatasetLayoutError(ValueError):
    pass


# -- finding files --------------------------------------------------------------------------------


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def image_files(folder: Path) -> list[Path]:
    """The image files under ``folder``, as the exported script lists them (``standalone``)."""
    from nodes.engine import standalone

    return [Path(path) for path in standalone.image_files(folder)]


def find_split_dirs(root: Path) -> dict[str, Path]:
    """train/ validation/ test/ sub-folders of ``root`` (with their common aliases), if any."""
    names = {p.name.lower(): p for p in _subdirs(root)}
    found = {}
    for split, aliases in SPLIT_ALIASES.items():
        for alias in aliases:
            if alias in names:
                found[split] = names[alias]
                break
    return found if "train" in found else {}


def scan(root: Path) -> tuple[list[str], dict[str, list[tuple[Path, str]]] | list[tuple[Path, str]]]:
    """Classes and labelled files under ``root``: a dict of splits when ``root`` holds train/
    validation/ test/ folders, else one list (class sub-folders, e.g. Microsoft's PetImages)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetLayoutError(f"dataset folder '{root}' does not exist")
    if (root / "PetImages").is_dir():
        root = root / "PetImages"
    splits = find_split_dirs(root)
    if splits:
        classes = [p.name for p in _subdirs(splits["train"])]
        if not classes:
            raise DatasetLayoutError(f"'{splits['train']}' has no class sub-folders (one folder per class)")
        result = {}
        for split, folder in splits.items():
            extra = [p.name for p in _subdirs(folder) if p.name not in classes]
            if extra:
                raise DatasetLayoutError(f"'{folder}' has classes {extra} that the train split lacks")
            result[split] = [(f, c) for c in classes if (folder / c).is_dir() for f in image_files(folder / c)]
        return classes, result
    classes = [p.name for p in _subdirs(root)]
    if len(classes) < 2:
        raise DatasetLayoutError(
            f"'{root}' should hold either train/ validation/ test/ folders or at least two class "
            f"sub-folders of images (found {len(classes)})")
    return classes, [(f, c) for c in classes for f in image_files(root / c)]


def other_files(root: Path) -> int:
    """Files under ``root`` that are not images by their name (notes, Thumbs.db...): skipped, but
    counted so the user learns of them."""
    count = 0
    for _, dirs, files in os.walk(Path(root).expanduser()):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        count += sum(1 for f in files if not f.startswith(".") and Path(f).suffix.lower() not in IMAGE_SUFFIXES)
    return count


def readable(path: Path) -> bool:
    """Whether an image decodes (cheaply: JPEGs are decoded at reduced size)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.draft("RGB", (64, 64))
            image.load()
        return True
    except Exception:
        return False


def keep_readable(paths: Iterable[Path], workers: int = 4) -> set[Path]:
    paths = list(paths)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return {p for p, ok in zip(paths, pool.map(readable, paths)) if ok}


def build_image_set(root: Path, validation: float, test: float, seed: int, max_per_class: int,
                    verify: bool) -> ImageSet:
    """Scan, drop unreadable files (counted in ``skipped``), then split and sample, so the
    fractions apply to images that can actually be used."""
    classes, found = scan(root)
    groups = {"all": found} if isinstance(found, list) else dict(found)
    skipped = other_files(root)
    if verify:
        good = keep_readable(p for items in groups.values() for p, _ in items)
        kept = {name: [i for i in items if i[0] in good] for name, items in groups.items()}
        skipped += sum(len(groups[n]) - len(kept[n]) for n in groups)
        groups = kept
    training = groups.get("train", groups.get("all", []))
    empty = [c for c in classes if not any(label == c for _, label in training)]
    if empty:
        where = "the train split" if "train" in groups else f"'{root}'"
        raise DatasetLayoutError(f"class folder(s) {empty} have no usable images in {where}; add images or "
                                 "remove the folder(s)")
    # the exported script's split and sampling (``standalone``): the same images land in the same splits
    from nodes.engine.standalone import sample_per_class, split_by_class

    splits = split_by_class(groups["all"], classes, validation, test, seed) if isinstance(found, list) else groups
    if max_per_class:
        splits = sample_per_class(splits, classes, max_per_class, seed)
    index = {c: i for i, c in enumerate(classes)}
    return ImageSet(classes=tuple(classes),
                    splits={k: tuple((str(p.resolve()), index[c]) for p, c in v) for k, v in splits.items()},
                    skipped=skipped)


def tree_fingerprint(root: Path) -> str:
    """Changes when files under ``root`` are added, removed or rewritten (names and each file's
    :func:`~nodes.engine.files.file_stamp`)."""
    digest = hashlib.sha256()
    root = Path(root).expanduser()
    if not root.exists():
        return "missing"
    for base, dirs, files in os.walk(root):
        dirs.sort()
        folder = os.path.relpath(base, root)
        for name in sorted(files):
            path = os.path.join(base, name)
            digest.update(f"{os.path.join(folder, name)}:{file_stamp(os.stat(path))}\n".encode())
    return digest.hexdigest()


class TreeFingerprints:
    """``tree_fingerprint`` memoised by the mtimes of the folders under each root.

    Adding, removing or renaming a file changes its folder's mtime, so while every folder seen by
    the last full walk keeps its mtime the last answer stands, and a status query costs one stat
    per folder instead of one per image. A file rewritten in place changes no folder's mtime, so a
    run asks with ``fresh``: a full walk, every file's stamp, which the memo then keeps.
    """

    def __init__(self) -> None:
        self._memo: dict[str, tuple[dict[str, int], str]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _folders(root: Path) -> dict[str, int]:
        folders = {}
        for base, dirs, _ in os.walk(root):
            dirs.sort()
            folders[base] = os.stat(base).st_mtime_ns
        return folders

    @staticmethod
    def _unchanged(folders: dict[str, int]) -> bool:
        try:
            return all(os.stat(folder).st_mtime_ns == mtime for folder, mtime in folders.items())
        except OSError:
            return False

    def __call__(self, root: Path, fresh: bool = False) -> str:
        root = Path(root).expanduser()
        key = str(root.absolute())
        with self._lock:
            known = self._memo.get(key)
        if not fresh and known is not None and self._unchanged(known[0]):
            return known[1]
        if not root.exists():
            return "missing"
        folders = self._folders(root)
        fingerprint = tree_fingerprint(root)
        with self._lock:
            self._memo[key] = (folders, fingerprint)
        return fingerprint


#: process-wide, shared by the dataset and predict nodes
folder_fingerprint = TreeFingerprints()


# -- tensors --------------------------------------------------------------------------------------


def load_rgb(path: str):
    """An image as RGB whatever it was stored as (grayscale, palette, CMYK, RGBA): torchvision's
    ``pil_loader``, which the exported script reads its images with too."""
    from nodes.engine.standalone import pil_loader

    return pil_loader(path)


def make_transform(fmt: dict[str, Any] | None, augment: Sequence[dict[str, Any]] = (), train: bool = False):
    """PIL image -> normalised float tensor. Augmentations (and a random crop) apply only when
    ``train`` is true; evaluation always sees the deterministic resize + centre crop."""
    import torch
    from torchvision.transforms import v2

    fmt = fmt or {"height": 224, "width": 224, "channels": 3, "resize": "shorter_side", "crop": "center",
                  "normalize": "imagenet"}
    size = (fmt["height"], fmt["width"])
    ops: list[Any] = [v2.PILToTensor()]
    augment = list(augment) if train else []
    rrc = next((a for a in augment if a["op"] == "random_resized_crop"), None)
    if rrc is not None:
        ops.append(v2.RandomResizedCrop(size, scale=(rrc["min_scale"], 1.0), antialias=True))
    elif fmt["resize"] == "stretch":
        ops.append(v2.Resize(size, antialias=True))
    else:
        ops.append(v2.Resize(fmt.get("resize_to") or max(size), antialias=True))
        ops.append(v2.RandomCrop(size) if train and fmt["crop"] == "random" else v2.CenterCrop(size))
    for aug in augment:
        op = aug["op"]
        if op == "hflip":
            ops.append(v2.RandomHorizontalFlip(aug["p"]))
        elif op == "vflip":
            ops.append(v2.RandomVerticalFlip(aug["p"]))
        elif op == "rotation":
            ops.append(v2.RandomRotation(aug["degrees"]))
        elif op == "color_jitter":
            s = aug["strength"]
            ops.append(v2.ColorJitter(brightness=s, contrast=s, saturation=s, hue=min(0.5, s / 4)))
        elif op == "gaussian_blur":
            ops.append(v2.RandomApply([v2.GaussianBlur(aug["kernel"], sigma=(0.1, aug["sigma"]))], p=aug["p"]))
        elif op == "autoaugment":
            ops.append(v2.AutoAugment())
        elif op == "randaugment":
            ops.append(v2.RandAugment(magnitude=aug.get("magnitude", 9)))
        elif op == "trivialaugment":
            ops.append(v2.TrivialAugmentWide())
    if fmt["channels"] == 1:
        ops.append(v2.Grayscale(1))
    ops.append(v2.ToDtype(torch.float32, scale=True))
    if fmt["normalize"] == "imagenet":
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        if fmt["channels"] == 1:
            mean, std = (sum(mean) / 3,), (sum(std) / 3,)
        ops.append(v2.Normalize(mean, std))
    erasing = next((a for a in augment if a["op"] == "random_erasing"), None)
    if erasing is not None:
        ops.append(v2.RandomErasing(p=erasing["p"]))
    return v2.Compose(ops)


def loader(data: ImageSet, split: str, batch_size: int, train: bool, generator=None, workers: int = 0,
           pin_memory: bool = False):
    from torch.utils.data import DataLoader

    from nodes.engine.standalone import ImageFiles  # the exported script's dataset

    transform = make_transform(data.format, data.augment, train=train)
    return DataLoader(ImageFiles(data.split(split), transform), batch_size=batch_size, shuffle=train,
                      generator=generator, num_workers=workers, pin_memory=pin_memory,
                      persistent_workers=False)


def sample_grid(data: ImageSet, split: str = "train", count: int = 16, px: int = 64, train: bool = False,
                seed: int = 0) -> dict[str, Any]:
    """A few images of a split as small PNG data-URLs, after this set's transform, for the editor."""
    from PIL import Image

    items = list(data.split(split))
    random.Random(seed).shuffle(items)
    transform = make_transform(data.format, data.augment, train=train) if data.format else None
    images = []
    for path, label in items[:count]:
        image = load_rgb(path)
        if transform is not None:
            tensor = transform(image)
            if data.format and data.format["normalize"] == "imagenet":
                channels = tensor.shape[0]
                mean = IMAGENET_MEAN if channels == 3 else (sum(IMAGENET_MEAN) / 3,)
                std = IMAGENET_STD if channels == 3 else (sum(IMAGENET_STD) / 3,)
                tensor = tensor * _col(std) + _col(mean)
            array = (tensor.clamp(0, 1) * 255).byte().permute(1, 2, 0).squeeze(-1).numpy()
            image = Image.fromarray(array)
        image.thumbnail((px, px))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        images.append({"src": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"),
                       "label": data.classes[label]})
    return {"split": split, "images": images}


def _col(values: Sequence[float]):
    import torch

    return torch.tensor(values).view(-1, 1, 1)
