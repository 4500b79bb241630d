"""Run-time checks and glue the catalogue's nodes share: whether a model and its images fit,
what a model value looks like to static checking, and the engine's hooks for a run context.

Node files import these; they never import each other.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from nodeflow.node import Interrupted, ParamProblem, ParamWarning, RunContext
from nodes.engine.hooks import Hooks, Stopped
from nodes.engine.launch import SettingError
from nodes.engine.models import SpecError, summarize
from nodes.engine.values import ImageSet, ModelValue

if TYPE_CHECKING:
    from nodes.engine.inference import Outcome

# what needs torch (the device) is imported where a run uses it: node files
# import this module, and reading the catalogue or checking a graph does not import torch


def model_facts(model: ModelValue | dict[str, Any], param: str | None = None) -> dict[str, Any]:
    """What static checking knows of a model: shapes, and the blocks with parameter counts and
    whether each trains. Raises ParamProblem when the spec cannot be built."""
    if isinstance(model, ModelValue):
        spec, frozen = model.spec, list(model.frozen)
    else:
        spec, frozen = model["spec"], list(model.get("frozen", []))
    try:
        summary = summarize(spec)
    except SpecError as exc:
        raise ParamProblem(str(exc), param=param) from None
    layers = [{**b, "trainable": b["name"] not in frozen} for b in summary["blocks"]]
    return {"spec": spec, "frozen": frozen, "input_node": spec.get("input_node"), "input_shape": spec["input_shape"],
            "output_shape": summary["output_shape"], "layers": layers}


def check_fit(model: dict[str, Any], data: dict[str, Any]) -> None:
    """Raise ParamProblem when the images a trainer gets cannot go into the model it gets; the
    message names the nodes to change (formatter, input layer, output layer)."""
    format_node = data.get("format_node") or "the image formatter"
    input_node = model.get("input_node") or "the input layer"
    if data.get("formatted") is False:
        source = data.get("dataset_node") or "the dataset"
        raise ParamProblem(f"the images from '{source}' have no fixed size; put an image formatter between "
                           f"'{source}' and this node", port="data", other_node=data.get("dataset_node"),
                           nodes=[source])
    if data.get("image_size") and model.get("input_shape"):
        made = [data["channels"], *data["image_size"]]
        wanted = list(model["input_shape"])
        if made != wanted:
            c, h, w = made
            c2, h2, w2 = wanted
            raise ParamProblem(
                f"image formatter '{format_node}' makes {c}×{h}×{w} images (channels×height×width) but input "
                f"layer '{input_node}' expects {c2}×{h2}×{w2}; set {format_node}.height/width/channels or "
                f"{input_node}.height/width/channels so they match", port="data", other_node=data.get("format_node"),
                nodes=[format_node, input_node])
    out = model.get("output_shape")
    if out is not None and len(out) != 1:
        raise ParamProblem(f"the model's output has shape {out}; end it with flatten (or global pool) and a "
                           f"dense layer with units 'auto'", port="model")
    classes = data.get("classes")
    if out and out[0] != "auto" and classes and out[0] != len(classes):
        last = output_node(model)
        where = f"'{last}'" if last else f"layer '{model['layers'][-1]['name']}'" if model.get("layers") else "its last layer"
        fix = f"set {last}.units" if last else "set the output layer's units"
        raise ParamProblem(f"the model ends in {out[0]} outputs ({where}) but the data has {len(classes)} classes "
                           f"{classes}; {fix} to {len(classes)} or 'auto'", port="model", other_node=last)
    if model.get("classes") and classes and list(model["classes"]) != list(classes):
        raise ParamProblem(f"the model was trained on classes {model['classes']} but the data has {classes}",
                           port="data")


def output_node(model: dict[str, Any]) -> str | None:
    """The node that made a model's last layer, when static checking knows it (``layer_nodes``)."""
    layers = model.get("layers") or []
    return (model.get("layer_nodes") or {}).get(layers[-1]["layer"]) if layers and "layer" in layers[-1] else None


