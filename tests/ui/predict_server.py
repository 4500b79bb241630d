"""An editor server (the real catalogue) on a small classifier graph whose trainer ('train') has run:
what the Try it tests start from."""

from __future__ import annotations

import time

from nodeflow.graph import Graph
from tests.imagegen import make_image_set
from tests.nodes.graphs import classifier_graph
from tests.ui.conftest import Server

CLASSES = ("circle", "stripes")
#: where each node sits on the canvas, so that none hides another
LAYOUT = {"data": (0, 0), "fmt": (260, 0), "input": (0, 170), "backbone": (260, 170), "pool": (520, 170),
          "out": (780, 170), "train": (520, 340), "eval": (780, 340)}


def start(base) -> Server:
    """An editor on a classifier graph whose trainer ('train') has run."""
    root = make_image_set(base / "images", CLASSES, per_class=8, size=32, fmt="png", seed=2)
    graph_file = base / "graph.json"
    data = classifier_graph(root, size=32, epochs=1, lr=3e-3).model_dump(mode="json")
    for node in data["nodes"]:
        x, y = LAYOUT[node["id"]]
        node["position"] = {"x": x, "y": y}
    Graph.from_data(data).save(graph_file)
    server = Server(base / "workspace", "--builtin", "--graph", str(graph_file))
    try:
        assert server.api("POST", "/api/run", json={"target": "train"}).status_code == 200
        deadline = time.time() + 600
        while time.time() < deadline:
            status = server.api("GET", "/api/status").json()
            if not status["running"] and status["nodes"]["train"]["state"] in ("done", "cached"):
                return server
            assert status["nodes"]["train"]["state"] != "failed", status["nodes"]["train"]
            time.sleep(0.5)
        raise TimeoutError("the trainer did not finish")
    except BaseException:
        server.stop()
        raise
