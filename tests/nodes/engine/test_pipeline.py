"""The one data path: images decoded once give the same batches, in the same order, as decoding
the files every epoch; random crops and flips still apply per image and per draw."""

from __future__ import annotations

import torch

from nodes.engine.images import build_image_set, loader
from nodes.engine.pipeline import image_batches
from nodes.engine.store import MEMORY

FMT = {"height": 32, "width": 32, "channels": 3, "resize": "shorter_side", "crop": "center", "normalize": "imagenet"}


def test_decoded_batches_equal_the_per_file_path(shapes, tmp_path):
    MEMORY.clear()  # another test on this worker may have decoded the same files: this one must build the entry
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


def test_decoded_batches_resize_the_shorter_side_to_resize_to_before_the_crop(shapes, tmp_path):
    """Resize 40, centre crop 32 (the ImageNet evaluation recipe, scaled down) gives what the
    per-file transform gives, not a resize straight to the crop size."""
    data = build_image_set(shapes, 0.2, 0.1, 0, 0, False).with_(format={**FMT, "resize_to": 40})
    reference = loader(data, "test", 16, False)
    decoded = image_batches(data, "test", 16, False, torch.device("cpu"), tmp_path)
    for (a, y), (b, z) in zip(reference, decoded, strict=True):
        assert torch.equal(y, z) and torch.equal(a, b)
    plain = image_batches(data.with_(format=FMT), "test", 16, False, torch.device("cpu"), tmp_path)
    assert not torch.equal(next(iter(plain))[0], next(iter(decoded))[0])


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