def output_activation_warning(activation: str, why: str, node: str | None = None) -> ParamWarning:
    """An activation on the output layer, whose outputs the loss reads as class scores."""
    return ParamWarning(f"activation {activation} on the output layer ({why}): the loss reads its outputs as class "
                        f"scores, which {activation} bends (relu clips every negative score to 0, so a wrong class "
                        "cannot be pushed down); set activation to none", param="activation", node=node)


def value_facts(model: ModelValue) -> dict[str, Any]:
    """The facts ``check_fit`` compares, taken from a model value at run time."""
    facts = model_facts(model)
    facts["classes"] = list(model.classes) if model.trained else None
    return facts


def data_facts(data: ImageSet) -> dict[str, Any]:
    """The facts ``check_fit`` compares, taken from a dataset value at run time."""
    fmt = data.format
    facts: dict[str, Any] = {"classes": list(data.classes), "formatted": fmt is not None,
                             "dataset_node": data.sources.get("dataset"), "format_node": data.sources.get("format")}
    if fmt:
        facts.update(image_size=[fmt["height"], fmt["width"]], channels=fmt["channels"])
    return facts


def check_images(model: ModelValue, data: ImageSet) -> None:
    """The images must be formatted to the size the model takes (classes do not matter yet)."""
    facts = {k: v for k, v in value_facts(model).items() if k in ("input_shape", "input_node")}
    check_fit(facts, {k: v for k, v in data_facts(data).items() if k != "classes"})


def check_scoring(model: ModelValue, data: ImageSet, split: str) -> None:
    """A trained model can score ``split`` of the data: they fit, and the split has images."""
    check_fit(value_facts(model), data_facts(data))
    if not data.split(split):
        raise ParamProblem(f"the data has no '{split}' images (splits: {data.counts()})", param="split")


def png_preview(png: bytes, label: str) -> dict[str, Any]:
    """A PNG as an image preview the editor shows beside the node."""
    return {"images": [{"src": "data:image/png;base64," + base64.b64encode(png).decode("ascii"), "label": label}]}


def hooks(ctx: RunContext, checkpoints: bool = False) -> Hooks:
    """The engine's hooks for a node's run context: progress (with a training's completed epochs,
    which the editor shows as "epoch 12/40"), metrics, logs and previews go to the editor; a stop
    request is polled between batches and inside long passes."""
    return Hooks(workspace=ctx.workspace, checkpoints=ctx.checkpoints if checkpoints else None,
                 progress=ctx.progress, metric=ctx.log_metric, log=ctx.log, preview=ctx.preview,
                 should_stop=lambda: ctx.interrupted)


@contextlib.contextmanager
def settings_named() -> Iterator[None]:
    """An engine setting that cannot work as a ParamProblem naming the param of the same name."""
    try:
        yield
    except SettingError as exc:
        raise ParamProblem(str(exc), param=exc.setting) from None


@contextlib.contextmanager
def engine_errors(ctx: RunContext, batch_size: int | None = None) -> Iterator[None]:
    """Translate what the engine raises into what the executor understands: a stop request into
    ``Interrupted``, a setting that cannot work or running out of memory into a ParamProblem that
    names the param (batch_size for memory). A batch over a shared server's limit is refused first,
    before anything is loaded (every node that reads images in batches comes through here)."""
    from nodes.engine.device import free_memory, is_out_of_memory

    if batch_size is not None:
        ctx.limits.check_batch(batch_size)
    try:
        with settings_named():
            yield
    except Stopped:
        raise Interrupted(f"node '{ctx.node_id}' was interrupted") from None
    except RuntimeError as exc:  # torch.OutOfMemoryError is one
        if batch_size is None or not is_out_of_memory(exc):
            raise
        free_memory()
        raise ParamProblem(f"ran out of memory ({str(exc).splitlines()[0][:160]}); try a smaller batch_size "
                           f"(now {batch_size}) or smaller images", param="batch_size") from None


def keep_outcome(ctx: RunContext, split: str, found: Outcome, classes: tuple[str, ...]) -> None:
    """A scored split's per-image outcome kept beside the node's result, and its image count as the
    metric ``SPLIT_images``, so every figure of the split says how many images it stands on."""
    ctx.log_metric(f"{split}_images", len(found.files))
    ctx.keep_predictions(split, found.files, found.true.numpy(), found.predicted.numpy(), found.confidence.numpy(),
                         classes)
