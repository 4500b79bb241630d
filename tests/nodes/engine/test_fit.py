"""``fit`` on its own: a plain config and hooks train a real network, a resumed run (mixup
included) ends where an uninterrupted one does, and a stop request ends it within a batch."""

from __future__ import annotations

import math

import pytest
import torch

from nodes.engine.fit import EPOCH_METRICS, FitConfig, NothingToTrain, fit, plan_fit
from nodes.engine.hooks import Hooks, Stopped
from nodes.engine.store import MEMORY
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
    hooks.progress = lambda done, total, **epochs: progress.append((done, total))
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


def test_a_stopped_run_tells_its_epochs_and_the_resumed_run_tells_the_earlier_ones_again(data, tmp_path):
    """Progress counts completed epochs; a run stopped after epoch 2 and resumed reports the curve
    points of epochs 1 and 2 (from the checkpoint's history) before training on, so its curves cover
    every epoch."""
    told: list[tuple[int | None, int | None]] = []

    def progress(done, total, epoch=None, epochs=None) -> None:
        told.append((epoch, epochs))

    stopping = Hooks(tmp_path / "ws", tmp_path / "run", progress=progress,
                     should_stop=lambda: bool(told) and told[-1][0] >= 2)
    with pytest.raises(Stopped):
        fit(ModelValue(spec=MLP), data, config(epochs=5), stopping)
    assert told[0] == (0, 5) and told[-1] == (2, 5)  # "stopped at epoch 2/5"
    assert (1, 5) in told

    points, logs, told = [], [], []
    resuming = Hooks(tmp_path / "ws", tmp_path / "run", progress=progress, log=logs.append,
                     metric=lambda name, value, step=None, **extra: points.append((name, step, value)))
    result = fit(ModelValue(spec=MLP), data, config(epochs=5), resuming)
    assert any("resuming after epoch 2" in line for line in logs)
    assert told[0] == (2, 5) and told[-1] == (5, 5)
    for name in EPOCH_METRICS:
        assert [step for n, step, _ in points if n == name] == [1, 2, 3, 4, 5], name
        values = [value for n, _, value in points if n == name]
        assert values == pytest.approx([h[name] for h in result.history])  # the earlier points are the stopped run's


def test_the_plan_says_what_fit_builds_and_then_finds(data, tmp_path):
    """``plan_fit`` (what the cost preview prices) before a run says what the run builds: decoded
    images and the frozen prefix's outputs of both splits; after it, that everything is there."""
    MEMORY.clear()
    model, workspace = ModelValue(spec=MLP, frozen=("flatten", "hidden")), tmp_path / "ws"
    torch.manual_seed(0)  # as fit seeds before it plans: the prefix's weights, so the feature cache's key
    before = plan_fit(model, data, config(), workspace, checkpoints=True)
    assert before.device.torch.type == "cpu" and before.checkpoints and before.cache.cut == 2
    train, scored = before.train, before.validation
    assert train.features and not train.features_cached and not train.decoded_cached and train.copies == 1
    assert train.prefix_first == train.decoded_first == len(data.split("train")) and train.decoded_each_epoch == 0
    assert scored.features and scored.prefix_first == scored.decoded_first == len(data.split("validation"))

    result = fit(model, data, config(), Hooks(workspace))
    assert result.feature_cache["train"] == "computed" and result.feature_cache["validation"] == "computed"
    torch.manual_seed(0)
    after = plan_fit(model, data, config(), workspace)
    assert after.train.features_cached and after.validation.features_cached and after.train.decoded_cached
    assert after.train.prefix_first == after.train.decoded_first == after.validation.prefix_first == 0
    assert not after.checkpoints and before.digest == after.digest


def test_a_stop_request_ends_fit_within_a_batch(data, hooks):
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 10

    hooks.should_stop = should_stop
    seen = []
    hooks.progress = lambda done, total, **epochs: seen.append(done)
    with pytest.raises(Stopped):
        fit(ModelValue(spec=MLP), data, config(), hooks)
    assert len(seen) < 4  # stopped inside the first epoch


def test_a_model_with_nothing_to_train_is_refused(data, hooks):
    with pytest.raises(NothingToTrain):
        fit(ModelValue(spec=MLP, frozen=("flatten", "hidden", "out")), data, config(), hooks)
