"""The freeze-boundary feature cache: what it stands in for, when an entry is found again (memory,
disk, a new process) and when it is not (weights, files, transform changed); and stop requests
reach inside the engine's long passes (building the cache, decoding the images once, a single
forward pass), leaving no half-written entry."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

from nodes.engine.device import resolve_device
from nodes.engine.feature_cache import cache_cut, decide, features_for, prefix_digest
from nodes.engine.hooks import Stopped
from nodes.engine.images import build_image_set
from nodes.engine.loop import stop_points
from nodes.engine.models import build
from nodes.engine.pipeline import image_batches
from nodes.engine.store import MEMORY
from nodes.engine.values import ImageSet, ModelValue
from tests.nodes.conftest import ROOT
from tests.nodes.engine.conftest import image_set

FMT = {"height": 32, "width": 32, "channels": 3, "resize": "shorter_side", "crop": "center", "normalize": "imagenet"}

SPEC = {"input_shape": [3, 32, 32], "layers": [
    {"kind": "backbone", "name": "backbone", "arch": "vgg11", "weights": "none"},
    {"kind": "global_pool", "name": "pool", "mode": "avg"},
    {"kind": "dense", "name": "out", "units": 2, "activation": "none", "dropout": 0.0}]}
BLOCKS = ("block1", "block2", "block3", "block4", "block5")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return image_set(tmp_path_factory.mktemp("stop"), per_class=60)


class StopAfter:
    """``should_stop`` that turns true on its ``n``-th call."""

    def __init__(self, n: int) -> None:
        self.n, self.calls = n, 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.calls >= self.n


def entries(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_the_feature_cache_build_honours_a_stop_request(data, hooks):
    torch.manual_seed(0)
    net = build(SPEC)
    cut = cache_cut(net, BLOCKS)
    assert cut == 6  # five frozen blocks and the parameter-free pool
    device = resolve_device("cpu")
    image_batches(data, "train", 8, False, device.torch, hooks.workspace)  # decoded already: only the build is left
    stop = StopAfter(2)
    with pytest.raises(Stopped):
        features_for(net, cut, prefix_digest(net, cut), data, "train", SPEC["input_shape"], device, hooks.workspace,
                     8, should_stop=stop)
    assert stop.calls == 2  # polled once per batch: stopped at the second of 3 batches
    assert entries(hooks.workspace / "features") == []  # no entry, and no temporary file left behind
    found = features_for(net, cut, prefix_digest(net, cut), data, "train", SPEC["input_shape"], device,
                         hooks.workspace, 8)
    assert found.hit == "computed" and len(found) == len(data.split("train"))


def test_decoding_the_images_once_honours_a_stop_request(data, hooks):
    with pytest.raises(Stopped):
        image_batches(data, "train", 8, False, torch.device("cpu"), hooks.workspace, should_stop=StopAfter(5))
    assert entries(hooks.workspace / "decoded") == []


def test_a_stop_takes_effect_between_the_layers_of_one_forward_pass():
    """Pressed while the first layer of a block runs, the stop lands before that block's next layer."""
    ran = []
    net = nn.Sequential(OrderedDict((f"b{i}", nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4)))
                                    for i in range(3)))
    for name, layer in net.named_modules():
        if isinstance(layer, (nn.Linear, nn.ReLU)):
            layer.register_forward_hook(lambda module, args, out, name=name: ran.append(name))
    requested = {"stop": False}
    net.b1[0].register_forward_hook(lambda *args: requested.update(stop=True))  # pressed while b1.0 runs
    with stop_points(net, lambda: requested["stop"]):
        with pytest.raises(Stopped):
            net(torch.zeros(1, 4))
    assert ran == ["b0.0", "b0.1", "b0.2", "b1.0"]
    net(torch.zeros(1, 4))  # the stop points are gone afterwards
    assert ran[-1] == "b2.2"


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


@pytest.mark.slow
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
