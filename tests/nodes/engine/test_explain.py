"""Error analysis on its own: a ResNet-18 trained from scratch on pictures where one class carries
a square in a fixed place; Grad-CAM from its last convolutional block peaks inside that square,
the misclassified list is sorted by loss, and the confusion-cell groups cover every image."""

from __future__ import annotations

import pytest
import torch

from nodes.engine.explain import confusion_cells, error_rows, grad_cam, overlay_png, peak, score_images
from nodes.engine.fit import FitConfig, fit
from nodes.engine.images import build_image_set
from nodes.engine.values import ModelValue
from tests.imagegen import make_patch_set

SIZE = 96
PATCH = (24, 24, 56, 56)  # left, top, right, bottom: over the centre cell of layer4's 3×3 map
SPEC = {"input_shape": [3, SIZE, SIZE], "layers": [
    {"kind": "backbone", "name": "backbone", "arch": "resnet18", "weights": "none"},
    {"kind": "global_pool", "name": "pool", "mode": "avg"},
    {"kind": "dense", "name": "out", "units": "auto", "activation": "none", "dropout": 0.0}]}
FORMAT = {"height": SIZE, "width": SIZE, "channels": 3, "resize": "shorter_side", "resize_to": 0, "crop": "center",
          "normalize": "imagenet"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from nodes.engine.hooks import Hooks

    root = make_patch_set(tmp_path_factory.mktemp("patch"), per_class=60, size=SIZE, patch=PATCH)
    data = build_image_set(root, 0.2, 0.2, 0, 0, verify=False).with_(format=FORMAT)
    hooks = Hooks(workspace=tmp_path_factory.mktemp("ws"))
    torch.manual_seed(0)
    result = fit(ModelValue(spec=SPEC), data, FitConfig(epochs=6, batch_size=16, optimizer="adam", lr=1e-3,
                                                        device="cpu", mixed_precision=False), hooks)
    return result, data, hooks


@pytest.mark.slow
def test_grad_cam_peaks_inside_the_marking_patch(trained):
    result, data, hooks = trained
    model = result.model
    assert result.history[-1]["val_accuracy"] >= 0.85, result.history
    scored = score_images(model, data, "test", 32, hooks, "cpu")
    marked = model.classes.index("marked")
    right = [i for i in range(len(scored.files)) if scored.labels[i] == marked and scored.predicted[i] == marked]
    assert len(right) >= 8
    maps = grad_cam(model, [scored.files[i] for i in right], [marked] * len(right), 16, hooks, device_name="cpu")
    assert maps.block == "layer4" and maps.maps.shape == (len(right), SIZE, SIZE)
    left, top, r, bottom = PATCH
    inside = [top <= y <= bottom and left <= x <= r for y, x in map(peak, maps.maps)]
    share = sum(inside) / len(inside)
    print(f"Grad-CAM peak inside the patch for {sum(inside)}/{len(inside)} = {share:.2f} correctly classified "
          f"'marked' test images (chance: {(r - left + 1) * (bottom - top + 1) / SIZE ** 2:.2f})")
    assert share >= 0.7
    png = overlay_png(maps.images[0], maps.maps[0], scale=2)
    assert png.startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="no block 'nope'.*layer4"):
        grad_cam(model, [scored.files[right[0]]], [marked], 1, hooks, block="nope", device_name="cpu")


def test_errors_are_sorted_by_loss_and_cells_cover_the_split(trained):
    result, data, hooks = trained
    model = result.model
    scored = score_images(model, data, "train", 32, hooks, "cpu")
    assert len(scored.files) == len(data.split("train")) and scored.probs.shape == (len(scored.files), 2)
    assert torch.allclose(scored.probs.sum(1), torch.ones(len(scored.files)))
    # a deliberately wrong labelling makes errors certain: swap the labels
    swapped = type(scored)(scored.files, 1 - scored.labels, scored.probs,
                           torch.nn.functional.cross_entropy(scored.probs.log(), 1 - scored.labels, reduction="none"))
    rows = error_rows(swapped, model.classes, 5)
    assert len(rows) == 5
    assert [r["loss"] for r in rows] == sorted((r["loss"] for r in rows), reverse=True)
    assert all(r["true"] != r["predicted"] for r in rows)
    cells = confusion_cells(scored, model.classes)
    assert sum(c["count"] for c in cells) == len(scored.files)
    assert sorted(f for c in cells for f in c["files"]) == sorted(scored.files)
