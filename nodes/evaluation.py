"""Evaluate a trained model, export it to files, and classify new images with it."""

from __future__ import annotations

import importlib.util
import io
import json
import warnings
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from nodeflow.graph import atomic_write_bytes, atomic_write_text
from nodeflow.node import Node, NodeParams, ParamProblem, Port, RunContext
from nodeflow.paths import FolderPath
from nodes._images import LabelledImages, image_files, make_transform
from nodes._features import prepare_evaluation
from nodes._torch import resolve_device
from nodes._techniques import TopK
from nodes._training import evaluate, network
from nodes._values import FILES, IMAGES, METRICS, PREDICTIONS, TRAINED_MODEL, FileList, ImageSet, Metrics, ModelValue
from nodes.training import check_fit, data_facts, value_facts


def scores(pred: torch.Tensor, true: torch.Tensor, classes: tuple[str, ...], beta: float) -> Metrics:
    """Accuracy, macro precision / recall / F-beta, the confusion matrix and a per-class table."""
    k = len(classes)
    matrix = torch.bincount(true * k + pred, minlength=k * k).view(k, k)
    tp = matrix.diag().double()
    predicted, actual = matrix.sum(0).double(), matrix.sum(1).double()
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(actual > 0, tp / actual.clamp(min=1), torch.zeros_like(tp))
    b2 = beta * beta
    denom = b2 * precision + recall
    fbeta = torch.where(denom > 0, (1 + b2) * precision * recall / denom.clamp(min=1e-12), torch.zeros_like(tp))
    rows = [{"class": c, "precision": precision[i].item(), "recall": recall[i].item(), "f_beta": fbeta[i].item(),
             "support": int(actual[i].item())} for i, c in enumerate(classes)]
    values = {"accuracy": (tp.sum() / max(len(true), 1)).item(), "precision": precision.mean().item(),
              "recall": recall.mean().item(), "f_beta": fbeta.mean().item(), "samples": float(len(true))}
    return Metrics(values, {"confusion_matrix": {"classes": list(classes), "matrix": matrix.tolist()},
                            "per_class": rows, "beta": beta})


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

    def run(self, ctx: RunContext, params: Params, model: ModelValue, data: ImageSet) -> dict:
        check_fit(value_facts(model), data_facts(data))
        if not data.split(params.split):
            raise ParamProblem(f"the data has no '{params.split}' images (splits: {data.counts()})", param="split")
        device = resolve_device(ctx.device)
        net = device.prepare(network(model, len(model.classes)))
        net, batches = prepare_evaluation(ctx, net, model, data, params.split, device, params.batch_size)
        with TopK(net, params.top_k) as top:
            loss, _, pred, true = evaluate(net, batches, torch.nn.CrossEntropyLoss(), device)
        metrics = scores(pred, true, model.classes, params.beta)
        if 1 < params.top_k < len(model.classes):
            metrics.values[f"top{params.top_k}_accuracy"] = top.accuracy(true)
        for name, value in metrics.values.items():
            ctx.log_metric(name, value)
        ctx.log_metric("loss", loss)
        ctx.log(f"{params.split}: accuracy {metrics.values['accuracy']:.3f} on {len(true)} images")
        ctx.preview("confusion_matrix", metrics.tables["confusion_matrix"])
        ctx.preview("metrics_table", {"columns": ["class", "precision", "recall", "f_beta", "support"],
                                      "rows": metrics.tables["per_class"]})
        return {"metrics": metrics}


class Export(Node):
    """Writes a trained model to files: safetensors weights with a JSON description (reloadable as
    backbone weights), TorchScript, and ONNX."""

    type = "eval.export"
    title = "Export model"
    category = "Evaluate"
    inputs = (Port("model", TRAINED_MODEL),)
    outputs = (Port("files", FILES, "Paths of the written files by format"),)

    class Params(NodeParams):
        folder: FolderPath = Field("", description="Where to write (empty: exports/<node id> in the workspace)")
        name: str = Field("model", pattern=r"^[A-Za-z0-9_.\-]{1,100}$", description="File name without extension")
        formats: list[Literal["safetensors", "torchscript", "onnx"]] = Field(
            default_factory=lambda: ["safetensors"], min_length=1, description="Which files to write")

    def run(self, ctx: RunContext, params: Params, model: ModelValue) -> dict:
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
        from nodes._images import tree_fingerprint

        return tree_fingerprint(Path(params.folder)) if params.folder else "no-folder"

    @classmethod
    def infer(cls, params: Params, inputs, node_id: str | None = None):
        if not params.folder:
            raise ParamProblem("set folder to a folder of images", param="folder")
        return {}

    def run(self, ctx: RunContext, params: Params, model: ModelValue) -> dict:
        folder = ctx.resolve_path(params.folder)
        if not folder.is_dir():
            raise ParamProblem(f"folder '{folder}' does not exist", param="folder")
        paths = [str(p) for p in image_files(folder)]
        device = resolve_device(ctx.device)
        net = device.prepare(network(model, len(model.classes))).eval()
        batches = torch.utils.data.DataLoader(LabelledImages([(p, -1) for p in paths], make_transform(model.format)),
                                              batch_size=params.batch_size)
        rows = []
        with torch.inference_mode():
            for i, (images, _) in enumerate(batches):
                with device.autocast():
                    probs = net(device.batch(images)).float().softmax(1).cpu()
                confidence, label = probs.max(1)
                start = i * params.batch_size
                rows += [{"file": paths[start + j], "label": model.classes[int(label[j])],
                          "confidence": float(confidence[j])} for j in range(len(label))]
                ctx.progress(start + len(label), len(paths))
        ctx.log(f"classified {len(rows)} images")
        ctx.preview("metrics_table", {"columns": ["file", "label", "confidence"], "rows": rows[:50]})
        return {"predictions": rows}
