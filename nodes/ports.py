"""The catalogue's port types and their codecs, public for plugins that build on the built-in nodes.

A plugin node that takes or gives a model or a dataset imports its types from here, so its ports
connect to the built-in ones in the editor::

    from nodes.ports import MODEL, ModelValue

Codecs persist values without pickles: JSON, and safetensors for tensors, so a cached value can
be read back safely by a new process.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nodeflow.files import atomic_write_bytes, atomic_write_text
from nodeflow.node import PortType
from nodes.engine.values import Codes, FileList, ImageSet, Metrics, ModelValue, load_model, save_model

__all__ = ["CODES", "FILES", "IMAGES", "METRICS", "MODEL", "PREDICTIONS", "TRAINED_MODEL", "Codes", "FileList",
           "ImageSet", "Metrics", "ModelValue", "JsonCodec", "ModelCodec", "CodesCodec"]


class JsonCodec:
    def __init__(self, to_json, from_json) -> None:
        self._to_json = to_json
        self._from_json = from_json

    def save(self, value: Any, folder: Path) -> None:
        atomic_write_text(Path(folder) / "value.json", json.dumps(self._to_json(value)))

    def load(self, folder: Path) -> Any:
        return self._from_json(json.loads((Path(folder) / "value.json").read_text()))


class ModelCodec:
    """spec and training record as JSON; weights, if any, as safetensors (no pickle)."""

    def save(self, value: ModelValue, folder: Path) -> None:
        save_model(value, folder)

    def load(self, folder: Path) -> ModelValue:
        return load_model(folder)


class CodesCodec:
    """Features as safetensors (``<split>.x`` / ``<split>.y``), the extractor as a model folder."""

    def save(self, value: Codes, folder: Path) -> None:
        from safetensors.torch import save

        folder = Path(folder)
        (folder / "extractor").mkdir(parents=True, exist_ok=True)
        ModelCodec().save(value.extractor, folder / "extractor")
        tensors = {}
        for split, (x, y) in value.splits.items():
            tensors[f"{split}.x"], tensors[f"{split}.y"] = x.contiguous(), y.contiguous()
        atomic_write_bytes(folder / "codes.safetensors", save(tensors))
        atomic_write_text(folder / "codes.json", json.dumps({"classes": list(value.classes),
                                                             "splits": list(value.splits)}))

    def load(self, folder: Path) -> Codes:
        from safetensors.torch import load

        folder = Path(folder)
        meta = json.loads((folder / "codes.json").read_text())
        tensors = load((folder / "codes.safetensors").read_bytes())
        return Codes(ModelCodec().load(folder / "extractor"), tuple(meta["classes"]),
                     {s: (tensors[f"{s}.x"], tensors[f"{s}.y"]) for s in meta["splits"]})


IMAGES = PortType("ImageDataset", color="#66bb6a",
                  description="Labelled image files with train/validation/test splits and their transforms",
                  codec=JsonCodec(ImageSet.to_json, ImageSet.from_json),
                  files=lambda data: (file for items in data.splits.values() for file, _ in items))
MODEL = PortType("Model", color="#42a5f5", description="A network architecture, possibly with weights",
                 codec=ModelCodec())
TRAINED_MODEL = PortType("TrainedModel", color="#1a237e", parents=(MODEL,),
                         description="A model with trained weights, its classes and training history",
                         codec=ModelCodec())
METRICS = PortType("Metrics", color="#ffa726", description="Evaluation numbers and tables",
                   codec=JsonCodec(lambda m: {"values": m.values, "tables": m.tables},
                                   lambda d: Metrics(d["values"], d.get("tables", {}))))
FILES = PortType("Files", color="#8d6e63", description="Paths of files a node wrote",
                 codec=JsonCodec(lambda f: f.files, lambda d: FileList(dict(d))))
PREDICTIONS = PortType("Predictions", color="#ab47bc", description="One row per classified image",
                       codec=JsonCodec(lambda rows: rows, lambda rows: rows))
CODES = PortType("CNNCodes", color="#26a69a", codec=CodesCodec(),
                 description="Features of every image, computed once by a frozen network, with their labels")
