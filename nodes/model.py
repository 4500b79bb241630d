"""Model nodes: each adds a layer to an architecture spec; shapes propagate, so nobody types in_features.

The value is a JSON spec (see ``nodes.engine.models``), cheap to cache; the network itself is built by
the trainer. Every node's ``infer`` builds the same spec on the meta device to report the output
shape and the blocks with their parameter counts (which the fine-tune layer picker shows).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from nodeflow.node import Node, NodeParams, ParamProblem, Port, RunContext
from nodeflow.paths import path_field
from nodes.checks import model_facts
from nodes.engine.models import (ACTIVATIONS, ARCHS, WEIGHTS_FILES, SpecError, WeightsUnavailable, backbone_blocks,
                                 imagenet_weights, summarize)
from nodes.ports import MODEL, ModelValue

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"


class _LayerNode(Node):
    """A node that appends one layer to the incoming model."""

    category = "Model"
    inputs = (Port("model", MODEL),)
    outputs = (Port("model", MODEL),)
    #: the param blamed when the layer does not fit the incoming shape
    blame: str | None = None
    #: layers of this kind left unnamed are called kind1, kind2, ... (the names fine-tuning picks by)
    auto_name: str | None = None

    @classmethod
    def layer(cls, params: Any) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def frozen_after(cls, params: Any, frozen: list[str], spec: dict[str, Any]) -> list[str]:
        return frozen

    @classmethod
    def _extend(cls, params: Any, spec: dict[str, Any], frozen: list[str]) -> tuple[dict[str, Any], list[str]]:
        if cls.auto_name:
            params = params.model_copy(update={"name": _auto_name(cls.auto_name, spec, params.name)})
        new_spec = {**spec, "layers": [*spec["layers"], cls.layer(params)]}
        return new_spec, cls.frozen_after(params, frozen, new_spec)

    @classmethod
    def infer(cls, params: Any, inputs, node_id: str | None = None):
        incoming = inputs.get("model") or {}
        if "spec" not in incoming:
            return {}
        spec, frozen = cls._extend(params, incoming["spec"], list(incoming.get("frozen", [])))
        return {"model": model_facts({"spec": spec, "frozen": frozen}, cls.blame)}

    def run(self, ctx: RunContext, params: Any, model: ModelValue) -> dict:
        spec, frozen = self._extend(params, model.spec, list(model.frozen))
        extended = model.with_(spec=spec, frozen=tuple(frozen))
        facts = model_facts(extended, self.blame)
        ctx.log(f"output shape {facts['output_shape']}")
        return {"model": extended}


class _NamedParams(NodeParams):
    name: str = Field("", description="Layer name used by fine-tuning (default: the kind and a number)")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if value and not re.match(NAME_PATTERN, value):
            raise ValueError("use letters, digits and underscores, starting with a letter")
        return value


def _auto_name(kind: str, spec: dict[str, Any], wanted: str) -> str:
    if wanted:
        return wanted
    taken = {layer["name"] for layer in spec["layers"]}
    n = 1
    while f"{kind}{n}" in taken:
        n += 1
    return f"{kind}{n}"


class InputLayer(Node):
    """Where a model starts: the shape of the images it takes (channels × height × width)."""

    type = "model.input"
    title = "Input layer"
    category = "Model"
    outputs = (Port("model", MODEL, "An empty model that takes images of this shape"),)

    class Params(NodeParams):
        height: int = Field(150, ge=8, le=2048, description="Image height in pixels")
        width: int = Field(150, ge=8, le=2048, description="Image width in pixels")
        channels: Literal[1, 3] = Field(3, description="3 for RGB, 1 for grayscale")

    @staticmethod
    def spec(params: Params, node_id: str | None) -> dict[str, Any]:
        return {"input_shape": [params.channels, params.height, params.width], "layers": [], "input_node": node_id}

    @classmethod
    def infer(cls, params: Params, inputs, node_id: str | None = None):
        return {"model": model_facts({"spec": cls.spec(params, node_id)})}

    def run(self, ctx: RunContext, params: Params) -> dict:
        return {"model": ModelValue(spec=self.spec(params, ctx.node_id))}


class Backbone(_LayerNode):
    """A torchvision network without its classifier, used as a feature extractor: its feature
    blocks are added under their names (VGG: block1..block5; ResNet: stem, layer1..layer4)."""

    type = "model.backbone"
    title = "Backbone"
    blame = "arch"

    class Params(NodeParams):
        arch: Literal[ARCHS] = Field("vgg16", description="Which torchvision architecture")  # type: ignore[valid-type]
        weights: Annotated[str, path_field("file", ["imagenet", "none"])] = Field("imagenet", description=(
            "imagenet (torchvision's file, downloaded once into the workspace, or from NODEFLOW_MIRROR_URL), "
            f"none (random init), or the path of a weights file: {WEIGHTS_FILES}"))
        feature_extractor: bool = Field(True, description="Freeze every backbone parameter (unfreeze later with fine-tune)")

    @classmethod
    def fingerprint(cls, params: Params) -> str | None:
        if params.weights in ("imagenet", "none"):
            return None
        path = Path(params.weights).expanduser()
        if not path.is_file():
            return "missing"
        stat = path.stat()
        return f"{stat.st_size}:{stat.st_mtime_ns}"

    @classmethod
    def layer(cls, params: Params) -> dict[str, Any]:
        return {"kind": "backbone", "name": "backbone", "arch": params.arch, "weights": params.weights}

    @classmethod
    def frozen_after(cls, params: Params, frozen: list[str], spec: dict[str, Any]) -> list[str]:
        if not params.feature_extractor:
            return frozen
        blocks = [b["name"] for b in summarize(spec)["blocks"] if b["kind"] == "backbone"]
        return frozen + [b for b in blocks if b not in frozen]

    @classmethod
    def infer(cls, params: Params, inputs, node_id: str | None = None):
        if params.weights not in ("imagenet", "none") and not Path(params.weights).expanduser().is_file():
            raise ParamProblem(f"weights file '{params.weights}' does not exist; give an existing file, "
                               f"or 'imagenet' or 'none'", param="weights")
        try:
            return super().infer(params, inputs, node_id)
        except SpecError as exc:
            raise ParamProblem(str(exc), param="arch") from None

    def run(self, ctx: RunContext, params: Params, model: ModelValue) -> dict:
        result = super().run(ctx, params, model)["model"]
        if params.weights == "none":
            return {"model": result}
        if params.weights == "imagenet":
            try:
                path = imagenet_weights(params.arch, ctx.workspace / "weights",
                                        progress=lambda done, total: total and ctx.progress(done, total))
            except WeightsUnavailable as exc:
                raise ParamProblem(str(exc), param="weights") from None
        else:
            path = ctx.resolve_path(params.weights)
        layers = [dict(layer) for layer in result.spec["layers"]]
        layers[-1]["weights_file"] = str(path)
        try:
            backbone_blocks(layers[-1])  # fail here, naming this node, if the file does not fit the arch
        except (OSError, ValueError) as exc:
            raise ParamProblem(str(exc), param="weights") from None
        ctx.log(f"{params.arch} weights from {path}")
        return {"model": result.with_(spec={**result.spec, "layers": layers})}


class Flatten(_LayerNode):
    """Flattens feature maps (C×H×W) into one vector per image, as a dense layer needs."""

    type = "model.flatten"
    title = "Flatten"
    auto_name = "flatten"

    class Params(_NamedParams):
        pass

    @classmethod
    def layer(cls, params: Params) -> dict[str, Any]:
        return {"kind": "flatten", "name": params.name or "flatten"}


class GlobalPool(_LayerNode):
    """Averages (or maxes) each feature map to one number: a small head that suits any input size."""

    type = "model.global_pool"
    title = "Global average pool"
    auto_name = "pool"

    class Params(_NamedParams):
        mode: Literal["avg", "max"] = Field("avg", description="Average or maximum over each feature map")

    @classmethod
    def layer(cls, params: Params) -> dict[str, Any]:
        return {"kind": "global_pool", "name": params.name, "mode": params.mode}


class Dense(_LayerNode):
    """A fully connected layer. With units 'auto' it becomes the output layer with one unit per
    class of the dataset the trainer gets."""

    type = "model.dense"
    title = "Dense"
    auto_name = "dense"
    blame = "units"

    class Params(_NamedParams):
        units: int | Literal["auto"] = Field(256, description="Output size; 'auto' = number of classes")
        activation: Literal[tuple(ACTIVATIONS)] = Field("relu", description="Activation after the layer")  # type: ignore[valid-type]
        dropout: float = Field(0.0, ge=0, lt=1, description="Dropout after the activation")
        init: Literal["default", "xavier_uniform", "xavier_normal", "kaiming_normal"] = Field(
            "default", description="Weight initialisation of this new layer (default: torch's)")

        @field_validator("units")
        @classmethod
        def _positive(cls, value):
            if value != "auto" and value < 1:
                raise ValueError("units must be at least 1, or 'auto'")
            return value

    @classmethod
    def layer(cls, params: Params) -> dict[str, Any]:
        layer = {"kind": "dense", "name": params.name, "units": params.units, "activation": params.activation,
                 "dropout": params.dropout}
        if params.init != "default":  # only then, so specs (and cache keys) of existing graphs stay the same
            layer["init"] = params.init
        return layer


class BatchNorm(_LayerNode):
    """Batch normalisation over features (after dense) or channels (after a backbone)."""

    type = "model.batchnorm"
    title = "Batch norm"
    auto_name = "bn"

    class Params(_NamedParams):
        pass

    @classmethod
    def layer(cls, params: Params) -> dict[str, Any]:
        return {"kind": "batchnorm", "name": params.name}


class Dropout(_LayerNode):
    """Randomly zeroes a share of activations while training, against over-fitting."""

    type = "model.dropout"
    title = "Dropout"
    auto_name = "dropout"

    class Params(_NamedParams):
        p: float = Field(0.5, ge=0, lt=1, description="Share of activations dropped while training")

    @classmethod
    def layer(cls, params: Params) -> dict[str, Any]:
        return {"kind": "dropout", "name": params.name, "p": params.p}

