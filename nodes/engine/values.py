"""The values the engine works on and the built-in nodes pass along (their port types and codecs
live in ``nodes.ports``).

Every value is cheap to persist: datasets are file lists and transform settings (JSON), an
untrained model is an architecture spec (JSON), a trained model adds a state dict.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nodes.engine.files import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:  # the values are read (ports, checking a graph) without importing torch
    import torch

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
    built from it on demand (see ``nodes.engine.models``). ``frozen`` names the top-level blocks whose
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


def save_model(value: ModelValue, folder: Path) -> None:
    """A model as files: spec and training record as JSON, weights (if any) as safetensors, no pickle;
    the port codec and the job folder of a training in several processes both write it so."""
    folder = Path(folder)
    if value.state is not None:
        from safetensors.torch import save

        tensors = {k: v.detach().cpu().contiguous() for k, v in value.state.items()}
        atomic_write_bytes(folder / "model.safetensors", save(tensors))
    atomic_write_text(folder / "model.json", json.dumps(value.meta()))


def load_model(folder: Path) -> ModelValue:
    folder = Path(folder)
    meta = json.loads((folder / "model.json").read_text())
    state = None
    if meta.get("trained"):
        from safetensors.torch import load

        state = load((folder / "model.safetensors").read_bytes())
    return ModelValue(spec=meta["spec"], frozen=tuple(meta["frozen"]), bn_frozen=meta["bn_frozen"], state=state,
                      classes=tuple(meta["classes"]), format=meta["format"], history=tuple(meta["history"]))


@dataclass(frozen=True)
class Metrics:
    """Named numbers plus tables (confusion matrix, per-class rows), all JSON."""

    values: dict[str, float]
    tables: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FileList:
    """Files a node wrote, e.g. exported model formats, keyed by what they are."""

    files: dict[str, str]


@dataclass(frozen=True)
class Codes:
    """Features ("CNN codes") of every image of each split, computed once by a frozen network.

    ``extractor`` is that network with its weights, so a classifier trained on the codes can be
    stacked on it into an ordinary trained model (evaluate, export and predict then just work).
    """

    extractor: ModelValue
    classes: tuple[str, ...]
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]]

    @property
    def dim(self) -> int:
        return int(next(iter(self.splits.values()))[0].shape[1])
