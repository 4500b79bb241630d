"""An editor server (the real catalogue) whose open graph trains a small classifier, analyses its
errors and checks its data with the doctor, run once: what the confusion-gallery tests and the
README screenshot start from."""

from __future__ import annotations

import time
from pathlib import Path

from nodeflow.graph import Graph
from tests.imagegen import make_image_set
from tests.nodes.graphs import error_analysis_graph
from tests.ui.conftest import Server

SIZE = 32
#: where each node sits on the canvas, so that none hides another
LAYOUT = {"data": (0, 0), "fmt": (260, 0), "input": (0, 170), "backbone": (260, 170), "pool": (520, 170),
          "out": (780, 170), "train": (520, 340), "eval": (780, 340), "errors": (780, 500),
          "doctor": (520, 0)}


def start(base: Path, epochs: int = 1, per_class: int = 30, seed: int = 3, root: Path | None = None,
          size: int = SIZE, lr: float = 3e-3) -> Server:
    """Images (circles and stripes, or the set at ``root``), the graph file and a server with the
    graph run through 'errors', 'eval' and 'doctor'."""
    if root is None:
        root = make_image_set(base / "images", ("circle", "stripes"), per_class=per_class, size=size, fmt="png",
                              seed=seed)
    data = error_analysis_graph(root, size=size, epochs=epochs, lr=lr).model_dump(mode="json")
    data["name"] = "error analysis"
    data["nodes"].append({"id": "doctor", "type": "data.doctor", "params": {"min_side": 16}})
    data["edges"].append({"source": "fmt", "source_port": "data", "target": "doctor", "target_port": "data"})
    for node in data["nodes"]:
        x, y = LAYOUT[node["id"]]
        node["position"] = {"x": x, "y": y}
    graph_file = base / "graph.json"
    Graph.from_data(data).save(graph_file)
    server = Server(base / "workspace", "--builtin", "--graph", str(graph_file))
    try:
        for target in ("errors", "eval", "doctor"):
            assert server.api("POST", "/api/run", json={"target": target}).status_code == 200
        deadline = time.time() + 600
        while time.time() < deadline:
            status = server.api("GET", "/api/status").json()
            states = {n: status["nodes"][n]["state"] for n in ("errors", "eval", "doctor")}
            if not status["running"] and all(s in ("done", "cached") for s in states.values()):
                return server
            assert "failed" not in states.values(), status["nodes"]
            time.sleep(0.5)
        raise TimeoutError(f"the error analysis did not finish: {status['nodes']}")
    except BaseException:
        server.stop()
        raise
