"""Finding images in the layouts people have, surviving bad files, and shaping tensors."""

from __future__ import annotations

import os
import time

import pytest
import torch

from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodeflow.node import ParamProblem, RunContext
from nodes.engine.images import make_transform
from nodes.ports import IMAGES
from nodes.data import Augmentation, CatsVsDogsDataset, ImageFolderDataset, ImageFormatter
from tests.imagegen import make_image_set


def test_split_folders_are_used_as_they_are(shapes, workspace):
    data = ImageFolderDataset().run(RunContext("d", workspace), ImageFolderDataset.Params(root=str(shapes)))["data"]
    assert data.classes == ("cat", "dog")
    assert data.counts() == {"train": 60, "validation": 20, "test": 20}


def test_pet_images_layout_skips_corrupt_files_with_a_count_and_converts_modes(tmp_path, workspace):
    root = make_image_set(tmp_path / "PetImages", ("circle", "square"), per_class=20, layout="folder",
                          corrupt=3, grayscale=2, rgba=2, class_names=("Cat", "Dog")).parent
    ctx = RunContext("d", workspace)
    params = CatsVsDogsDataset.Params(root=str(root), validation_fraction=0.25, test_fraction=0.25)
    data = CatsVsDogsDataset().run(ctx, params)["data"]
    assert data.skipped == 6 and ctx.metrics["skipped_images"] == 6
    assert data.classes == ("Cat", "Dog")
    counts = {split: [sum(1 for _, y in items if y == c) for c in (0, 1)] for split, items in data.splits.items()}
    assert counts == {"train": [10, 10], "validation": [5, 5], "test": [5, 5]}
    transform = make_transform({"height": 24, "width": 24, "channels": 3, "resize": "shorter_side",
                                "crop": "center", "normalize": "imagenet"})
    from nodes.engine.images import load_rgb

    odd = [p for items in data.splits.values() for p, _ in items if p.endswith(".png") or "0000" in p or "0001" in p]
    assert odd and all(transform(load_rgb(p)).shape == (3, 24, 24) for p in odd)


def test_dataset_value_round_trips_through_its_codec(shapes, workspace, tmp_path):
    data = ImageFolderDataset().run(RunContext("d", workspace), ImageFolderDataset.Params(root=str(shapes)))["data"]
    data = data.with_(format=ImageFormatter.Params().model_dump(mode="json"),
                      augment=tuple(Augmentation.ops(Augmentation.Params(rotation=10))))
    IMAGES.codec.save(data, tmp_path)
    assert IMAGES.codec.load(tmp_path) == data


@pytest.mark.parametrize("size,channels", [((40, 24), 3), ((32, 32), 1)])
def test_formatter_makes_the_requested_shape_from_any_image_size(tmp_path, size, channels):
    root = make_image_set(tmp_path, per_class=4, size=30, vary_size=True)
    params = ImageFormatter.Params(height=size[0], width=size[1], channels=channels)
    transform = make_transform(params.model_dump(mode="json"))
    from nodes.engine.images import load_rgb

    for path in (root / "train").rglob("*.jpg"):
        assert transform(load_rgb(str(path))).shape == (channels, *size)


def test_augmentation_changes_training_images_only(shapes):
    fmt = ImageFormatter.Params(height=32, width=32).model_dump(mode="json")
    ops = Augmentation.ops(Augmentation.Params(hflip=0.5, random_resized_crop=True, rotation=20, color_jitter=0.4,
                                               blur=0.5, policy="trivialaugment", random_erasing=0.5))
    from nodes.engine.images import load_rgb

    image = load_rgb(str(next((shapes / "train").rglob("*.jpg"))))
    torch.manual_seed(0)
    train = make_transform(fmt, ops, train=True)
    assert not torch.equal(train(image), train(image))
    evaluation = make_transform(fmt, ops, train=False)
    assert torch.equal(evaluation(image), evaluation(image))


def test_adding_an_image_makes_the_dataset_stale(registry, tmp_path):
    root = make_image_set(tmp_path / "data", per_class=5)
    graph = Graph.from_data({"format": "nodeflow.graph", "version": 1,
                             "nodes": [{"id": "d", "type": "data.image_folder", "params": {"root": str(root)}}]})
    executor = Executor(registry, tmp_path / "ws")
    assert executor.run(graph).nodes["d"].status == "ran"
    assert executor.run(graph).nodes["d"].status == "cached"
    time.sleep(0.01)
    extra = root / "train" / "circle" / "extra.jpg"
    extra.write_bytes((root / "train" / "circle" / "circle.0000.jpg").read_bytes())
    os.utime(extra)
    assert executor.run(graph).nodes["d"].status == "ran"


def test_a_folder_without_classes_is_blamed_on_root(tmp_path, workspace):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ParamProblem) as caught:
        ImageFolderDataset().run(RunContext("d", workspace), ImageFolderDataset.Params(root=str(tmp_path / "empty")))
    assert caught.value.param == "root" and "class sub-folders" in str(caught.value)


def test_cats_vs_dogs_offline_without_root_says_to_set_root(workspace, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torchvision.datasets, "OxfordIIITPet", offline)
    with pytest.raises(ParamProblem) as caught:
        CatsVsDogsDataset().run(RunContext("dataset", workspace), CatsVsDogsDataset.Params())
    assert caught.value.param == "root" and "PetImages" in str(caught.value)


def test_an_image_linking_outside_the_allowed_folders_is_refused_in_an_editor_run(tmp_path, workspace):
    """The dataset folder is allowed, but one of its files is a link to an image elsewhere: an
    editor run names 'root' and where the link leads; the command line (no allowed roots) reads it."""
    root = make_image_set(tmp_path / "data", classes=("circle", "square"), per_class=4, size=32, layout="folder")
    elsewhere = make_image_set(tmp_path / "private", classes=("cross", "checker"), per_class=1, size=32, layout="folder")
    target = next((elsewhere / "cross").iterdir())
    (root / "circle" / "linked.png").symlink_to(target)
    params = ImageFolderDataset.Params(root=str(root), validation_fraction=0.25)
    editor = RunContext("d", workspace, allowed_roots=[workspace, root])
    with pytest.raises(ParamProblem) as caught:
        ImageFolderDataset().run(editor, params)
    assert caught.value.param == "root" and "1 file(s) here are links to outside" in str(caught.value)
    assert f"'{target}'" in str(caught.value)
    data = ImageFolderDataset().run(RunContext("d", workspace), params)["data"]
    assert sum(data.counts().values()) == 9
    inside = RunContext("d", workspace, allowed_roots=[workspace, root, elsewhere])
    assert sum(ImageFolderDataset().run(inside, params)["data"].counts().values()) == 9
