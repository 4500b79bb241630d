"""Whether a dataset is sound before any training: class balance; files that do not decode, are
tiny or have an extreme aspect ratio; exact duplicates (same bytes, same class) and near duplicates
(CNN codes of a frozen backbone closer than a cosine-similarity threshold) across
train/validation/test, which leak test images into training; label conflicts (same bytes filed
under two classes: one of the labels is wrong, whatever a model learns); and suspected label errors,
confident-learning style: out-of-fold predictions of a linear probe on the codes that confidently
disagree with the given label.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from nodes.engine.linear import fit_linear
from nodes.engine.values import ImageSet


@dataclass(frozen=True)
class Entry:
    file: str
    split: str
    label: int


def entries(data: ImageSet) -> list[Entry]:
    return [Entry(path, split, label) for split in data.splits for path, label in data.split(split)]


def class_balance(data: ImageSet) -> list[dict[str, Any]]:
    """Images per class and split, and each class's share of all images."""
    total = sum(len(data.split(s)) for s in data.splits) or 1
    rows = []
    for index, name in enumerate(data.classes):
        row: dict[str, Any] = {"class": name}
        for split in data.splits:
            row[split] = sum(1 for _, label in data.split(split) if label == index)
        row["share"] = round(sum(row[s] for s in data.splits) / total, 4)
        rows.append(row)
    return rows


def file_problems(items: Sequence[Entry], min_side: int, max_aspect: float) -> dict[str, list[dict[str, Any]]]:
    """Files that do not decode, whose shorter side is below ``min_side`` pixels, or whose longer
    side is more than ``max_aspect`` times the shorter."""
    from PIL import Image

    found: dict[str, list[dict[str, Any]]] = {"unreadable": [], "tiny": [], "extreme_aspect": []}
    for entry in items:
        try:
            with Image.open(entry.file) as image:
                image.load()
                width, height = image.size
        except Exception as exc:  # PIL raises many kinds for a broken file
            found["unreadable"].append({"file": entry.file, "split": entry.split,
                                        "reason": f"{type(exc).__name__}: {str(exc)[:120]}"})
            continue
        short, long = sorted((width, height))
        if short < min_side:
            found["tiny"].append({"file": entry.file, "split": entry.split, "width": width, "height": height})
        elif long / max(1, short) > max_aspect:
            found["extreme_aspect"].append({"file": entry.file, "split": entry.split, "width": width,
                                            "height": height, "aspect": round(long / short, 2)})
    return found


def skipped_files(data: ImageSet) -> list[str]:
    """Image files under the dataset's folder (the common folder of its files) that the dataset
    does not hold, e.g. those its loader skipped as unreadable; empty when it skipped none."""
    import os

    from nodes.engine.images import image_files

    held = {path for split in data.splits for path, _ in data.split(split)}
    if not data.skipped or not held:
        return []
    root = Path(os.path.commonpath([str(Path(p).parent) for p in held]))
    return [str(p) for p in image_files(root) if str(p) not in held]


def content_hash(path: str) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def same_bytes(items: Sequence[Entry]) -> list[list[Entry]]:
    """Groups of two or more files with the same bytes, in the order their first file comes."""
    groups: dict[str, list[Entry]] = {}
    for entry in items:
        groups.setdefault(content_hash(entry.file), []).append(entry)
    return [group for group in groups.values() if len(group) > 1]


def exact_duplicates(items: Sequence[Entry]) -> list[dict[str, Any]]:
    """Groups of files with the same bytes under one class, with their splits and labels (the same
    bytes under two classes are a :func:`label_conflicts` finding instead)."""
    return [{"files": [e.file for e in group], "splits": [e.split for e in group], "labels": [e.label for e in group],
             "across_splits": len({e.split for e in group}) > 1}
            for group in same_bytes(items) if len({e.label for e in group}) == 1]


def label_conflicts(items: Sequence[Entry], classes: Sequence[str]) -> list[dict[str, Any]]:
    """Groups of files with the same bytes filed under two or more classes: the one image carries
    contradicting labels, which no model can satisfy, so it is a labelling fault to fix, not a
    copy to drop. Each names every file with its class and split."""
    return [{"files": [e.file for e in group], "classes": [classes[e.label] for e in group],
             "splits": [e.split for e in group], "labels": [e.label for e in group],
             "across_splits": len({e.split for e in group}) > 1}
            for group in same_bytes(items) if len({e.label for e in group}) > 1]


