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
