"""Model nodes: each adds a layer to an architecture spec; shapes propagate, so nobody types in_features.

The value is a JSON spec (see ``nodes.engine.models``), cheap to cache; the network itself is built by
the trainer. Every node's ``infer`` builds the same spec on the meta device to report the output
shape and the blocks with their parameter counts (which the fine-tune layer picker shows).
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from nodeflow.node import Node, NodeParams, ParamProblem, ParamWarning, Port, RunContext, ScriptContext, ScriptPart
from nodeflow.paths import path_field
from nodes.checks import model_facts, output_activation_warning
from nodes.engine.models import (ACTIVATIONS, ARCHS, WEIGHTS_FILES, SpecError, WeightsUnavailable, backbone_blocks,
                                 cached_imagenet_weights, can_reach, hub_checkpoints, imagenet_weights,
                                 kept_imagenet_url, summarize)
from nodes.engine.download import MIRROR_ENV, DownloadError, source_url
from nodes.engine.files import file_stamp
from nodes.engine.scripting import IMPORTS, ScriptModel, functions
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
        # which node made each layer, so a later node's message names the node, not the layer
        made_by = {**incoming.get("layer_nodes", {}), spec["layers"][-1]["name"]: node_id}
        return {"model": {**model_facts({"spec": spec, "frozen": frozen}, cls.blame), "layer_nodes": made_by}}

    @classmethod
    def script_layer(cls, ctx: ScriptContext, params: Any, layer: dict[str, Any], shape: list[Any],
                     model: ScriptModel) -> tuple[str, str | None]:
        """The expression of this layer's module in the script, given the incoming ``shape``, and the
        expression of its output width when a constant says it (else None)."""
        raise NotImplementedError

    @classmethod
    def script_spec(cls, ctx: ScriptContext, params: Any) -> dict[str, Any]:
        """The model's spec with this layer added, from what checking knows of the incoming one."""
        facts = ctx.facts.get("model") or {}
        if "spec" not in facts:
            raise ParamProblem("the incoming model's layers are not known before it runs", port="model")
        return cls._extend(params, facts["spec"], [])[0]

    @classmethod
    def script(cls, ctx: ScriptContext, params: Any, model: ScriptModel) -> ScriptPart:
        """One line of the model's build function: ``blocks[name] = <module>``."""
        facts = ctx.facts.get("model") or {}
        layer = cls.script_spec(ctx, params)["layers"][-1]
        module, width = cls.script_layer(ctx, params, layer, facts["output_shape"], model)
        return ScriptPart(code=f'# the model\'s layer "{layer["name"]}": {module}',
                          outputs={"model": model.add(ctx.node_id, f'blocks["{layer["name"]}"] = {module}', width)},
                          imports=IMPORTS)

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
    title_template = "Input layer ({height}×{width}×{channels})"
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

    @classmethod
    def script(cls, ctx: ScriptContext, params: Params) -> ScriptPart:
        return ScriptPart(code=f"# the model takes {params.channels}×{params.height}×{params.width} images "
                               "(channels × height × width), as the image formatter makes them",
                          outputs={"model": ScriptModel()})

    def run(self, ctx: RunContext, params: Params) -> dict:
        return {"model": ModelValue(spec=self.spec(params, ctx.node_id))}


#: how a title names each architecture the backbone offers (as its authors write it)
ARCH_NAMES = {"vgg11": "VGG11", "vgg16": "VGG16", "vgg19": "VGG19", "vgg16_bn": "VGG16-BN", "resnet18": "ResNet-18",
              "resnet34": "ResNet-34", "resnet50": "ResNet-50", "resnet101": "ResNet-101",
              "efficientnet_b0": "EfficientNet-B0", "mobilenet_v3_small": "MobileNetV3-Small",
              "mobilenet_v3_large": "MobileNetV3-Large", "convnext_tiny": "ConvNeXt-Tiny"}

