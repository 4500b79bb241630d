"""Small, learnable image sets written as real image files, for tests that must show learning.

Each class is a kind of picture (a filled circle, a square, stripes, a checkerboard, a cross)
drawn with random colours, size and position over a noisy background, so a network has to
learn the shape, not a single pixel value.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

KINDS = ("circle", "square", "stripes", "checker", "cross", "triangle")


def draw(kind: str, size: int, rng: random.Random, noise: float = 12.0) -> Image.Image:
    """One picture of ``kind`` at ``size``×``size``: random colours, placement and pixel noise."""
    background = tuple(rng.randint(0, 110) for _ in range(3))
    colour = tuple(rng.randint(140, 255) for _ in range(3))
    image = Image.new("RGB", (size, size), background)
    pen = ImageDraw.Draw(image)
    extent = rng.uniform(0.45, 0.75) * size
    x0 = rng.uniform(0, size - extent)
    y0 = rng.uniform(0, size - extent)
    box = (x0, y0, x0 + extent, y0 + extent)
    if kind == "circle":
        pen.ellipse(box, fill=colour)
    elif kind == "square":
        pen.rectangle(box, fill=colour)
    elif kind == "triangle":
        pen.polygon([(x0, y0 + extent), (x0 + extent, y0 + extent), (x0 + extent / 2, y0)], fill=colour)
    elif kind == "cross":
        w = extent / 4
        pen.rectangle((x0 + extent / 2 - w / 2, y0, x0 + extent / 2 + w / 2, y0 + extent), fill=colour)
        pen.rectangle((x0, y0 + extent / 2 - w / 2, x0 + extent, y0 + extent / 2 + w / 2), fill=colour)
    elif kind == "stripes":
        period = max(4, int(size / rng.uniform(4, 7)))
        for y in range(rng.randint(0, period), size, period):
            pen.rectangle((0, y, size, y + period // 2 - 1), fill=colour)
    elif kind == "checker":
        period = max(4, int(size / rng.uniform(3, 5)))
        for y in range(0, size, period):
            for x in range(0, size, period):
                if (x // period + y // period) % 2 == 0:
                    pen.rectangle((x, y, x + period - 1, y + period - 1), fill=colour)
    else:
        raise ValueError(f"unknown kind '{kind}' (kinds: {', '.join(KINDS)})")
    pixels = np.asarray(image, dtype=np.float32)
    pixels += np.random.default_rng(rng.getrandbits(32)).normal(0, noise, pixels.shape)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def make_image_set(root: Path, classes: Sequence[str] = ("circle", "stripes"), per_class: int = 20,
                   size: int = 32, layout: str = "splits", fractions: Sequence[float] = (0.6, 0.2, 0.2),
                   fmt: str = "jpg", seed: int = 0, vary_size: bool = False, corrupt: int = 0,
                   grayscale: int = 0, rgba: int = 0, class_names: Sequence[str] | None = None) -> Path:
    """Write ``per_class`` images of each class under ``root`` and return ``root``.

    layout "splits": root/{train,validation,test}/<class>/; "folder": root/<class>/ (the Microsoft
    PetImages shape). ``corrupt`` unreadable files, ``grayscale`` L-mode and ``rgba`` RGBA images
    are added per class on top, to exercise the loaders' clean-up. ``vary_size`` draws each image at
    a random size around ``size`` (real photos differ in size).
    """
    rng = random.Random(seed)
    root = Path(root)
    names = list(class_names or classes)
    for kind, name in zip(classes, names):
        files: list[Path] = []
        for i in range(per_class):
            if layout == "splits":
                cut = [round(per_class * fractions[0]), round(per_class * (fractions[0] + fractions[1]))]
                split = "train" if i < cut[0] else "validation" if i < cut[1] else "test"
                folder = root / split / name
            elif layout == "folder":
                folder = root / name
            else:
                raise ValueError(f"unknown layout '{layout}'")
            folder.mkdir(parents=True, exist_ok=True)
            side = rng.randint(size, size * 3 // 2) if vary_size else size
            image = draw(kind, side, rng)
            if i < grayscale:
                image = image.convert("L")
            elif i < grayscale + rgba:
                image = image.convert("RGBA")
            suffix = "png" if image.mode == "RGBA" else fmt
            path = folder / f"{name}.{i:04d}.{suffix}"
            image.save(path)
            files.append(path)
        for j in range(corrupt):
            bad = files[j % len(files)].parent / f"{name}.broken{j}.jpg"
            bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" if j % 2 == 0 else b"")
    return root


def make_patch_set(root: Path, per_class: int = 60, size: int = 96, patch: tuple[int, int, int, int] = (6, 6, 26, 26),
                   fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0) -> Path:
    """Two classes, "marked" and "plain", under root/{train,validation,test}/<class>/: every picture
    is a random shape (any of ``KINDS``) over noise; a "marked" one also has a solid square of a
    random bright colour at ``patch`` (left, top, right, bottom), always in the same place, so a
    model that learned the task looks there."""
    rng = random.Random(seed)
    root = Path(root)
    cut = [round(per_class * fractions[0]), round(per_class * (fractions[0] + fractions[1]))]
    for name in ("marked", "plain"):
        for i in range(per_class):
            split = "train" if i < cut[0] else "validation" if i < cut[1] else "test"
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            image = draw(rng.choice(KINDS), size, rng)
            if name == "marked":
                colour = tuple(rng.randint(180, 255) if c == i % 3 else rng.randint(0, 60) for c in range(3))
                ImageDraw.Draw(image).rectangle(patch, fill=colour)
            image.save(folder / f"{name}.{i:04d}.png")
    return root


def make_hue_set(root: Path, per_class: int = 40, size: int = 16, fractions: Sequence[float] = (0.5, 0.25, 0.25),
                 seed: int = 0) -> Path:
    """Two classes, "red" and "green", under root/{train,validation,test}/<class>/: a random shape
    over noise, the shape reddish in one class and greenish in the other at the same brightness
    (equal luma, the weights a conversion to grayscale uses). In colour they are easy to tell
    apart; in grayscale the two classes are the same pictures, so no model can beat chance."""
    rng = random.Random(seed)
    root = Path(root)
    cut = [round(per_class * fractions[0]), round(per_class * (fractions[0] + fractions[1]))]
    bases = {"red": (200, 100, 100), "green": (100, 151, 100)}  # luma 129.9 both
    for name, base in bases.items():
        for i in range(per_class):
            split = "train" if i < cut[0] else "validation" if i < cut[1] else "test"
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            shade = rng.uniform(0.6, 1.2)
            colour = tuple(min(255, round(c * shade)) for c in base)
            image = Image.new("RGB", (size, size), (40, 40, 40))
            extent = rng.uniform(0.5, 0.9) * size
            x0, y0 = rng.uniform(0, size - extent), rng.uniform(0, size - extent)
            box = (x0, y0, x0 + extent, y0 + extent)
            pen = ImageDraw.Draw(image)
            (pen.ellipse if rng.random() < 0.5 else pen.rectangle)(box, fill=colour)
            grey = np.random.default_rng(rng.getrandbits(32)).normal(0, 8, (size, size, 1))  # the same on each channel
            pixels = (np.asarray(image, dtype=np.float32) + grey).clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{name}.{i:04d}.png")
    return root


#: breeds of the generated Oxford-IIIT Pet copy: (name as in its file names, class id, species 1 cat / 2 dog,
#: the kind of picture drawn for it); cat breeds are capitalised in the published set, dog breeds are not
PET_BREEDS = (("Abyssinian", 1, 1, "circle"), ("beagle", 5, 2, "stripes"), ("Bengal", 6, 1, "circle"),
              ("pug", 26, 2, "stripes"))


def make_pets_layout(root: Path, per_breed: int = 6, test_per_breed: int = 2, size: int = 40, seed: int = 0) -> Path:
    """A small copy of Oxford-IIIT Pet as published (and as torchvision's OxfordIIITPet reads it):
    ``root/images/<Breed>_<n>.jpg`` and ``root/annotations/{trainval,test,list}.txt`` with lines
    ``NAME CLASS-ID SPECIES BREED-ID``. Cats are circles, dogs stripes, so a network can learn them."""
    rng = random.Random(seed)
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    listings: dict[str, list[str]] = {"trainval": [], "test": []}
    for breed, class_id, species, kind in PET_BREEDS:
        for n in range(1, per_breed + 1):
            draw(kind, size, rng).save(root / "images" / f"{breed}_{n}.jpg")
            split = "test" if n > per_breed - test_per_breed else "trainval"
            listings[split].append(f"{breed}_{n} {class_id} {species} {n}")
    for split, lines in listings.items():
        (root / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    header = "#Image CLASS-ID SPECIES BREED ID\n#ID: 1:37 Class ids\n#SPECIES: 1:Cat 2:Dog\n#BREED ID: 1-25:Cat 1:12:Dog\n"
    (root / "annotations" / "list.txt").write_text(header + "".join(f"{line}\n" for v in listings.values() for line in v))
    return root
