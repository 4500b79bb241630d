"""An epoch of a head trained on cached features costs the head and nothing else: the frozen
backbone never runs after the cache is filled, and the epoch checkpoint holds what trains, not the
frozen network (45 MB of ResNet-18 copied and written every epoch once made a 0.03 s epoch take
0.12 s; ``benchmarks/train_throughput.py`` prints the speed-up of a cached head-only epoch)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nodes.engine.fit import FitConfig, fit
from nodes.engine.hooks import Hooks
from nodes.engine.store import MEMORY
from nodes.engine.values import ModelValue
from tests.nodes.engine.conftest import image_set

FMT = {"height": 32, "width": 32, "channels": 3, "resize": "shorter_side", "resize_to": 0, "crop": "center",
       "normalize": "imagenet"}
SPEC = {"input_shape": [3, 32, 32], "layers": [
    {"kind": "backbone", "name": "backbone", "arch": "resnet18", "weights": "none"},
    {"kind": "global_pool", "name": "pool", "mode": "avg"},
    {"kind": "dense", "name": "fc", "units": "auto", "activation": "none", "dropout": 0.0}]}
FROZEN = ("stem", "layer1", "layer2", "layer3", "layer4")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return image_set(tmp_path_factory.mktemp("cached"), per_class=20, fmt=FMT)


def config(epochs: int) -> FitConfig:
    return FitConfig(epochs=epochs, batch_size=8, optimizer="sgd", lr=1e-2, device="cpu", feature_cache="auto")


def test_after_the_first_epoch_a_cached_head_runs_no_convolution_and_checkpoints_only_the_head(data, tmp_path):
    MEMORY.clear()
    convolutions_by_epoch, convolutions = [], [0]

    def count(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            convolutions[0] += 1

    def metric(name, value, step=None, **extra):
        if name == "val_accuracy":
            convolutions_by_epoch.append(convolutions[0])

    handle = torch.nn.modules.module.register_module_forward_hook(count)
    try:
        torch.manual_seed(0)
        fit(ModelValue(spec=SPEC, frozen=FROZEN), data, config(4),
            Hooks(tmp_path / "ws", tmp_path / "checkpoints", metric=metric))
    finally:
        handle.remove()
    assert convolutions_by_epoch[0] > 0  # the first epoch fills the cache: the backbone runs over every image
    assert convolutions_by_epoch[1:] == [convolutions_by_epoch[0]] * 3  # later epochs: not one convolution
    checkpoint = tmp_path / "checkpoints" / "last.safetensors"
    head = 512 * 2 + 2
    assert checkpoint.stat().st_size < 100 * head * 4, checkpoint.stat().st_size  # ResNet-18's 11M weights: 45 MB


def test_a_run_resumed_from_a_head_only_checkpoint_ends_where_an_uninterrupted_one_does(data, tmp_path):
    MEMORY.clear()
    model = ModelValue(spec=SPEC, frozen=FROZEN)
    torch.manual_seed(0)
    whole = fit(model, data, config(3), Hooks(tmp_path / "ws", tmp_path / "whole"))
    torch.manual_seed(0)
    fit(model, data, config(2), Hooks(tmp_path / "ws", tmp_path / "parts"))
    logs = []
    torch.manual_seed(0)
    resumed = fit(model, data, config(3), Hooks(tmp_path / "ws", tmp_path / "parts", log=logs.append))
    assert any("resuming after epoch 2" in line for line in logs)
    assert [h["train_loss"] for h in resumed.history] == pytest.approx([h["train_loss"] for h in whole.history])
    for key, tensor in whole.model.state.items():
        assert torch.allclose(resumed.model.state[key], tensor), key