class Backbone(_LayerNode):
    """A torchvision network without its classifier, used as a feature extractor: its feature
    blocks are added under their names (VGG: block1..block5; ResNet: stem, layer1..layer4)."""

    type = "model.backbone"
    title = "Backbone"
    blame = "arch"
    # the card says which network with which weights, and follows when either changes; the words
    # for a frozen ImageNet network are those the templates used to type ("VGG16 feature extractor")
    title_template = "{arch}, {weights}"
    title_cases = (({"feature_extractor": True, "weights": "imagenet"}, "{arch} feature extractor"),
                   ({"feature_extractor": True}, "{arch} feature extractor, {weights}"))
    title_words = {"arch": ARCH_NAMES, "weights": {"imagenet": "ImageNet weights", "none": "random weights",
                                                   "*": "weights from {}"}}

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
        return file_stamp(path.stat())

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

    @classmethod
    def warnings(cls, params: Params, inputs, node_id: str | None = None, workspace=None) -> list[ParamWarning]:
        """ImageNet weights that are not here yet and cannot be downloaded: say so before the run
        fails on it (a quick connection to the download host, remembered for a while)."""
        if params.weights != "imagenet":
            return []
        folder = Path(workspace) / "weights" if workspace is not None else None
        if cached_imagenet_weights(params.arch, folder) is not None:
            return []
        url = kept_imagenet_url(params.arch)
        try:
            source = source_url(url)  # the mirror's copy when NODEFLOW_MIRROR_URL is set
        except DownloadError as exc:
            return [ParamWarning(str(exc), param="weights")]
        if can_reach(source):
            return []
        filename = url.rsplit("/", 1)[-1]
        place = f"'{folder}' (the workspace) or " if folder is not None else ""
        return [ParamWarning(f"the ImageNet weights of {params.arch} are not on this machine and {source.split('/')[2]} "
                             f"cannot be reached (offline?): the run would fail here. Put '{filename}' into {place}"
                             f"torch's cache '{hub_checkpoints()}', set {MIRROR_ENV} to a server that holds it, or "
                             "set weights to none or to the path of a weights file", param="weights")]

    @classmethod
    def script(cls, ctx: ScriptContext, params: Params, model: ScriptModel) -> ScriptPart:
        """The torchvision network cut into its named blocks, and two lists: the blocks' names, and
        those that stay frozen (all of them for a feature extractor)."""
        if params.weights.endswith(".safetensors"):
            raise ParamProblem("the script reads weights files written by torch.save (.pth), not .safetensors",
                               param="weights")
        names = [b["name"] for b in summarize(cls.script_spec(ctx, params))["blocks"] if b["kind"] == "backbone"]
        split = "vgg_blocks" if params.arch.startswith("vgg") else "resnet_blocks" if params.arch.startswith("resnet") \
            else "feature_blocks"
        blocks, frozen = ctx.name("blocks"), ctx.name("frozen")
        code = (f"{blocks} = {json.dumps(names)}  # as fine-tuning names them\n"
                f"{frozen} = {blocks} if {ctx.const('feature_extractor')} else []  # a feature extractor keeps them")
        line = f'blocks.update({split}(backbone("{params.arch}", {ctx.const("weights")} if pretrained else "none")))'
        joined = model.add(ctx.node_id, line, None,
                           frozen=frozen if model.frozen == "[]" else f"{model.frozen} + {frozen}",
                           backbone=blocks if model.backbone == "[]" else f"{model.backbone} + {blocks}")
        return ScriptPart(code=code, outputs={"model": joined}, imports=IMPORTS,
                          functions=functions("backbone", split))

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

    @classmethod
    def script_layer(cls, ctx, params, layer, shape, model):
        return "nn.Flatten()", None


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

    @classmethod
    def script_layer(cls, ctx, params, layer, shape, model):
        pool = "nn.AdaptiveAvgPool2d(1)" if params.mode == "avg" else "nn.AdaptiveMaxPool2d(1)"
        return f"nn.Sequential({pool}, nn.Flatten())", None


class Dense(_LayerNode):
    """A fully connected layer. With units 'auto' it becomes the output layer with one unit per
    class of the dataset the trainer gets."""

    type = "model.dense"
    title = "Dense"
    auto_name = "dense"
    blame = "units"

    class Params(_NamedParams):
        units: int | Literal["auto"] = Field(256, description="Output size; 'auto' = number of classes")
        activation: Literal[tuple(ACTIVATIONS)] = Field("relu", description=(  # type: ignore[valid-type]
            "Activation after the layer (left unset: none on an output layer, units 'auto'; else relu)"))
        dropout: float = Field(0.0, ge=0, lt=1, description="Dropout after the activation")
        init: Literal["default", "xavier_uniform", "xavier_normal", "kaiming_normal"] = Field(
            "default", description="Weight initialisation of this new layer (default: torch's)")

        @field_validator("units")
        @classmethod
        def _positive(cls, value):
            if value != "auto" and value < 1:
                raise ValueError("units must be at least 1, or 'auto'")
            return value

        @model_validator(mode="before")
        @classmethod
        def _output_layer_has_no_activation(cls, data: Any) -> Any:
            """An output layer gives the class scores the loss reads: unless set, no activation."""
            if isinstance(data, dict) and data.get("units") == "auto" and "activation" not in data:
                return {**data, "activation": "none"}
            return data

    @classmethod
    def warnings(cls, params: Params, inputs, node_id: str | None = None, workspace=None) -> list[ParamWarning]:
        if params.units == "auto" and params.activation != "none":
            return [output_activation_warning(params.activation, "units 'auto'")]
        return []

    @classmethod
    def layer(cls, params: Params) -> dict[str, Any]:
        layer = {"kind": "dense", "name": params.name, "units": params.units, "activation": params.activation,
                 "dropout": params.dropout}
        if params.init != "default":  # only then, so specs (and cache keys) of existing graphs stay the same
            layer["init"] = params.init
        return layer

    @classmethod
    def script_layer(cls, ctx, params, layer, shape, model):
        units = "num_classes" if params.units == "auto" else ctx.const("units")
        linear = f"nn.Linear({model.width or shape[0]}, {units})"
        if params.init != "default":
            linear = f'init_linear({linear}, "{params.init}")'
        parts = [linear]
        if params.activation != "none":
            parts.append(f"nn.{ACTIVATIONS[params.activation]}()")
        if params.dropout:
            parts.append(f"nn.Dropout({ctx.const('dropout')})")
        return f"nn.Sequential({', '.join(parts)})", units

    @classmethod
    def script(cls, ctx: ScriptContext, params: Params, model: ScriptModel) -> ScriptPart:
        part = super().script(ctx, params, model)
        return part if params.init == "default" else replace(part, functions=functions("init_linear"))


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

    @classmethod
    def script_layer(cls, ctx, params, layer, shape, model):
        if len(shape) == 1:
            return f"nn.BatchNorm1d({model.width or shape[0]})", model.width
        return f"nn.BatchNorm2d({shape[0]})", None


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

    @classmethod
    def script_layer(cls, ctx, params, layer, shape, model):
        return f"nn.Dropout({ctx.const('p')})", model.width

