"""Engine tests use the engine alone: plain configs, hooks and values, no node, no executor."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodes.engine.hooks import Hooks
from nodes.engine.images import build_image_set
from nodes.engine.store import MEMORY
from tests.imagegen import make_image_set

FORMAT = {"height": 32, "width": 32, "channels": 3, "resize": "shorter_side", "resize_to": 0, "crop": "center",
          "normalize": "imagenet"}


def image_set(root: Path, per_class: int, size: int = 36, fmt: dict | None = None):
    make_image_set(root, ("circle", "stripes"), per_class=per_class, size=size, vary_size=True)
    data = build_image_set(root, 0.2, 0.1, 0, 0, verify=False)
    return data.with_(format=fmt or FORMAT)


@pytest.fixture
def hooks(tmp_path) -> Hooks:
    MEMORY.clear()
    return Hooks(workspace=tmp_path / "workspace", checkpoints=tmp_path / "checkpoints")
