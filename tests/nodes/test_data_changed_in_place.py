"""An image rewritten in place (same name, so no folder's mtime changes) while the editor runs: the
next run's plan sees it, and the dataset and everything after it run again instead of coming from
the cache. Status polling may still answer from the fingerprint memo."""

from __future__ import annotations

import os

from PIL import Image

from nodeflow.graph import Graph
from nodeflow.session import Session
from tests.imagegen import make_image_set


def test_an_image_rewritten_in_place_makes_the_dataset_and_what_follows_run_again(registry, tmp_path):
    root = make_image_set(tmp_path / "data", per_class=5, size=24)
    graph = Graph.from_data({"format": "nodeflow.graph", "version": 1, "name": "in place", "nodes": [
        {"id": "dataset", "type": "data.image_folder", "params": {"root": str(root)}},
        {"id": "formatter", "type": "data.format", "params": {"height": 24, "width": 24}}],
        "edges": [{"source": "dataset", "source_port": "data", "target": "formatter", "target_port": "data"}]})
    session = Session(registry, tmp_path / "workspace", graph=graph, device="cpu")
    try:
        session.submit()
        session.wait(120)
        assert session.snapshot()["nodes"]["formatter"]["state"] == "done"
        assert session.executor.plan(graph) == {"dataset": "cached", "formatter": "cached"}

        image = next((root / "train" / "circle").glob("*.jpg"))
        folders = {str(p): p.stat().st_mtime_ns for p in [root, *root.rglob("*")] if p.is_dir()}
        Image.new("RGB", (24, 24), (250, 10, 10)).save(image)  # the same name, other pixels
        os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 5_000_000_000))
        assert folders == {str(p): p.stat().st_mtime_ns for p in [root, *root.rglob("*")] if p.is_dir()}

        run = session.submit()
        assert run["plan"] == {"dataset": "run", "formatter": "run"}
        session.wait(120)
        nodes = session.runs.get(run["id"])["nodes"]
        assert nodes["dataset"]["status"] == "ran" and nodes["formatter"]["status"] == "ran"
    finally:
        session.close()
