"""Stop requests reach inside the engine's long passes: building the feature cache, decoding the
images once, and a single forward pass; a stopped pass leaves no half-written cache entry."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from nodes.engine.device import resolve_device
from nodes.engine.feature_cache import cache_cut, features_for, prefix_digest
from nodes.engine.hooks import Stopped
from nodes.engine.loop import stop_points
from nodes.engine.models import build
from nodes.engine.pipeline import image_batches
from tests.nodes.engine.conftest import image_set

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


def test_a_stop_takes_effect_between_the_blocks_of_one_forward_pass():
    ran = []
    net = nn.Sequential(OrderedDict((f"b{i}", nn.Linear(4, 4)) for i in range(6)))
    for name, block in net.named_children():
        block.register_forward_hook(lambda module, args, out, name=name: ran.append(name))
    requested = {"stop": False}
    net.b1.register_forward_hook(lambda *args: requested.update(stop=True))  # pressed while b1 runs
    with stop_points(net, lambda: requested["stop"]):
        with pytest.raises(Stopped):
            net(torch.zeros(1, 4))
    assert ran == ["b0", "b1"]
    net(torch.zeros(1, 4))  # the stop points are gone afterwards
    assert ran[-1] == "b5"
