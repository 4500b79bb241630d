"""Evaluation nodes: score a trained model, compare learning curves, export a model to files, and
classify new images with it."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from nodeflow.files import atomic_write_bytes, atomic_write_text
from nodeflow.node import Node, NodeParams, ParamProblem, Port, RunContext, ScriptContext, ScriptPart, fingerprints_fresh
from nodeflow.paths import FolderPath, OutputFolder
from nodes.checks import check_fit, check_scoring, engine_errors, hooks, keep_outcome, png_preview
from nodes.engine.images import folder_fingerprint, image_files
from nodes.engine.plots import line_plot_png
from nodes.engine.scripting import DEVICE, FEATURE_CACHE_NOTE, IMPORTS, ScriptData, ScriptModel, call, functions
from nodes.ports import FILES, IMAGES, METRICS, PREDICTIONS, TRAINED_MODEL, FileList, ImageSet, Metrics, ModelValue

if TYPE_CHECKING:
    import torch

LABEL_PATTERN = r"^[A-Za-z][A-Za-z0-9_]{0,31}$"


class Evaluate(Node):
    """Scores a trained model on a split (the test split by default): accuracy, precision, recall,
    F-beta (macro averages), the confusion matrix and a per-class table."""

    type = "eval.evaluate"
    title = "Evaluate"
    category = "Evaluate"
    inputs = (Port("model", TRAINED_MODEL), Port("data", IMAGES))
    outputs = (Port("metrics", METRICS),)

    class Params(NodeParams):
        split: Literal["test", "validation", "train"] = Field("test", description="Which split to score")
        beta: float = Field(1.0, gt=0, le=100, description="β of the F-beta score (1: F1; >1 favours recall)")
        batch_size: int = Field(64, ge=1, le=4096, description="Images per forward pass")
        top_k: int = Field(5, ge=1, le=1000, description=(
            "Also report top-k accuracy (true class among the k most likely) when there are more than k classes"))

    @classmethod
    def infer(cls, params: Params, inputs, node_id: str | None = None):
        check_fit(inputs.get("model") or {}, inputs.get("data") or {})
        return {}

    @classmethod
    def script(cls, ctx: ScriptContext, params: Params, model: ScriptModel, data: ScriptData) -> ScriptPart:
        """Accuracy and mean loss on the split (the node's precision, recall and F-beta are left out)."""
        if model.trained is None:
            raise ParamProblem("the model this node scores is not trained by the script", port="model")
        split, loader = ctx.const("split"), ctx.name("loader")
        code = (call(f"{loader} = loader", [f"{data.splits}.get({split}, [])", data.eval_transform,
                                             ctx.const("batch_size")]) + "\n"
                + call("loss, accuracy = evaluate", [model.trained, "nn.CrossEntropyLoss()", loader, "device",
                                                     "autocast_dtype(device)"]) + "\n"
                f'results["{ctx.node_id}"] = {{"accuracy": accuracy, "loss": loss, "samples": len({loader}.dataset)}}\n'
                f'print("{ctx.node_id}:", {split}, results["{ctx.node_id}"])')
        layers = (ctx.facts.get("model") or {}).get("layers") or []
        notes = (FEATURE_CACHE_NOTE,) if layers and not layers[0].get("trainable", True) else ()
        return ScriptPart(code=code, setup=(DEVICE,), imports=IMPORTS, notes=notes,
                          functions=functions("loader", "ImageFiles", "autocast_dtype", "evaluate"))

    @classmethod
    def measures(cls, params: Params) -> dict[str, str]:
        names = ("accuracy", "precision", "recall", "f_beta", "loss", "samples", f"top{params.top_k}_accuracy")
        return {name: params.split for name in names}

    def run(self, ctx: RunContext, params: Params, model: ModelValue, data: ImageSet) -> dict:
        from nodes.engine.inference import score

        check_scoring(model, data, params.split)
        with engine_errors(ctx, params.batch_size):
            metrics, found = score(model, data, params.split, params.batch_size, params.beta, params.top_k,
                                   hooks(ctx), ctx.device)
        for name, value in metrics.values.items():
            ctx.log_metric(name, value)
        ctx.log_metric("loss", found.loss)
        keep_outcome(ctx, params.split, found, model.classes)
        ctx.log(f"{params.split}: accuracy {metrics.values['accuracy']:.3f} on {int(metrics.values['samples'])} images")
        ctx.preview("confusion_matrix", metrics.tables["confusion_matrix"])
        ctx.preview("metrics_table", {"columns": ["class", "precision", "recall", "f_beta", "support"],
                                      "rows": metrics.tables["per_class"]})
        return {"metrics": metrics}

    def estimate(self, ctx: RunContext, params: Params, model: ModelValue, data: ImageSet) -> dict:
        """One profiled inference pass over the split, through the shared caches."""
        from nodes.engine.estimate import estimate_pass

        with engine_errors(ctx, params.batch_size):
            return estimate_pass(model, data, [params.split], params.batch_size, ctx.workspace, ctx.device,
                                 should_stop=lambda: ctx.interrupted).to_json()


class Export(Node):
    """Writes a trained model to files: safetensors weights with a JSON description (reloadable as
    backbone weights), TorchScript, and ONNX."""

    type = "eval.export"
    title = "Export model"
    category = "Evaluate"
    inputs = (Port("model", TRAINED_MODEL),)
    outputs = (Port("files", FILES, "Paths of the written files by format"),)

    class Params(NodeParams):
        folder: OutputFolder = Field("", description="Where to write (empty: exports/<node id> in the workspace)")
        name: str = Field("model", pattern=r"^[A-Za-z0-9_.\-]{1,100}$", description="File name without extension")
        formats: list[Literal["safetensors", "torchscript", "onnx"]] = Field(
            default_factory=lambda: ["safetensors"], min_length=1, description="Which files to write")

    def run(self, ctx: RunContext, params: Params, model: ModelValue) -> dict:
        import torch

        from nodes.engine.loop import network

        folder = ctx.resolve_path(params.folder) if params.folder else ctx.workspace / "exports" / ctx.node_id
        folder.mkdir(parents=True, exist_ok=True)
        files: dict[str, str] = {}
        net = network(model, len(model.classes)).eval()
        example = torch.zeros(1, *model.spec["input_shape"])
        for fmt in params.formats:
            if fmt == "safetensors":
                from safetensors.torch import save

                tensors = {k: v.detach().cpu().contiguous() for k, v in model.state.items()}
                path = folder / f"{params.name}.safetensors"
                atomic_write_bytes(path, save(tensors, metadata={"nodeflow": "state_dict"}))
                meta = folder / f"{params.name}.json"
                atomic_write_text(meta, json.dumps({"spec": model.spec, "classes": list(model.classes),
                                                    "format": model.format}, indent=2))
                files["safetensors"], files["spec"] = str(path), str(meta)
            elif fmt == "torchscript":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    traced = torch.jit.trace(net, example)
                    buffer = io.BytesIO()
                    torch.jit.save(traced, buffer)
                path = folder / f"{params.name}.torchscript.pt"
                atomic_write_bytes(path, buffer.getvalue())
                files["torchscript"] = str(path)
            elif fmt == "onnx":
                path = folder / f"{params.name}.onnx"
                atomic_write_bytes(path, onnx_bytes(net, example))
                files["onnx"] = str(path)
            ctx.log(f"wrote {fmt}")
        return {"files": FileList(files)}


def onnx_bytes(net: torch.nn.Module, example: torch.Tensor) -> bytes:
    """ONNX through the torch.export-based exporter when onnxscript is installed, else the
    TorchScript-based one (which needs only torch)."""
    import torch

    dynamo = importlib.util.find_spec("onnxscript") is not None
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (example,), buffer, dynamo=dynamo, input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    return buffer.getvalue()


class Predict(Node):
    """Classifies every image in a folder (recursively) with a trained model."""

    type = "eval.predict"
    title = "Predict"
    category = "Evaluate"
    inputs = (Port("model", TRAINED_MODEL),)
    outputs = (Port("predictions", PREDICTIONS, "file, label, confidence for each image"),)

    class Params(NodeParams):
        folder: FolderPath = Field("", description="Folder of images to classify")
        batch_size: int = Field(64, ge=1, le=4096, description="Images per forward pass")

    @classmethod
    def fingerprint(cls, params: Params) -> str:
        return folder_fingerprint(Path(params.folder), fresh=fingerprints_fresh()) if params.folder else "no-folder"

    @classmethod
    def infer(cls, params: Params, inputs, node_id: str | None = None):
        if not params.folder:
            raise ParamProblem("set folder to a folder of images", param="folder")
        return {}

    def run(self, ctx: RunContext, params: Params, model: ModelValue) -> dict:
        from nodes.engine.inference import predict

        folder = ctx.resolve_path(params.folder)
        if not folder.is_dir():
            raise ParamProblem(f"folder '{folder}' does not exist", param="folder")
        files = image_files(folder)
        ctx.check_files(files, param="folder")
        paths = [str(p) for p in files]
        with engine_errors(ctx, params.batch_size):
            probs = predict(model, paths, params.batch_size, hooks(ctx), ctx.device)
        confidence, label = probs.max(1) if len(paths) else (probs.sum(1), probs.sum(1).long())
        rows = [{"file": path, "label": model.classes[int(label[i])], "confidence": float(confidence[i])}
                for i, path in enumerate(paths)]
        ctx.log(f"classified {len(rows)} images")
        ctx.preview("metrics_table", {"columns": ["file", "label", "confidence"], "rows": rows[:50]})
        return {"predictions": rows}


class CompareCurves(Node):
    """Puts two trained models' learning curves on one chart (e.g. from scratch vs fine-tuned on
    the same data): each history metric becomes the series '<label>_<metric>' of this node."""

    type = "eval.compare_curves"
    title = "Compare learning curves"
    category = "Evaluate"
    inputs = (Port("a", TRAINED_MODEL, "First run, e.g. trained from scratch"),
              Port("b", TRAINED_MODEL, "Second run, e.g. fine-tuned"))
    outputs = (Port("comparison", METRICS, "Final value of each curve, and the curves"),)

    class Params(NodeParams):
        label_a: str = Field("scratch", pattern=LABEL_PATTERN, description="Name of the first run in the chart")
        label_b: str = Field("finetune", pattern=LABEL_PATTERN, description="Name of the second run in the chart")
        metrics: list[Literal["val_accuracy", "val_loss", "train_accuracy", "train_loss"]] = Field(
            default_factory=lambda: ["val_accuracy", "val_loss"], min_length=1, description="Which curves to compare")

    def run(self, ctx: RunContext, params: Params, a: ModelValue, b: ModelValue) -> dict:
        if params.label_a == params.label_b:
            raise ParamProblem("give the two runs different labels", param="label_b")
        values: dict[str, float] = {}
        curves: dict[str, list[list[float]]] = {}
        for label, model in ((params.label_a, a), (params.label_b, b)):
            for metric in params.metrics:
                points = [(float(i), float(h[metric])) for i, h in enumerate(model.history, start=1)
                          if metric in h and h[metric] is not None and math.isfinite(h[metric])]
                name = f"{label}_{metric}"
                for step, value in points:
                    ctx.log_metric(name, value, step=int(step), epoch=int(step))
                curves[name] = [list(p) for p in points]
                if points:
                    values[name] = points[-1][1]
        for metric in params.metrics:
            series = {label: curves[f"{label}_{metric}"] for label in (params.label_a, params.label_b)}
            png = line_plot_png({k: [tuple(p) for p in v] for k, v in series.items()}, f"{metric} by epoch")
            atomic_write_bytes(ctx.scratch / f"{metric}.png", png)
            ctx.preview(f"compare_{metric}", png_preview(png, metric))
        summary = ", ".join(f"{k} {v:.3f}" for k, v in values.items())
        ctx.log(f"last epoch: {summary}")
        return {"comparison": Metrics(values, {"curves": curves})}
