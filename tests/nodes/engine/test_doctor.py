"""The dataset doctor's checks on their own, on a generated set with planted faults: copies of
training images in the test and validation splits (byte-exact, and re-encoded at another size),
training images moved to the wrong class folder, and a file that does not decode. Each planted
fault's precision and recall are measured and asserted."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageEnhance

from nodes.engine.doctor import (Entry, class_balance, entries, exact_duplicates, file_problems, label_conflicts,
                                 label_suspects, near_duplicates, out_of_fold_probs)
from nodes.engine.hooks import Hooks
from nodes.engine.images import build_image_set
from nodes.engine.inference import extract_codes
from nodes.engine.loop import cpu_state, network
from nodes.engine.models import summarize
from nodes.engine.values import ModelValue
from tests.imagegen import make_image_set

SIZE = 64
FORMAT = {"height": SIZE, "width": SIZE, "channels": 3, "resize": "shorter_side", "resize_to": 0, "crop": "center",
          "normalize": "imagenet"}
BACKBONE = {"input_shape": [3, SIZE, SIZE], "layers": [
    {"kind": "backbone", "name": "backbone", "arch": "resnet18", "weights": "none"}]}
# A random-weight backbone's pooled codes blur what makes two pictures the same; its flattened
# 2×2 maps keep the layout (planted re-encoded copies mostly score 0.85-0.97 centred cosine).
POOL, THRESHOLD = "flatten", 0.82


def frozen_backbone() -> ModelValue:
    blocks = tuple(b["name"] for b in summarize(BACKBONE)["blocks"] if b["kind"] == "backbone")
    torch.manual_seed(0)
    return ModelValue(spec=BACKBONE, frozen=blocks, state=cpu_state(network(ModelValue(spec=BACKBONE), 2)))


def plant_faults(root: Path, exact: int = 5, near: int = 5, flips: int = 12, seed: int = 1) -> dict[str, set]:
    """Plant faults in a 'splits' set made by make_image_set; returns what was planted: pairs
    (frozensets of two paths) of exact and near duplicates, flipped files, unreadable files."""
    rng = random.Random(seed)
    train = {c: sorted((root / "train" / c).glob("*.png")) for c in ("circle", "stripes")}
    pool = [p for c in train for p in train[c]]
    rng.shuffle(pool)
    chosen_exact, chosen_near, chosen_flip = pool[:exact], pool[exact:exact + near], pool[exact + near:exact + near + flips]
    planted: dict[str, set] = {"exact": set(), "near": set(), "flips": set(), "unreadable": set()}
    for i, path in enumerate(chosen_exact):
        target = root / ("test" if i % 2 == 0 else "validation") / path.parent.name / f"copy{i}.png"
        shutil.copyfile(path, target)
        planted["exact"].add(frozenset((str(path.resolve()), str(target.resolve()))))
    for i, path in enumerate(chosen_near):
        target = root / "test" / path.parent.name / f"resaved{i}.jpg"
        with Image.open(path) as image:
            bigger = image.convert("RGB").resize((SIZE + 8, SIZE + 8), Image.Resampling.BICUBIC)
            ImageEnhance.Brightness(bigger).enhance(1.08).save(target, quality=85)
        planted["near"].add(frozenset((str(path.resolve()), str(target.resolve()))))
    for path in chosen_flip:
        other = "stripes" if path.parent.name == "circle" else "circle"
        target = root / "train" / other / f"flipped.{path.name}"
        path.rename(target)
        planted["flips"].add(str(target.resolve()))
    broken = root / "train" / "circle" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    planted["unreadable"].add(str(broken.resolve()))
    return planted


def precision_recall(found: set, planted: set) -> tuple[float, float]:
    hits = len(found & planted)
    return (hits / len(found) if found else 0.0), hits / len(planted)


SEEDS = (1, 2, 3, 4)


def planted_set(root: Path, seed: int):
    make_image_set(root, ("circle", "stripes"), per_class=60, size=SIZE, fmt="png", seed=seed)
    planted = plant_faults(root, seed=seed)
    return build_image_set(root, 0.2, 0.2, 0, 0, verify=False).with_(format=FORMAT), planted


@pytest.fixture(scope="module")
def doctored(tmp_path_factory):
    return planted_set(tmp_path_factory.mktemp("doctor"), SEEDS[0])


def diagnose(data, planted, workspace: Path) -> dict[str, tuple[set, set]]:
    """(found, planted) for each fault kind, by the doctor's checks."""
    items = entries(data)
    problems = file_problems(items, min_side=16, max_aspect=4.0)
    assert not problems["tiny"] and not problems["extreme_aspect"]
    unreadable = {f["file"] for f in problems["unreadable"]}
    readable = [e for e in items if e.file not in unreadable]
    groups = exact_duplicates(readable)
    exact_found = {frozenset(g["files"]) for g in groups if g["across_splits"]}

    clean = data.with_(splits={s: tuple(i for i in data.split(s) if i[0] not in unreadable) for s in data.splits})
    codes = extract_codes(frozen_backbone(), clean, POOL, 32, Hooks(workspace=workspace), "cpu")
    order = [e for s in clean.splits if clean.split(s) for e in readable if e.split == s]
    x = torch.cat([codes.splits[s][0] for s in clean.splits if clean.split(s)])
    y = torch.cat([codes.splits[s][1] for s in clean.splits if clean.split(s)])
    assert [data.classes[int(v)] for v in y] == [data.classes[e.label] for e in order]
    skip = {frozenset(g["files"]) for g in groups if len(g["files"]) == 2}
    near_found = {frozenset((p["a"], p["b"])) for p in near_duplicates(x, order, THRESHOLD, True, skip)}
    probs = out_of_fold_probs(x, y, 2, 5, 0.1)
    flips_found = {s["file"] for s in label_suspects(probs, y, order, data.classes, 0.6)}
    return {"unreadable": (unreadable, planted["unreadable"]), "exact": (exact_found, planted["exact"]),
            "near": (near_found, planted["near"]), "flips": (flips_found, planted["flips"])}


