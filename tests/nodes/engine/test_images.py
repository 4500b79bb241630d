"""A dataset folder's fingerprint is memoised by its folders' mtimes: a status query does not
stat every image again, and adding, removing or renaming an image still changes it."""

from __future__ import annotations

import os

import nodes.engine.images as images
from tests.imagegen import make_image_set


def test_folder_fingerprint_is_memoised_until_a_folder_changes(tmp_path, monkeypatch):
    root = make_image_set(tmp_path / "data", per_class=6)
    memo = images.TreeFingerprints()
    walks = []
    real = images.tree_fingerprint
    monkeypatch.setattr(images, "tree_fingerprint", lambda path: walks.append(path) or real(path))
    first = memo(root)
    assert memo(root) == first and memo(root) == first
    assert len(walks) == 1  # the later queries only looked at the folders

    extra = root / "train" / "circle" / "extra.jpg"
    extra.write_bytes((root / "train" / "circle").glob("*.jpg").__next__().read_bytes())
    added = memo(root)
    assert added != first and len(walks) == 2

    os.rename(extra, extra.with_name("renamed.jpg"))
    renamed = memo(root)
    assert renamed not in (first, added)

    extra.with_name("renamed.jpg").unlink()
    assert memo(root) == first  # same files as at first: the same fingerprint
    assert memo(tmp_path / "missing") == "missing"
