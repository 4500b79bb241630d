"""Training on two CPU processes (torchrun, gloo, DistributedDataParallel) gives the model that one
process gives, rank 0 writes the checkpoints, and a run resumes from them. Tiny images and a
tiny model keep each launch to a few seconds (mostly interpreter start-up)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nodeflow.node import Event, RunContext
from nodes.engine.checkpoint import read_checkpoint
from nodes.engine.images import build_image_set
from nodes.ports import ModelValue
from nodes.training import Trainer
from tests.imagegen import make_image_set

FMT = {"height": 8, "width": 8, "channels": 3, "resize": "stretch", "crop": "center", "normalize": "imagenet"}
SPEC = {"input_shape": [3, 8, 8], "layers": [
    {"kind": "flatten", "name": "flat"},
    {"kind": "dense", "name": "hidden", "units": 16, "activation": "relu"},
    {"kind": "dense", "name": "out", "units": "auto", "activation": "none"}]}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = make_image_set(tmp_path_factory.mktemp("tiny"), ("circle", "stripes"), per_class=20, size=8,
                          fractions=(0.6, 0.2, 0.2))
    return build_image_set(root, 0.2, 0.1, 0, 0, False).with_(format=FMT)


def train(data, workspace: Path, key: str, frozen: tuple[str, ...] = (), **params):
    """Full-batch SGD, so the split of each batch across ranks cannot change the gradient."""
    events: list[Event] = []
    settings = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "epochs": 3, "batch_size": 24, "workers": 0,
                **params}
    ctx = RunContext("train", workspace, device="cpu", emit=events.append, key=key)
    model = Trainer().run(ctx, Trainer.Params(**settings), model=ModelValue(SPEC, frozen=frozen), data=data)["model"]
    return model, events, ctx


def assert_same_model(a, b) -> None:
    assert [round(h["train_loss"], 5) for h in a.history] == pytest.approx(
        [round(h["train_loss"], 5) for h in b.history], abs=1e-4)
    assert [h["val_accuracy"] for h in a.history] == [h["val_accuracy"] for h in b.history]
    for name, tensor in a.state.items():
        assert torch.allclose(tensor, b.state[name], atol=1e-5), name


@pytest.mark.slow
def test_two_processes_train_the_model_one_process_trains(tiny, tmp_path):
    assert len(tiny.split("train")) == 24
    single, _, _ = train(tiny, tmp_path / "one", "single")
    double, events, ctx = train(tiny, tmp_path / "two", "double", devices=2)
    assert_same_model(double, single)
    logs = [e.data["message"] for e in events if e.kind == "log"]
    assert any("2 CPU processes" in line and "gloo" in line for line in logs)
    steps = [e.data["step"] for e in events if e.kind == "metric" and e.data["name"] == "val_loss"]
    assert steps == [1, 2, 3]  # rank 0's metrics, once per epoch, reduced over both ranks
    meta, _ = read_checkpoint(ctx.checkpoints / "last.safetensors")  # written by rank 0
    assert meta["epoch"] == 3
    assert not (ctx.checkpoints / "ddp-job").exists()


@pytest.mark.slow
def test_two_processes_with_the_feature_cache_resume_from_rank_zeros_checkpoint(tiny, tmp_path):
    frozen = ("flat", "hidden")
    single, _, _ = train(tiny, tmp_path / "one", "single", frozen=frozen)
    _, first, _ = train(tiny, tmp_path / "two", "double", frozen=frozen, devices=2, epochs=2)
    [info] = [e.data["payload"] for e in first if e.kind == "preview" and e.data["kind"] == "feature_cache"]
    assert info["enabled"] and info["blocks"] == ["flat", "hidden"] and info["train"] == "computed"
    resumed, events, _ = train(tiny, tmp_path / "two", "double", frozen=frozen, devices=2, epochs=3)
    logs = [e.data["message"] for e in events if e.kind == "log"]
    assert any("resuming after epoch 2" in line for line in logs)
    [info] = [e.data["payload"] for e in events if e.kind == "preview" and e.data["kind"] == "feature_cache"]
    assert info["train"] == "disk"  # computed by rank 0 of the first launch
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert_same_model(resumed, single)


def test_more_devices_than_gpus_blames_the_param(tiny, tmp_path, monkeypatch):
    from nodeflow.node import ParamProblem

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    events: list[Event] = []
    ctx = RunContext("train", tmp_path, device="cuda", emit=events.append, key="k")
    with pytest.raises(ParamProblem) as problem:
        Trainer().run(ctx, Trainer.Params(devices=2), model=ModelValue(SPEC), data=tiny)
    assert problem.value.param == "devices"
