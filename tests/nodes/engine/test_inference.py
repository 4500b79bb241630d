"""One data path for every node that reads images: a second pass of the same frozen network over
the same images is served from the freeze-boundary feature cache, with no decode and no forward
through the frozen blocks, whether the features are still in memory or only on disk."""

from __future__ import annotations

import time

import pytest
import torch

import nodes.engine.pipeline as pipeline
from nodes.engine.inference import extract_codes, predict
from nodes.engine.models import summarize
from nodes.engine.store import MEMORY
from nodes.engine.values import ModelValue
from tests.nodes.engine.conftest import image_set

BACKBONE = {"input_shape": [3, 64, 64], "layers": [
    {"kind": "backbone", "name": "backbone", "arch": "resnet18", "weights": "none"}]}


def frozen_backbone() -> ModelValue:
    """A frozen backbone with fixed weights (as a weights file gives; random init would differ per run)."""
    from nodes.engine.loop import cpu_state, network

    blocks = tuple(b["name"] for b in summarize(BACKBONE)["blocks"] if b["kind"] == "backbone")
    torch.manual_seed(0)
    return ModelValue(spec=BACKBONE, frozen=blocks, state=cpu_state(network(ModelValue(spec=BACKBONE), 2)))


class Counter:
    """Counts image decodes and convolution forwards (every conv of the backbone is one)."""

    def __init__(self, monkeypatch) -> None:
        self.decodes = 0
        self.convs = 0
        real = pipeline.decode

        def decode(path):
            self.decodes += 1
            return real(path)

        monkeypatch.setattr(pipeline, "decode", decode)

    def hook(self, module, args, output):
        if isinstance(module, torch.nn.Conv2d):
            self.convs += 1

    def __enter__(self):
        self.handle = torch.nn.modules.module.register_module_forward_hook(self.hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


@pytest.fixture(scope="module")
def five_hundred(tmp_path_factory):
    fmt = {"height": 64, "width": 64, "channels": 3, "resize": "shorter_side", "resize_to": 0, "crop": "center",
           "normalize": "imagenet"}
    return image_set(tmp_path_factory.mktemp("codes"), per_class=250, size=72, fmt=fmt)


def test_a_second_cnn_codes_run_neither_decodes_nor_runs_the_frozen_backbone(five_hundred, hooks, monkeypatch,
                                                                               capsys):
    data = five_hundred
    assert sum(data.counts().values()) == 500
    model = frozen_backbone()
    with Counter(monkeypatch) as count:
        started = time.perf_counter()
        first = extract_codes(model, data, "avg", 64, hooks, "cpu")
        first_seconds = time.perf_counter() - started
    assert count.decodes == 500 and count.convs > 500 // 64 * 20  # every image decoded, every conv ran
    with Counter(monkeypatch) as again:
        started = time.perf_counter()
        second = extract_codes(model, data, "avg", 64, hooks, "cpu")
        second_seconds = time.perf_counter() - started
    assert again.decodes == 0 and again.convs == 0
    MEMORY.clear()  # as in a new process: the features come from the workspace
    with Counter(monkeypatch) as from_disk:
        started = time.perf_counter()
        third = extract_codes(model, data, "avg", 64, hooks, "cpu")
        disk_seconds = time.perf_counter() - started
    assert from_disk.decodes == 0 and from_disk.convs == 0
    for split, (x, y) in first.splits.items():
        assert x.shape == (len(data.split(split)), 512)
        assert torch.equal(second.splits[split][0], x) and torch.equal(third.splits[split][0], x)
        assert torch.equal(second.splits[split][1], y)
    with capsys.disabled():
        print(f"\nCNN codes of 500 images (resnet18, 64 px, CPU): first run {first_seconds:.2f} s "
              f"({count.decodes} decodes, {count.convs} conv forwards); second run {second_seconds:.3f} s, "
              f"from disk {disk_seconds:.3f} s (0 decodes, 0 conv forwards)")


def test_predict_reuses_the_decoded_images_and_the_frozen_features(five_hundred, hooks, monkeypatch):
    """Predict goes through the same path: a trained model whose backbone is frozen classifies a
    folder a second time from cached features, with the same probabilities."""
    head = {"kind": "dense", "name": "fc", "units": 2, "activation": "none", "dropout": 0.0}
    spec = {**BACKBONE, "layers": [*BACKBONE["layers"], {"kind": "global_pool", "name": "pool", "mode": "avg"}, head]}
    blocks = frozen_backbone().frozen
    from nodes.engine.loop import cpu_state, network

    torch.manual_seed(0)
    state = cpu_state(network(ModelValue(spec=spec), 2))
    model = ModelValue(spec=spec, frozen=blocks, state=state, classes=five_hundred.classes, format=five_hundred.format)
    paths = [p for p, _ in five_hundred.split("test")]
    with Counter(monkeypatch) as count:
        first = predict(model, paths, 32, hooks, "cpu")
    assert count.decodes == len(paths)
    with Counter(monkeypatch) as again:
        second = predict(model, paths, 32, hooks, "cpu")
    assert again.decodes == 0 and again.convs == 0
    assert first.shape == (len(paths), 2) and torch.allclose(first, second)
    assert torch.allclose(first.sum(1), torch.ones(len(paths)))
