"""A training with a target accuracy stops after the first epoch whose validation accuracy reaches
it (the time to accuracy, as DAWNBench measures it) and keeps the weights that reached it."""

from __future__ import annotations

import pytest

from nodes.engine.fit import FitConfig, fit
from nodes.engine.hooks import Hooks
from nodes.engine.values import ModelValue
from tests.nodes.engine.conftest import image_set

MLP = {"input_shape": [3, 16, 16], "layers": [
    {"kind": "flatten", "name": "flatten"},
    {"kind": "dense", "name": "hidden", "units": 32, "activation": "relu", "dropout": 0.0},
    {"kind": "dense", "name": "out", "units": "auto", "activation": "none", "dropout": 0.0}]}
FMT = {"height": 16, "width": 16, "channels": 3, "resize": "shorter_side", "resize_to": 0, "crop": "center",
       "normalize": "imagenet"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return image_set(tmp_path_factory.mktemp("target"), per_class=40, size=20, fmt=FMT)


@pytest.mark.parametrize("early_stopping", [0, 50])
def test_a_training_stops_at_the_first_epoch_that_reaches_the_target(data, tmp_path, early_stopping):
    logs = []
    config = FitConfig(epochs=50, batch_size=16, optimizer="adam", lr=3e-3, device="cpu", stop_at_accuracy=0.85,
                       early_stopping=early_stopping)
    result = fit(ModelValue(spec=MLP), data, config, Hooks(tmp_path / "ws", log=logs.append))
    scores = [h["val_accuracy"] for h in result.history]
    assert scores[-1] >= 0.85 and all(s < 0.85 for s in scores[:-1]) and len(scores) < 50, scores
    assert any(line.startswith(f"reached validation accuracy {scores[-1]:.3f}") for line in logs), logs
    assert not any("kept the weights with the lowest validation loss" in line for line in logs)  # these weights
