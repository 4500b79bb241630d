"""Per-image predictions (nodeflow.predictions): a few bytes per image beside the node's cached
result, the file list stored once per workspace, still there for a cached node in a new process,
and a damaged file left out rather than failing the comparison."""

from __future__ import annotations

import numpy as np
import pytest

from nodeflow.executor import Executor
from nodeflow.node import Node, NodeParams, Port, Registry
from nodeflow.predictions import FILE_LISTS, FOLDER, PredictionStore, files_digest, load, save
from tests.nodepack import NUMBER, Constant

from .conftest import make_graph

IMAGES = 1000


def arrays(seed: int = 0):
    rng = np.random.default_rng(seed)
    files = [f"/data/set/validation/{'cat' if i % 2 else 'dog'}/{i:05d}.jpg" for i in range(IMAGES)]
    true = np.arange(IMAGES) % 2
    predicted = np.where(rng.random(IMAGES) < 0.9, true, 1 - true)
    return files, true, predicted, rng.random(IMAGES).astype(np.float32)


def test_a_split_costs_a_few_bytes_per_image_and_its_file_list_is_stored_once(tmp_path):
    files, true, predicted, confidence = arrays()
    for run in range(100):  # a hundred runs of one data set
        save(tmp_path / f"entry{run}", tmp_path, "validation", files, true, predicted, confidence, ("cat", "dog"))
    per_run = (tmp_path / "entry0" / FOLDER / "validation.npz").stat().st_size
    assert per_run < 4 * IMAGES + 2000, per_run  # 1 + 1 + 2 bytes an image, and the archive's headers
    lists = list((tmp_path / FILE_LISTS).iterdir())
    assert len(lists) == 1  # shared, not copied per run
    kept = load(tmp_path / "entry7", tmp_path)["validation"]
    assert kept.files == tuple(files) and kept.classes == ("cat", "dog")
    assert np.array_equal(kept.true, true) and np.array_equal(kept.predicted, predicted)
    assert np.allclose(kept.confidence, confidence, atol=1e-3)  # float16
    assert kept.correct.mean() == pytest.approx((true == predicted).mean())


def test_damaged_or_missing_files_are_left_out(tmp_path):
    files, true, predicted, confidence = arrays()
    save(tmp_path / "entry", tmp_path, "validation", files, true, predicted, confidence, ("cat", "dog"))
    save(tmp_path / "entry", tmp_path, "test", files[:10], true[:10], predicted[:10], confidence[:10], ("cat", "dog"))
    (tmp_path / "entry" / FOLDER / "test.npz").write_bytes(b"not an archive")
    assert list(load(tmp_path / "entry", tmp_path)) == ["validation"]
    save(tmp_path / "other", tmp_path, "validation", files[:5], true[:5], predicted[:5], confidence[:5], ("cat", "dog"))
    (tmp_path / FILE_LISTS / f"{files_digest(files[:5])}.json.gz").unlink()  # its file list is gone
    assert load(tmp_path / "other", tmp_path) == {} and load(None, tmp_path) == {}


def test_bad_input_is_refused_naming_it(tmp_path):
    files, true, predicted, confidence = arrays()
    with pytest.raises(ValueError, match="validation: 1000 files but 999 true classes"):
        save(tmp_path, tmp_path, "validation", files, true[:-1], predicted, confidence, ("cat", "dog"))
    with pytest.raises(ValueError, match="is not a split name"):
        save(tmp_path, tmp_path, "../escape", files, true, predicted, confidence, ("cat", "dog"))
    assert not (tmp_path / FOLDER).exists()


class Scorer(Node):
    """Keeps made-up predictions for its input's split, as a trainer or evaluation does."""

    type = "test.scorer"
    inputs = (Port("value", NUMBER),)
    outputs = (Port("value", NUMBER),)

    class Params(NodeParams):
        flip: int = 0

    def run(self, ctx, params, value):
        files, true, predicted, confidence = arrays()
        predicted = predicted.copy()
        predicted[: params.flip] = 1 - predicted[: params.flip]
        ctx.keep_predictions("validation", files, true, predicted, confidence, ("cat", "dog"))
        return {"value": value}


def test_a_cached_node_still_has_its_predictions_in_a_new_process(tmp_path):
    registry = Registry([Constant, Scorer])
    graph = make_graph({"c": ("test.constant", {"value": 1.0}), "s": ("test.scorer", {"flip": 3})}, ["c.value->s.value"])
    first = Executor(registry, tmp_path)
    assert first.run(graph).nodes["s"].status == "ran"
    key = first.keys(graph)["s"]
    again = Executor(registry, tmp_path)  # as a new process: nothing in memory
    assert again.run(graph).nodes["s"].status == "cached"
    kept = PredictionStore(again.cache, tmp_path).of(key)["validation"]
    assert len(kept) == IMAGES and (kept.predicted[:3] != arrays()[2][:3]).all()
    assert PredictionStore(again.cache, tmp_path).of(None) == {}
