"""The feature cache follows the freeze boundary (hit on later epochs, runs and processes; missed
exactly when weights, files or transform change; same results as without it; says why it is off),
and decoded-image batches equal the per-file path. Behaviour only: speed is the benchmark's job."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from nodeflow.executor import Executor
from nodeflow.node import Event
from nodes.engine.feature_cache import cache_cut, decide, features_for, prefix_digest
from nodes.engine.images import build_image_set, loader
from nodes.engine.models import build
from nodes.engine.pipeline import image_batches
from nodes.engine.store import MEMORY
from nodes.engine.device import resolve_device
from nodes.ports import ModelValue
from tests.nodes.conftest import ROOT
from tests.nodes.graphs import classifier_graph

FMT = {"height": 32, "width": 32, "channels": 3, "resize": "shorter_side", "crop": "center", "normalize": "imagenet"}


def previews(events: list[Event], node: str) -> list[dict]:
    return [e.data["payload"] for e in events if e.kind == "preview" and e.node_id == node
            and e.data["kind"] == "feature_cache"]


def run_graph(registry, graph, workspace: Path):
    events: list[Event] = []
    report = Executor(registry, workspace, device="cpu", listeners=[events.append]).run(graph)
    assert report.ok, report.to_json()
    return report, events


def head_only(root: Path, **trainer) -> object:
    """A frozen ResNet-18 (random weights: no downloads) with a new head, evaluated on the test split."""
    return classifier_graph(root, feature_extractor=True, epochs=3, lr=1e-2, trainer=trainer or None)


def test_head_only_training_caches_the_frozen_prefix_once_and_reuses_it(registry, shapes, tmp_path):
    MEMORY.clear()
    report, events = run_graph(registry, head_only(shapes), tmp_path / "ws")
    [info] = previews(events, "train")
    assert info["enabled"] and info["train"] == "computed" and info["validation"] == "computed"
    # the cache stands in for the frozen backbone and the parameter-free pool after it
    assert info["blocks"] == ["stem", "layer1", "layer2", "layer3", "layer4", "pool1"]
    assert info["feature_shape"] == [512] and info["copies"] == 1
    assert len(report.outputs["train"]["model"].history) == 3
    entries = sorted((tmp_path / "ws" / "features").glob("*.safetensors"))
    assert len(entries) == 3  # train, validation (trainer), test (evaluate)
    for entry in entries:
        with safe_open(str(entry), framework="pt") as handle:
            assert handle.get_slice("features").get_dtype() == "F16"

    # a new run of the trainer (other lr) in this process: from memory; in a new process: from disk
    report, events = run_graph(registry, head_only(shapes, lr=5e-3), tmp_path / "ws")
    assert previews(events, "train")[0]["train"] == "memory"
    MEMORY.clear()
    _, events = run_graph(registry, head_only(shapes, lr=2e-3), tmp_path / "ws")
    assert previews(events, "train")[0]["train"] == "disk"
    assert len(list((tmp_path / "ws" / "features").glob("*.safetensors"))) == 3


def test_cache_on_and_off_train_the_same_model(registry, shapes, tmp_path):
    """Same batches in the same order; only the fp16 rounding of the stored features differs."""
    on, _ = run_graph(registry, head_only(shapes), tmp_path / "on")
    off, events = run_graph(registry, head_only(shapes, feature_cache="off"), tmp_path / "off")
    assert previews(events, "train")[0]["enabled"] is False
    assert not (tmp_path / "off" / "features").exists()
    for a, b in zip(on.outputs["train"]["model"].history, off.outputs["train"]["model"].history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=2e-2, abs=2e-3)
        assert a["val_accuracy"] == pytest.approx(b["val_accuracy"], abs=0.051)
    assert on.nodes["eval"].metrics["accuracy"] == pytest.approx(off.nodes["eval"].metrics["accuracy"], abs=0.051)


def test_random_augmentation_turns_the_cache_off_and_says_why_unless_copies_are_cached(registry, shapes, tmp_path):
    graph = head_only(shapes).model_dump(mode="json")
    graph["nodes"].append({"id": "aug", "type": "data.augment", "params": {"hflip": 0.5}})
    graph["edges"] = [e for e in graph["edges"] if not (e["source"] == "fmt" and e["target"] == "train")]
    graph["edges"] += [{"source": "fmt", "source_port": "data", "target": "aug", "target_port": "data"},
                       {"source": "aug", "source_port": "data", "target": "train", "target_port": "data"}]
    from nodeflow.graph import Graph

    _, events = run_graph(registry, Graph.from_data(graph), tmp_path / "ws")
    [info] = previews(events, "train")
    assert info["enabled"] is False and "hflip" in info["reason"] and "augmented_copies" in info["reason"]
    assert info["validation"] in ("computed", "memory")  # validation images are never augmented: still cached
    logs = [e.data["message"] for e in events if e.kind == "log" and e.node_id == "train"]
    assert any("feature cache off" in line and "hflip" in line for line in logs)

    graph["nodes"][[n["id"] for n in graph["nodes"]].index("train")]["params"]["augmented_copies"] = 2
    _, events = run_graph(registry, Graph.from_data(graph), tmp_path / "ws")
    [info] = previews(events, "train")
    assert info["enabled"] and info["copies"] == 2 and info["train"] == "computed"


def test_entries_are_invalidated_exactly_when_weights_files_or_transform_change(shapes, tmp_path):
    torch.manual_seed(0)
    spec = {"input_shape": [3, 32, 32], "layers": [
        {"kind": "backbone", "name": "backbone", "arch": "resnet18"},
        {"kind": "global_pool", "name": "pool"}, {"kind": "dense", "name": "out", "units": 2}]}
    frozen = ("stem", "layer1", "layer2", "layer3", "layer4")
    net = build(spec, load_weights=False)
    data = build_image_set(shapes, 0.2, 0.1, 0, 0, False).with_(format=FMT)
    device = resolve_device("cpu")
    workspace = tmp_path / "ws"

    def hit(net=net, data=data, split="validation") -> str:
        cut = cache_cut(net, frozen)
        return features_for(net, cut, prefix_digest(net, cut), data, split, spec["input_shape"], device, workspace,
                            16).hit

    MEMORY.clear()
    assert hit() == "computed"
    assert hit() == "memory"
    torch.nn.init.normal_(net.out[0].weight)  # the trained head changes: the prefix's outputs do not
    assert hit() == "memory"
    assert hit(split="test") == "computed"
    with torch.no_grad():
        net.layer3[0].conv1.weight.mul_(1.01)  # a prefix weight changes
    assert hit() == "computed"
    net.layer1[0].bn1.running_mean.add_(0.1)  # so does a buffer
    assert hit() == "computed"
    assert hit(data=data.with_(format={**FMT, "normalize": "none"})) == "computed"
    victim = Path(data.split("validation")[0][0])
    before = victim.stat()
    os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))  # the file is rewritten
    assert hit() == "computed"
    assert hit() == "memory"


def test_a_new_process_finds_the_entry_on_disk(shapes, tmp_path):
    code = ("import sys, torch; from pathlib import Path\n"
            "from nodes.engine.feature_cache import cache_cut, features_for, prefix_digest\n"
            "from nodes.engine.images import build_image_set\nfrom nodes.engine.models import build\n"
            "from nodes.engine.device import resolve_device\n"
            "torch.manual_seed(0)\n"
            "spec = {'input_shape': [3, 32, 32], 'layers': [{'kind': 'backbone', 'name': 'b', 'arch': 'resnet18'},"
            " {'kind': 'global_pool', 'name': 'pool'}, {'kind': 'dense', 'name': 'out', 'units': 2}]}\n"
            "net = build(spec, load_weights=False); cut = cache_cut(net, ('stem', 'layer1', 'layer2', 'layer3', 'layer4'))\n"
            f"data = build_image_set(Path(sys.argv[1]), 0.2, 0.1, 0, 0, False).with_(format={FMT!r})\n"
            "found = features_for(net, cut, prefix_digest(net, cut), data, 'test', spec['input_shape'],"
            " resolve_device('cpu'), Path(sys.argv[2]), 16)\n"
            "print(found.hit, tuple(found.features.shape))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    first = subprocess.run([sys.executable, "-c", code, str(shapes), str(tmp_path)], capture_output=True, text=True,
                           env=env, cwd=ROOT, timeout=120)
    second = subprocess.run([sys.executable, "-c", code, str(shapes), str(tmp_path)], capture_output=True, text=True,
                            env=env, cwd=ROOT, timeout=120)
    assert first.stdout.split()[0] == "computed", first.stderr
    assert second.stdout.split()[0] == "disk", second.stderr
    assert first.stdout.split(" ", 1)[1] == second.stdout.split(" ", 1)[1]


def test_the_cache_follows_the_freeze_boundary_of_a_vgg_fine_tune():
    spec = {"input_shape": [3, 32, 32], "layers": [
        {"kind": "backbone", "name": "vgg16", "arch": "vgg16"}, {"kind": "flatten", "name": "flatten"},
        {"kind": "dense", "name": "dense", "units": 8, "activation": "relu"},
        {"kind": "dense", "name": "classifier", "units": 2}]}
    net = build(spec, load_weights=False)
    tuned = ModelValue(spec, frozen=("block1", "block2", "block3", "block4"))
    head_only = ModelValue(spec, frozen=("block1", "block2", "block3", "block4", "block5"))
    from nodes.ports import ImageSet

    data = ImageSet(("a", "b"), {"train": ()}, format=FMT)
    assert decide(net, tuned, data, "auto", 0).blocks == ["block1", "block2", "block3", "block4"]
    assert decide(net, head_only, data, "auto", 0).blocks == ["block1", "block2", "block3", "block4", "block5",
                                                              "flatten"]
    assert not decide(net, ModelValue(spec), data, "auto", 0).train
    assert not decide(net, tuned, data, "off", 0).train
    augmented = data.with_(augment=({"op": "hflip", "p": 0.5},))
    off = decide(net, tuned, augmented, "auto", 0)
    assert not off.train and off.evaluation and "hflip" in off.reason
    assert decide(net, tuned, augmented, "auto", 3).train
    mixed = decide(net, tuned, data, "auto", 0, ["batch augmentation (mixup) mixes images inside each step"])
    assert not mixed.train and "mixup" in mixed.reason


def test_decoded_batches_equal_the_per_file_path(shapes, tmp_path):
    data = build_image_set(shapes, 0.2, 0.1, 0, 0, False).with_(format=FMT)
    first, second = torch.Generator(), torch.Generator()
    first.manual_seed(3)
    second.manual_seed(3)
    reference = loader(data, "train", 16, True, first)
    decoded = image_batches(data, "train", 16, True, torch.device("cpu"), tmp_path, second)
    for epoch in range(2):  # the same order epoch after epoch, the same pixels
        for (a, y), (b, z) in zip(reference, decoded, strict=True):
            assert torch.equal(y, z) and torch.equal(a, b)
    entry = next((tmp_path / "decoded").glob("*.safetensors"))
    stamp = entry.stat().st_mtime_ns
    MEMORY.clear()
    image_batches(data, "train", 16, True, torch.device("cpu"), tmp_path)  # found, not decoded again
    assert entry.stat().st_mtime_ns == stamp


def test_decoded_batches_apply_random_crops_and_flips_per_image(shapes, tmp_path):
    data = build_image_set(shapes, 0.2, 0.1, 0, 0, False).with_(
        format={**FMT, "height": 28, "width": 28, "crop": "random"}, augment=({"op": "hflip", "p": 0.5},))
    torch.manual_seed(0)
    batches = image_batches(data, "train", 8, True, torch.device("cpu"), tmp_path)
    images, labels = next(iter(batches))
    assert images.shape == (8, 3, 28, 28) and images.dtype == torch.float32 and labels.shape == (8,)
    torch.manual_seed(0)
    again, _ = next(iter(image_batches(data, "train", 8, True, torch.device("cpu"), tmp_path)))
    torch.manual_seed(1)
    other, _ = next(iter(image_batches(data, "train", 8, True, torch.device("cpu"), tmp_path)))
    assert torch.equal(images, again) and not torch.equal(images, other)


def test_benchmark_quick_mode_runs(tmp_path):
    """The benchmark's smoke run, as CI runs it."""
    start = time.monotonic()
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--quick",
                             "--cache-dir", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=180,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stdout + result.stderr
    for row in ("hand-written", "nodeflow", "head-only", "fine-tune"):
        assert row in result.stdout, result.stdout
    assert time.monotonic() - start < 120
