"""An image rewritten in place (same name, so no folder's mtime changes) while the editor runs: the
next run's plan sees it, and the dataset and everything after it run again instead of coming from
the cache, even when the rewrite kept the file's size and put its mtime back. Status polling may still
answer from the fingerprint memo."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
from PIL import Image

from nodeflow.graph import Graph
from nodeflow.session import Session
from nodes.engine.images import tree_fingerprint
from nodes.engine.pipeline import files_digest
from nodes.model import Backbone
from tests.imagegen import make_image_set


def rewrite_keeping_size_and_mtime(path: Path, scratch: Path, data: bytes | None = None) -> None:
    """Other content in ``path`` (by default a plain red picture of the same format), padded to the old size,
    with the old mtime put back as ``os.utime`` lets anyone do (``touch -r``, an archive or sync that
    keeps times): only the inode's change time, which no user can set, tells the rewrite."""
    before = path.stat()
    if data is None:
        buffer = io.BytesIO()
        Image.new("RGB", Image.open(path).size, (250, 10, 10)).save(buffer, Image.open(path).format)
        data = buffer.getvalue()
    assert len(data) <= before.st_size and data != path.read_bytes()[:len(data)]
    clock_passes(before.st_ctime_ns, scratch)
    path.write_bytes(data + b"\0" * (before.st_size - len(data)))  # a JPEG's reader stops at its end marker
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert after.st_ctime_ns != before.st_ctime_ns


def clock_passes(stamp_ns: int, scratch: Path) -> None:
    """Wait until the file system's clock, which ticks in steps of a few milliseconds, has moved past
    ``stamp_ns``, so a rewrite now gets another change time (as any rewrite later than a tick does)."""
    probe = scratch / "clock-probe"
    deadline = time.monotonic() + 10
    while True:
        probe.touch()
        if probe.stat().st_mtime_ns > stamp_ns:
            return
        assert time.monotonic() < deadline, "the file system's clock did not move"


def dataset_session(registry, tmp_path: Path, name: str) -> tuple[Path, Graph, Session]:
    """A generated image folder, the graph that reads and formats it, and an editor session on it."""
    root = make_image_set(tmp_path / "data", per_class=5, size=24)
    graph = Graph.from_data({"format": "nodeflow.graph", "version": 1, "name": name, "nodes": [
        {"id": "dataset", "type": "data.image_folder", "params": {"root": str(root)}},
        {"id": "formatter", "type": "data.format", "params": {"height": 24, "width": 24}}],
        "edges": [{"source": "dataset", "source_port": "data", "target": "formatter", "target_port": "data"}]})
    return root, graph, Session(registry, tmp_path / "workspace", graph=graph, device="cpu")


def test_an_image_rewritten_in_place_makes_the_dataset_and_what_follows_run_again(registry, tmp_path):
    root, graph, session = dataset_session(registry, tmp_path, "in place")
    try:
        session.queue.submit()
        session.queue.wait(120)
        assert session.snapshot()["nodes"]["formatter"]["state"] == "done"
        assert session.executor.plan(graph) == {"dataset": "cached", "formatter": "cached"}

        image = next((root / "train" / "circle").glob("*.jpg"))
        folders = {str(p): p.stat().st_mtime_ns for p in [root, *root.rglob("*")] if p.is_dir()}
        Image.new("RGB", (24, 24), (250, 10, 10)).save(image)  # the same name, other pixels
        os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 5_000_000_000))
        assert folders == {str(p): p.stat().st_mtime_ns for p in [root, *root.rglob("*")] if p.is_dir()}

        run = session.queue.submit()
        assert run["plan"] == {"dataset": "run", "formatter": "run"}
        session.queue.wait(120)
        nodes = session.runs.get(run["id"])["nodes"]
        assert nodes["dataset"]["status"] == "ran" and nodes["formatter"]["status"] == "ran"
    finally:
        session.close()


def test_an_image_rewritten_with_its_old_size_and_mtime_put_back_is_read_again(registry, tmp_path):
    root, graph, session = dataset_session(registry, tmp_path, "restored mtime")
    try:
        session.queue.submit()
        session.queue.wait(120)
        assert session.executor.plan(graph) == {"dataset": "cached", "formatter": "cached"}

        image = next((root / "train" / "circle").glob("*.jpg"))
        rewrite_keeping_size_and_mtime(image, tmp_path)
        run = session.queue.submit()
        assert run["plan"] == {"dataset": "run", "formatter": "run"}
        session.queue.wait(120)
        nodes = session.runs.get(run["id"])["nodes"]
        assert nodes["dataset"]["status"] == "ran" and nodes["formatter"]["status"] == "ran"
        assert session.executor.plan(graph) == {"dataset": "cached", "formatter": "cached"}  # and kept again
    finally:
        session.close()


@pytest.mark.parametrize("fingerprint", [
    pytest.param(lambda path: tree_fingerprint(path.parent), id="dataset folder"),
    pytest.param(lambda path: files_digest([(str(path), 0)]), id="decoded and feature caches"),
    pytest.param(lambda path: Backbone.fingerprint(Backbone.Params(weights=str(path))), id="weights file"),
])
def test_every_file_fingerprint_tells_a_rewrite_whose_size_and_mtime_were_put_back(tmp_path, fingerprint):
    path = tmp_path / "folder" / "file.pt"
    path.parent.mkdir()
    path.write_bytes(b"first content, long enough")
    before = fingerprint(path)
    assert fingerprint(path) == before  # stable while nothing changes
    rewrite_keeping_size_and_mtime(path, tmp_path, b"other content")
    assert fingerprint(path) != before
