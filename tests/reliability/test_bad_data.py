"""Broken datasets: each problem gets a clear message naming the param, or the file is skipped
and counted, as the dataset node documents."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image

from nodeflow.node import ParamProblem, RunContext
from nodes.data import ImageFolderDataset
from tests.imagegen import make_image_set


def load(root, workspace, **params):
    ctx = RunContext("data", workspace)
    data = ImageFolderDataset().run(ctx, ImageFolderDataset.Params(root=str(root), **params))["data"]
    return data, ctx


def refused(root, workspace) -> str:
    with pytest.raises(ParamProblem) as caught:
        load(root, workspace)
    assert caught.value.param == "root"
    return str(caught.value)


@pytest.fixture
def splits(tmp_path):
    return make_image_set(tmp_path / "set", ("circle", "square"), per_class=10, size=24)


def test_missing_folder(tmp_path, workspace):
    assert "does not exist" in refused(tmp_path / "nowhere", workspace)


def test_a_class_with_no_training_images_is_named(splits, workspace):
    for image in (splits / "train" / "square").iterdir():
        image.unlink()
    message = refused(splits, workspace)
    assert "square" in message and "no usable images" in message


def test_an_empty_class_folder_in_a_flat_layout_is_named(tmp_path, workspace):
    root = make_image_set(tmp_path / "flat", ("circle", "square"), per_class=10, size=24, layout="folder")
    (root / "empty_class").mkdir()
    message = refused(root, workspace)
    assert "empty_class" in message and "no usable images" in message


def test_a_class_in_test_but_not_in_train(splits, workspace):
    shutil.copytree(splits / "test" / "circle", splits / "test" / "triangle")
    message = refused(splits, workspace)
    assert "['triangle']" in message and "train split lacks" in message


def test_truncated_corrupt_and_non_image_files_are_skipped_and_counted(splits, workspace):
    good = next((splits / "train" / "circle").glob("*.jpg"))
    data = good.read_bytes()
    (splits / "train" / "circle" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (splits / "train" / "circle" / "garbage.jpg").write_bytes(b"not an image at all")
    (splits / "train" / "circle" / "notes.txt").write_text("labels were checked by hand")
    (splits / "train" / "square" / "Thumbs.db").write_bytes(b"\0" * 64)
    before = len(list((splits / "train").rglob("*.jpg"))) - 2
    loaded, ctx = load(splits, workspace)
    assert len(loaded.split("train")) == before
    assert loaded.skipped == 4 and ctx.metrics["skipped_images"] == 4


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "P", "I;16"])
def test_any_colour_mode_becomes_rgb(splits, workspace, mode):
    from nodes.engine.images import load_rgb

    source = next((splits / "train" / "circle").glob("*.jpg"))
    image = Image.open(source).convert("L" if mode == "I;16" else mode)
    if mode == "I;16":
        image = image.convert("I").point(lambda v: v * 256).convert("I;16")
    path = splits / "train" / "circle" / f"odd-{mode.replace(';', '')}.{'jpg' if mode == 'CMYK' else 'png'}"
    image.save(path)
    loaded, _ = load(splits, workspace)
    assert str(path.resolve()) in {p for p, _ in loaded.split("train")}
    rgb = load_rgb(str(path))
    assert rgb.mode == "RGB" and rgb.size == image.size