def near_duplicates(codes: torch.Tensor, items: Sequence[Entry], threshold: float, across_splits_only: bool = True,
                    skip: set[frozenset[str]] | None = None, chunk: int = 1024) -> list[dict[str, Any]]:
    """Pairs of images whose centred codes have cosine similarity ≥ ``threshold`` and that are
    each other's nearest neighbour in the other's split (a copy is its original's closest image;
    two merely alike pictures seldom are both ways), most similar first; pairs in ``skip`` (e.g.
    exact duplicates) left out. Centring removes what every image's codes share (ReLU features
    are all positive, which makes raw cosines uniformly high)."""
    z = F.normalize(codes.float() - codes.float().mean(0), dim=1)
    names = sorted({e.split for e in items})
    split_index = torch.tensor([names.index(e.split) for e in items])
    n = len(items)
    # nearest[s][i]: the image of split s closest to image i (itself excluded)
    nearest = torch.full((len(names), n), -1, dtype=torch.long)
    best = torch.full((len(names), n), -2.0)
    for start in range(0, n, chunk):
        sims = z[start:start + chunk] @ z.T
        rows = torch.arange(start, min(start + chunk, n))
        sims[rows - start, rows] = -2.0
        for s in range(len(names)):
            masked = sims.masked_fill(split_index[None, :] != s, -2.0)
            value, index = masked.max(1)
            best[s, rows], nearest[s, rows] = value, index
    pairs = []
    for i in range(n):
        for s in range(len(names)):
            j = int(nearest[s, i])
            if j <= i or best[s, i] < threshold or int(nearest[split_index[i], j]) != i:
                continue
            if across_splits_only and split_index[i] == split_index[j]:
                continue
            if skip and frozenset((items[i].file, items[j].file)) in skip:
                continue
            pairs.append({"a": items[i].file, "b": items[j].file, "split_a": items[i].split,
                          "split_b": items[j].split, "similarity": round(float(best[s, i]), 4)})
    pairs.sort(key=lambda p: -p["similarity"])
    return pairs


def out_of_fold_probs(codes: torch.Tensor, labels: torch.Tensor, num_classes: int, folds: int, c: float,
                      seed: int = 0) -> torch.Tensor:
    """Class probabilities of each image from a logistic regression fitted on the other folds."""
    n = len(labels)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    fold_of = torch.empty(n, dtype=torch.long)
    for rank, i in enumerate(order.tolist()):
        fold_of[i] = rank % folds
    probs = torch.zeros(n, num_classes)
    for fold in range(folds):
        held = fold_of == fold
        weight, bias = fit_linear(codes[~held], labels[~held], num_classes, "logistic_regression", c, 200)
        probs[held] = (codes[held].float() @ weight.T + bias).softmax(1)
    return probs


def label_suspects(probs: torch.Tensor, labels: torch.Tensor, items: Sequence[Entry], classes: Sequence[str],
                   min_confidence: float) -> list[dict[str, Any]]:
    """Images whose out-of-fold prediction confidently names another class: confident learning's
    per-class thresholds (the mean probability of class j over the images labelled j), an image
    labelled i is suspect when some other class j reaches its threshold, beats the label's
    probability and ``min_confidence``. Least self-confident first."""
    k = len(classes)
    thresholds = torch.tensor([float(probs[labels == j, j].mean()) if (labels == j).any() else 1.0
                               for j in range(k)])
    suspects = []
    for i in range(len(labels)):
        given = int(labels[i])
        above = [(float(probs[i, j]), j) for j in range(k)
                 if j != given and probs[i, j] >= thresholds[j] and probs[i, j] > probs[i, given]
                 and probs[i, j] >= min_confidence]
        if above:
            p, j = max(above)
            suspects.append({"file": items[i].file, "split": items[i].split, "label": classes[given],
                             "suggested": classes[j], "confidence": round(p, 4),
                             "label_probability": round(float(probs[i, given]), 4)})
    suspects.sort(key=lambda s: s["label_probability"])
    return suspects
