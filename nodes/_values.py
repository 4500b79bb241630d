"""The values that flow between the built-in nodes, their port types and their codecs.

Every value is cheap to persist: datasets are file lists and transform settings (JSON), an
untrained model is an architecture spec (JSON), a trained model adds a safetensors state dict.
Nothing is pickled, so a cached value can be read back safely by a new process.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nodeflow.graph import atomic_write_bytes, atomic_write_text
from nodeflow.node import PortType

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class ImageSet:
    """Labelled image files split into train / validation / test, plus how to turn them into tensors.

    ``format`` is set by the image formatter (size, crop, normalisation) and ``augment`` by the
    augmentation node (train split only); ``sources`` remembers which node set which part so
    errors can name it.
    """

    classes: tuple[str, ...]
    splits: dict[str, tuple[tuple[str, int], ...]]
    format: dict[str, Any] | None = None
    augment: tuple[dict[str, Any], ...] = ()
    skipped: int = 0
    sources: dict[str, str] = field(default_factory=dict)

    def split(self, name: str) -> tuple[tuple[str, int], ...]:
        return self.splits.get(name, ())

    def counts(self) -> dict[str, int]:
        return {name: len(items) for name, items in self.splits.items()}

    def with_(self, **changes: Any) -> ImageSet:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return {"classes": list(self.classes),
                "splits": {k: [[p, y] for p, y in v] for k, v in self.splits.items()},
                "format": self.format, "augment": list(self.augment), "skipped": self.skipped,
                "sources": self.sources}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImageSet:
        return cls(classes=tuple(data["classes"]),
                   splits={k: tuple((p, int(y)) for p, y in v) for k, v in data["splits"].items()},
                   format=data.get("format"), augment=tuple(data.get("augment", ())),
                   skipped=int(data.get("skipped", 0)), sources=dict(data.get("sources", {})))


@dataclass(frozen=True)
class ModelValue:
    """A model as an architecture spec, optionally with trained weights.

    ``spec`` = {"input_shape": [c, h, w], "layers": [{"kind", "name", ...params}]}; the module is
    built from it on demand (see ``nodes._models``). ``frozen`` names the top-level blocks whose
    parameters do not train. ``state`` is None until a trainer has run; then ``classes``,
    ``format`` (the eval transform) and ``history`` describe what it learned from.
    """

    spec: dict[str, Any]
    frozen: tuple[str, ...] = ()
    bn_frozen: bool = False
    state: dict[str, Any] | None = None
    classes: tuple[str, ...] = ()
    format: dict[str, Any] | None = None
    history: tuple[dict[str, Any], ...] = ()

    @property
    def trained(self) -> bool:
        return self.state is not None

    @property
    def layers(self) -> list[dict[str, Any]]:
        return self.spec["layers"]

    def with_layer(self, layer: dict[str, Any]) -> ModelValue:
        spec = {**self.spec, "layers": [*self.layers, layer]}
        return replace(self, spec=spec)

    def with_(self, **changes: Any) -> ModelValue:
        return replace(self, **changes)

    def meta(self) -> dict[str, Any]:
        return {"spec": self.spec, "frozen": list(self.frozen), "bn_frozen": self.bn_frozen,
                "classes": list(self.classes), "format": self.format, "history": list(self.history),
                "trained": self.trained}


@dataclass(frozen=True)
class Metrics:
    """Named numbers plus tables (confusion matrix, per-class rows), all JSON."""

    values: dict[str, float]
    tables: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FileList:
    """Files a node wrote, e.g. exported model formats, keyed by what they are."""

    files: dict[str, str]


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
        folder = Path(folder)
        if value.state is not None:
            from safetensors.torch import save

            tensors = {k: v.detach().cpu().contiguous() for k, v in value.state.items()}
            atomic_write_bytes(folder / "model.safetensors", save(tensors))
        atomic_write_text(folder / "model.json", json.dumps(value.meta()))

    def load(self, folder: Path) -> ModelValue:
        folder = Path(folder)
        meta = json.loads((folder / "model.json").read_text())
        state = None
        if meta.get("trained"):
            from safetensors.torch import load

            state = load((folder / "model.safetensors").read_bytes())
        return ModelValue(spec=meta["spec"], frozen=tuple(meta["frozen"]), bn_frozen=meta["bn_frozen"],
                          state=state, classes=tuple(meta["classes"]), format=meta["format"],
                          history=tuple(meta["history"]))


IMAGES = PortType("ImageDataset", color="#66bb6a",
                  description="Labelled image files with train/validation/test splits and their transforms",
                  codec=JsonCodec(ImageSet.to_json, ImageSet.from_json))
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
