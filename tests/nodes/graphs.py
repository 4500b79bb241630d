"""Small graphs of catalogue nodes, built in code for the tests."""

from __future__ import annotations

from pathlib import Path

from nodeflow.graph import Graph


def classifier_graph(root: Path, arch: str = "resnet18", weights: str = "none", feature_extractor: bool = False,
                     size: int = 32, epochs: int = 3, lr: float = 1e-3, export_to: Path | None = None,
                     formats: tuple[str, ...] = ("safetensors",), trainer: dict | None = None) -> Graph:
    """input → backbone → global pool → dense(auto) → trainer → evaluate (test split), fed by an
    image folder and a formatter; optionally an export node after the trainer."""
    nodes = [
        {"id": "input", "type": "model.input", "params": {"height": size, "width": size}},
        {"id": "backbone", "type": "model.backbone",
         "params": {"arch": arch, "weights": weights, "feature_extractor": feature_extractor}},
        {"id": "pool", "type": "model.global_pool", "params": {}},
        {"id": "out", "type": "model.dense", "params": {"units": "auto", "activation": "none"}},
        {"id": "data", "type": "data.image_folder", "params": {"root": str(root)}},
        {"id": "fmt", "type": "data.format", "params": {"height": size, "width": size}},
        {"id": "train", "type": "train.trainer",
         "params": {"optimizer": "adam", "lr": lr, "epochs": epochs, "batch_size": 16, **(trainer or {})}},
        {"id": "eval", "type": "eval.evaluate", "params": {"split": "test"}},
    ]
    chain = [("input", "backbone"), ("backbone", "pool"), ("pool", "out"), ("out", "train"), ("train", "eval")]
    edges = [{"source": a, "source_port": "model", "target": b, "target_port": "model"} for a, b in chain]
    edges += [{"source": "data", "source_port": "data", "target": "fmt", "target_port": "data"},
              {"source": "fmt", "source_port": "data", "target": "train", "target_port": "data"},
              {"source": "fmt", "source_port": "data", "target": "eval", "target_port": "data"}]
    if export_to is not None:
        nodes.append({"id": "export", "type": "eval.export",
                      "params": {"folder": str(export_to), "formats": list(formats)}})
        edges.append({"source": "train", "source_port": "model", "target": "export", "target_port": "model"})
    return Graph.from_data({"format": "nodeflow.graph", "version": 1, "nodes": nodes, "edges": edges})


def error_analysis_graph(root: Path, size: int = 32, epochs: int = 1, lr: float = 3e-3, top_n: int = 10,
                         overlays: int = 0) -> Graph:
    """The classifier graph with an error analysis (node 'errors') of the test split beside 'eval'."""
    data = classifier_graph(root, size=size, epochs=epochs, lr=lr).model_dump(mode="json")
    data["nodes"].append({"id": "errors", "type": "eval.errors", "position": {"x": 0, "y": 0},
                          "params": {"split": "test", "top_n": top_n, "overlays": overlays}})
    data["edges"] += [{"source": "train", "source_port": "model", "target": "errors", "target_port": "model"},
                      {"source": "fmt", "source_port": "data", "target": "errors", "target_port": "data"}]
    return Graph.from_data(data)