@pytest.mark.slow
def test_each_planted_fault_is_found_with_measured_precision_and_recall(tmp_path):
    """Pooled over four generated sets (a few planted faults per set make one set's figures coarse)."""
    totals = {kind: [0, 0, 0] for kind in ("unreadable", "exact", "near", "flips")}  # hits, found, planted
    for seed in SEEDS:
        data, planted = planted_set(tmp_path / f"set{seed}", seed)
        for kind, (found, wanted) in diagnose(data, planted, tmp_path / f"ws{seed}").items():
            totals[kind][0] += len(found & wanted)
            totals[kind][1] += len(found)
            totals[kind][2] += len(wanted)
    figures = {kind: (hits / found if found else 0.0, hits / wanted) for kind, (hits, found, wanted) in totals.items()}
    print("; ".join(f"{kind}: precision {p:.2f} recall {r:.2f} ({totals[kind][1]} flagged, {totals[kind][2]} planted)"
                    for kind, (p, r) in figures.items()))
    assert figures["unreadable"] == (1.0, 1.0)
    assert figures["exact"] == (1.0, 1.0)
    assert figures["near"][1] >= 0.75 and figures["near"][0] >= 0.5
    assert figures["flips"][1] >= 0.75 and figures["flips"][0] >= 0.7


def test_class_balance_counts_every_image_once(doctored):
    data, _ = doctored
    rows = class_balance(data)
    assert sum(row[s] for row in rows for s in data.splits) == sum(len(data.split(s)) for s in data.splits)
    assert abs(sum(row["share"] for row in rows) - 1) < 1e-3


def test_one_image_under_two_classes_is_a_label_conflict_and_a_copy_within_a_class_an_exact_duplicate(tmp_path):
    root = make_image_set(tmp_path / "images", ("circle", "stripes"), per_class=4, size=16, fmt="png", seed=3,
                          class_names=("cat", "dog"))
    cat = sorted((root / "train" / "cat").glob("*.png"))
    shutil.copyfile(cat[0], root / "train" / "dog" / "also_a_dog.png")  # the same picture, filed as a dog
    shutil.copyfile(cat[1], root / "test" / "cat" / "again.png")  # a copy in its own class
    data = build_image_set(root, 0.2, 0.2, 0, 0, verify=False)
    items = entries(data)
    conflict = str((root / "train" / "dog" / "also_a_dog.png").resolve())
    conflicts = label_conflicts(items, data.classes)
    assert [sorted(zip(g["files"], g["classes"])) for g in conflicts] == \
        [sorted([(str(cat[0].resolve()), "cat"), (conflict, "dog")])]
    duplicates = exact_duplicates(items)
    again = str((root / "test" / "cat" / "again.png").resolve())
    assert [set(g["files"]) for g in duplicates] == [{str(cat[1].resolve()), again}]
    assert duplicates[0]["across_splits"] and not conflicts[0]["across_splits"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from([b"a", b"b", b"c", b"d"]), st.integers(0, 2)), min_size=1, max_size=9))
def test_every_group_of_same_bytes_is_either_an_exact_duplicate_or_a_label_conflict(tmp_path, files):
    """Same bytes, one class: an exact duplicate; same bytes, two or more classes: a label conflict;
    never both, never neither."""
    folder = tmp_path / f"set{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    items = []
    for index, (content, label) in enumerate(files):
        path = folder / f"{index}.png"
        path.write_bytes(content)
        items.append(Entry(str(path), "train", label))
    duplicates, conflicts = exact_duplicates(items), label_conflicts(items, ["cat", "dog", "fox"])
    found = [frozenset(g["files"]) for g in duplicates + conflicts]
    wanted = {}
    for entry, (content, _) in zip(items, files):
        wanted.setdefault(content, []).append(entry)
    assert sorted(found, key=sorted) == sorted((frozenset(e.file for e in group) for group in wanted.values()
                                                if len(group) > 1), key=sorted)
    assert all(len(set(g["labels"])) == 1 for g in duplicates)
    assert all(len(set(g["classes"])) > 1 and len(g["classes"]) == len(g["files"]) for g in conflicts)
