"""``fit`` on its own: a plain config and hooks train a real network, a resumed run (mixup
included) ends where an uninterrupted one does, and a stop request ends it within a batch."""

from __future__ import annotations

import math

import pytest
import torch

from nodes.engine.fit import FitConfig, NothingToTrain, fit
from nodes.engine.hooks import Hooks, Stopped
from nodes.engine.values import ModelValue
from tests.nodes.engine.conftest import image_set

MLP = {"input_shape": [3, 16, 16], "layers": [
    {"kind": "flatten", "name": "flatten"},
    {"kind": "dense", "name": "hidden", "units": 32, "activation": "relu", "dropout": 0.1},
    {"kind": "dense", "name": "out", "units": "auto", "activation": "none", "dropout": 0.0}]}
FMT = {"height": 16, "width": 16, "channels": 3, "resize": "shorter_side", "resize_to": 0, "crop": "center",
       "normalize": "imagenet"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return image_set(tmp_path_factory.mktemp("fit"), per_class=40, size=20, fmt=FMT)


def config(**changes) -> FitConfig:
    return FitConfig(**{"epochs": 4, "batch_size": 16, "optimizer": "adam", "lr": 3e-3, "device": "cpu", **changes})


def test_fit_learns_and_reports_through_its_hooks(data, hooks):
    metrics, progress = [], []
    hooks.metric = lambda name, value, step=None, **extra: metrics.append((name, value))
    hooks.progress = lambda done, total: progress.append((done, total))
    result = fit(ModelValue(spec=MLP), data, config(schedule="cosine"), hooks)
    assert result.history[-1]["val_accuracy"] >= 0.9
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.model.trained and result.model.classes == data.classes
    assert ("trainable_params", result.trainable_params) in metrics
    assert progress[-1][0] == progress[-1][1] == 4 * math.ceil(len(data.split("train")) / 16)
    assert (hooks.checkpoints / "last.safetensors").is_file()


def test_a_resumed_run_with_mixup_ends_where_an_uninterrupted_one_does(data, tmp_path):
    settings = dict(batch_augment="mixup", mix_alpha=0.4, schedule="sgdr", seed=3)
    whole = fit(ModelValue(spec=MLP), data, config(**settings), Hooks(tmp_path / "ws", tmp_path / "whole"))
    fit(ModelValue(spec=MLP), data, config(epochs=2, **settings), Hooks(tmp_path / "ws", tmp_path / "parts"))
    logs = []
    resumed = fit(ModelValue(spec=MLP), data, config(**settings),
                  Hooks(tmp_path / "ws", tmp_path / "parts", log=logs.append))
    assert any("resuming after epoch 2" in line for line in logs)
    assert [h["train_loss"] for h in resumed.history] == pytest.approx([h["train_loss"] for h in whole.history])
    for key, tensor in whole.model.state.items():
        assert torch.allclose(resumed.model.state[key], tensor), key


def test_a_stop_request_ends_fit_within_a_batch(data, hooks):
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 10

    hooks.should_stop = should_stop
    seen = []
    hooks.progress = lambda done, total: seen.append(done)
    with pytest.raises(Stopped):
        fit(ModelValue(spec=MLP), data, config(), hooks)
    assert len(seen) < 4  # stopped inside the first epoch


def test_a_model_with_nothing_to_train_is_refused(data, hooks):
    with pytest.raises(NothingToTrain):
        fit(ModelValue(spec=MLP, frozen=("flatten", "hidden", "out")), data, config(), hooks)
