"""Finding images in the layouts people have, surviving bad files, and shaping tensors."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import time
from pathlib import Path

import pytest
import torch

from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodeflow.node import ParamProblem, RunContext
from nodes.engine.images import make_transform
from nodes.ports import IMAGES
from nodes.data import Augmentation, CatsVsDogsDataset, ImageFolderDataset, ImageFormatter
from nodes.engine.download import MIRROR_ENV
from nodes.engine.pets import PETS
from tests.imagegen import make_image_set, make_pets_layout
from tests.mirror import unreachable_url


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
    monkeypatch.setenv(MIRROR_ENV, unreachable_url())  # as offline: the connection is refused
    with pytest.raises(ParamProblem) as caught:
        CatsVsDogsDataset().run(RunContext("dataset", workspace), CatsVsDogsDataset.Params())
    assert caught.value.param == "root" and "PetImages" in str(caught.value)
    assert "could not download the cats-vs-dogs images: could not reach" in str(caught.value)
    assert MIRROR_ENV in str(caught.value) and "images.tar.gz and annotations.tar.gz" in str(caught.value)
    assert not list((workspace / "datasets").iterdir())


def sorted_pets(data) -> dict[str, dict[str, list[str]]]:
    """Per split and class, the image names the data set holds."""
    found: dict[str, dict[str, list[str]]] = {}
    for split, items in data.splits.items():
        for file, label in items:
            found.setdefault(split, {}).setdefault(data.classes[label], []).append(Path(file).stem)
    return {split: {c: sorted(names) for c, names in by_class.items()} for split, by_class in found.items()}


#: what the generated copy (tests.imagegen.make_pets_layout, 6 images per breed, the last 2 for test) sorts into
PETS_SORTED = {
    "train": {"cat": sorted(f"{b}_{n}" for b in ("Abyssinian", "Bengal") for n in range(1, 5)),
              "dog": sorted(f"{b}_{n}" for b in ("beagle", "pug") for n in range(1, 5))},
    "test": {"cat": sorted(f"{b}_{n}" for b in ("Abyssinian", "Bengal") for n in (5, 6)),
             "dog": sorted(f"{b}_{n}" for b in ("beagle", "pug") for n in (5, 6))},
}


def test_cats_vs_dogs_sorts_a_copy_of_oxford_pets_placed_where_torchvision_looks(workspace):
    from torchvision.datasets import OxfordIIITPet

    datasets = workspace / "datasets"
    make_pets_layout(datasets / PETS)
    assert len(OxfordIIITPet(str(datasets), split="test", download=False)) == 8  # torchvision takes it as downloaded
    data = CatsVsDogsDataset().run(RunContext("dataset", workspace), CatsVsDogsDataset.Params())["data"]
    assert data.classes == ("cat", "dog") and sorted_pets(data) == PETS_SORTED
    assert sorted(p.name for p in datasets.iterdir()) == ["cats_vs_dogs", PETS]


def published_archives(folder: Path) -> dict[str, bytes]:
    """images.tar.gz and annotations.tar.gz as Oxford-IIIT Pet publishes them (one top folder each)."""
    archives = {}
    for part in ("images", "annotations"):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            tar.add(folder / part, arcname=part)
        archives[f"{part}.tar.gz"] = buffer.getvalue()
    return archives


def test_cats_vs_dogs_downloads_from_the_mirror_and_checks_each_archive(workspace, tmp_path, mirror, monkeypatch):
    """torchvision's URLs with the mirror as host; the MD5s are the generated archives' (the published
    ones belong to the 800 MB originals), the rest of torchvision's table as it is."""
    from torchvision.datasets import OxfordIIITPet

    mirror.files.update(published_archives(make_pets_layout(tmp_path / "published")))
    monkeypatch.setattr(OxfordIIITPet, "_RESOURCES", tuple(
        (url, hashlib.md5(mirror.files[url.rsplit("/", 1)[-1]]).hexdigest()) for url, _ in OxfordIIITPet._RESOURCES))
    monkeypatch.setenv(MIRROR_ENV, mirror.url)
    data = CatsVsDogsDataset().run(RunContext("dataset", workspace), CatsVsDogsDataset.Params())["data"]
    assert sorted_pets(data) == PETS_SORTED
    assert mirror.requests == ["/models/images.tar.gz", "/models/annotations.tar.gz"]
    assert sorted(p.name for p in (workspace / "datasets").iterdir()) == ["cats_vs_dogs", PETS]
    assert sorted(p.name for p in (workspace / "datasets" / PETS).iterdir()) == ["annotations", "images"]


def test_cats_vs_dogs_refuses_archives_that_are_not_the_published_ones(workspace, tmp_path, mirror, monkeypatch):
    mirror.files.update(published_archives(make_pets_layout(tmp_path / "published")))
    monkeypatch.setenv(MIRROR_ENV, mirror.url)
    with pytest.raises(ParamProblem) as caught:
        CatsVsDogsDataset().run(RunContext("dataset", workspace), CatsVsDogsDataset.Params())
    assert caught.value.param == "root" and "is not the published images.tar.gz" in str(caught.value)
    assert "MD5" in str(caught.value) and "not kept" in str(caught.value)
    assert not list((workspace / "datasets").iterdir())


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
