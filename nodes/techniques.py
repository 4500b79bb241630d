"""Technique nodes: the learning-rate finder, CNN codes + a linear classifier (the feature-extractor
scenario), a transfer-strategy recommendation, and a chart comparing two training runs."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from nodeflow.graph import atomic_write_bytes, atomic_write_text
from nodeflow.node import Node, NodeParams, ParamProblem, Port, PortType, RunContext
from nodes import _techniques as tech
from nodes._images import loader
from nodes._models import summarize
from nodes._torch import resolve_device, seed_everything
from nodes._training import apply_freezing, cpu_state, forward, frozen_prefix, network, resolve_spec, set_mode
from nodes._values import IMAGES, METRICS, MODEL, TRAINED_MODEL, ImageSet, Metrics, ModelCodec, ModelValue
from nodes.training import check_fit, data_facts, value_facts

LABEL_PATTERN = r"^[A-Za-z][A-Za-z0-9_]{0,31}$"


def _png_preview(png: bytes, label: str) -> dict[str, Any]:
    return {"images": [{"src": "data:image/png;base64," + base64.b64encode(png).decode("ascii"), "label": label}]}


def _check_images(model: ModelValue, data: ImageSet) -> None:
    """The images must be formatted to the size the model takes (classes do not matter yet)."""
    facts = {k: v for k, v in value_facts(model).items() if k in ("input_shape", "input_node")}
    check_fit(facts, {k: v for k, v in data_facts(data).items() if k != "classes"})


# -- learning-rate finder ---------------------------------------------------------------------------


class LRFinder(Node):
    """Learning-rate range test (fastai's lr_find): trains on mini-batches while raising the LR
    exponentially, until the loss blows up. Suggests an LR one order of magnitude below the one
    with the lowest (smoothed) loss; set it as the trainer's lr. The curve is drawn in the editor
    and written as lr_finder.csv / lr_finder.png beside the node's cached outputs."""

    type = "train.lr_finder"
    title = "Learning-rate finder"
    category = "Training"
    inputs = (Port("model", MODEL, "The model you are about to train"),
              Port("data", IMAGES, "Formatted images (the training split is used)"))
    outputs = (Port("result", METRICS, "suggested_lr, min_loss_lr and the loss-vs-LR curve"),)

    class Params(NodeParams):
        start_lr: float = Field(1e-7, gt=0, le=1, description="First learning rate tried")
        end_lr: float = Field(10.0, gt=0, le=1000, description="Last learning rate tried (if the loss has not blown up)")
        steps: int = Field(100, ge=5, le=10_000, description="Mini-batches in the sweep")
        diverge: float = Field(4.0, gt=1, le=100, description=(
            "Stop when the smoothed loss exceeds this many times its minimum"))
        smoothing: float = Field(0.9, ge=0, lt=1, description="Exponential smoothing of the loss (0: none)")
        optimizer: Literal["sgd", "adam", "adamw", "rmsprop", "adabound"] = Field(
            "adam", description="Optimiser to sweep (use the trainer's)")
        momentum: float = Field(0.9, ge=0, lt=1, description="Momentum (SGD only)")
        weight_decay: float = Field(0.0, ge=0, le=1, description="L2 weight decay")
        head_lr_mult: float = Field(1.0, gt=0, le=1000, description="Head LR multiplier, as in the trainer")
        batch_size: int = Field(20, ge=1, le=4096, description="Images per step")
        seed: int = Field(0, ge=0, description="Seed of weight init and data order")

    @classmethod
    def infer(cls, params: Params, inputs, node_id: str | None = None):
        if params.end_lr <= params.start_lr:
            raise ParamProblem("end_lr must be larger than start_lr", param="end_lr")
        check_fit(inputs.get("model") or {}, inputs.get("data") or {})
        return {}

    def run(self, ctx: RunContext, params: Params, model: ModelValue, data: ImageSet) -> dict:
        if params.end_lr <= params.start_lr:
            raise ParamProblem("end_lr must be larger than start_lr", param="end_lr")
        check_fit(value_facts(model), data_facts(data))
        device = resolve_device(ctx.device, mixed_precision=False)
        generator = seed_everything(params.seed)
        net = network(model, len(data.classes))
        apply_freezing(net, model.frozen)
        net = device.prepare(net)
        prefix = frozen_prefix(net, model.frozen)
        groups = tech.layerwise_groups(net, model, 1.0, params.head_lr_mult)
        if not groups:
            raise ParamProblem("every layer of the model is frozen: nothing to train", port="model")
        for group in groups:
            group["mult"] = group["lr"]
        optimizer = tech.make_optimizer(params.optimizer, groups, params.momentum, params.weight_decay)
        batches = loader(data, "train", params.batch_size, True, generator)
        loss_fn = torch.nn.CrossEntropyLoss()
        lrs = tech.lr_sweep(params.start_lr, params.end_lr, params.steps)
        tried: list[float] = []
        raw: list[float] = []
        smooth: list[float] = []
        best = math.inf
        iterator = iter(batches)
        set_mode(net, True, model.frozen, model.bn_frozen)
        for i, lr in enumerate(lrs):
            try:
                images, labels = next(iterator)
            except StopIteration:
                iterator = iter(batches)
                images, labels = next(iterator)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["mult"]
            images, labels = device.batch(images), labels.to(device.torch)
            loss = loss_fn(forward(net, images, prefix).float(), labels)
            value = loss.item()
            if not math.isfinite(value):
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            tried.append(lr)
            raw.append(value)
            smooth = tech.smoothed(raw, params.smoothing)
            ctx.log_metric("lr_finder_loss", smooth[-1], step=i, lr=lr)
            ctx.progress(i + 1, len(lrs))
            best = min(best, smooth[-1])
            if i >= 3 and smooth[-1] > params.diverge * best:
                ctx.log(f"loss blew up at lr {lr:.3g}: stopped after {i + 1} steps")
                break
        if len(tried) < 2:
            raise ParamProblem(f"the loss was not finite from the start (lr {params.start_lr:g}); lower start_lr",
                               param="start_lr")
        suggested, at_min = tech.suggest_lr(tried, smooth)
        ctx.log(f"lowest loss at lr {at_min:.3g}; suggested lr {suggested:.3g} (one order of magnitude lower)")
        ctx.log_metric("suggested_lr", suggested)
        ctx.log_metric("min_loss_lr", at_min)
        self._write_files(ctx, tried, raw, smooth, suggested)
        curve = {"lr": tried, "loss": raw, "smoothed": smooth}
        return {"result": Metrics({"suggested_lr": suggested, "min_loss_lr": at_min, "min_loss": min(smooth),
                                   "steps": float(len(tried))}, {"curve": curve})}

    @staticmethod
    def _write_files(ctx: RunContext, lrs: list[float], raw: list[float], smooth: list[float], suggested: float) -> None:
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(["lr", "loss", "smoothed_loss"])
        writer.writerows(zip(lrs, raw, smooth))
        atomic_write_text(ctx.scratch / "lr_finder.csv", text.getvalue())
        png = tech.line_plot_png({"smoothed loss": list(zip(lrs, smooth))}, "loss vs learning rate (log)",
                                 log_x=True, marker_x=suggested)
        atomic_write_bytes(ctx.scratch / "lr_finder.png", png)
        ctx.preview("lr_finder_plot", _png_preview(png, f"suggested lr {suggested:.2g}"))


# -- CNN codes + linear classifier ------------------------------------------------------------------


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


CODES = PortType("CNNCodes", color="#26a69a", codec=CodesCodec(),
                 description="Features of every image, computed once by a frozen network, with their labels")


class CNNCodes(Node):
    """Runs a frozen network (e.g. an ImageNet backbone) once over every split and keeps its
    features, "CNN codes". A classifier trained on them (linear classifier node) learns in
    seconds, far faster than training through the backbone: the small-data, similar-domain
    scenario. Feature maps are pooled to one vector per image."""

    type = "features.cnn_codes"
    title = "CNN codes (features)"
    category = "Features"
    inputs = (Port("model", MODEL, "A feature extractor: input layer + backbone (its weights are used as they are)"),
              Port("data", IMAGES, "Formatted images; augmentation is not applied"))
    outputs = (Port("codes", CODES, "One feature vector per image, per split"),)

    class Params(NodeParams):
        pool: Literal["avg", "max", "flatten"] = Field("avg", description=(
            "How feature maps become a vector: global average / max pool, or flatten"))
        batch_size: int = Field(64, ge=1, le=4096, description="Images per forward pass")

    @classmethod
    def infer(cls, params: Params, inputs, node_id: str | None = None):
        model, data = inputs.get("model") or {}, inputs.get("data") or {}
        check_fit({k: v for k, v in model.items() if k in ("input_shape", "input_node")},
                  {k: v for k, v in data.items() if k != "classes"})
        out = model.get("output_shape")
        if out and out[0] == "auto":
            raise ParamProblem("the model ends in a dense layer with units 'auto'; feed the feature extractor "
                               "(input layer + backbone) without a classifier", port="model")
        return {}

    @staticmethod
    def extractor_spec(spec: dict[str, Any], pool: str) -> dict[str, Any]:
        out = summarize(spec)["output_shape"]
        if len(out) == 1:
            return spec
        layer = ({"kind": "flatten", "name": "codes_flatten"} if pool == "flatten"
                 else {"kind": "global_pool", "name": "codes_pool", "mode": pool})
        return {**spec, "layers": [*spec["layers"], layer]}

    def run(self, ctx: RunContext, params: Params, model: ModelValue, data: ImageSet) -> dict:
        _check_images(model, data)
        if summarize(model.spec)["output_shape"][0] == "auto":
            raise ParamProblem("the model ends in a dense layer with units 'auto'; feed the feature extractor "
                               "without a classifier", port="model")
        device = resolve_device(ctx.device)
        spec = self.extractor_spec(resolve_spec(model.spec, len(data.classes)), params.pool)
        extractor = model.with_(spec=spec)
        net = device.prepare(network(extractor, len(data.classes))).eval()
        started = time.perf_counter()
        splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        total = sum(len(data.split(s)) for s in data.splits)
        done = 0
        with torch.no_grad():
            for split in data.splits:
                if not data.split(split):
                    continue
                xs, ys = [], []
                for images, labels in loader(data, split, params.batch_size, False, pin_memory=device.is_cuda):
                    with device.autocast():
                        xs.append(net(device.batch(images)).float().flatten(1).cpu())
                    ys.append(labels)
                    done += len(labels)
                    ctx.progress(done, total)
                splits[split] = (torch.cat(xs), torch.cat(ys).long())
        seconds = time.perf_counter() - started
        state = cpu_state(net)
        names = [b["name"] for b in summarize(spec)["blocks"]]
        frozen_extractor = extractor.with_(state=state, frozen=tuple(names), classes=data.classes,
                                           format=data.format, history=())
        codes = Codes(frozen_extractor, data.classes, splits)
        ctx.log(f"{codes.dim}-dimensional codes of {done} images in {seconds:.1f} s")
        ctx.log_metric("feature_dim", codes.dim)
        ctx.log_metric("images", done)
        return {"codes": codes}


def fit_linear(x: torch.Tensor, y: torch.Tensor, num_classes: int, method: str, c: float, max_iter: int,
               standardize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """A linear classifier on features, (weight K×D, bias K), fitted by full-batch L-BFGS.

    logistic_regression minimises mean cross-entropy, linear_svm the one-vs-rest squared hinge
    (LinearSVC's default loss); both plus ‖W‖²/(2·C·n), i.e. scikit-learn's C. Standardisation is
    folded back into the weights, so the layer takes raw features.
    """
    x = x.double()
    n, d = x.shape
    mean = x.mean(0) if standardize else torch.zeros(d, dtype=x.dtype)
    std = x.std(0, unbiased=False).clamp_min(1e-6) if standardize else torch.ones(d, dtype=x.dtype)
    z = (x - mean) / std
    weight = torch.zeros(num_classes, d, dtype=x.dtype, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=x.dtype, requires_grad=True)
    signs = F.one_hot(y, num_classes).double() * 2 - 1
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=max_iter, history_size=20,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure():
        optimizer.zero_grad()
        logits = z @ weight.T + bias
        if method == "linear_svm":
            data_loss = (1 - signs * logits).clamp_min(0).pow(2).sum(1).mean()
        else:
            data_loss = F.cross_entropy(logits, y)
        loss = data_loss + weight.pow(2).sum() / (2 * c * n)
        loss.backward()
        return loss

    optimizer.step(closure)
    w = (weight.detach() / std).float()
    b = (bias.detach() - (weight.detach() / std) @ mean).float()
    return w, b


class LinearClassifier(Node):
    """Trains a linear classifier (logistic regression or a linear SVM) on CNN codes and stacks it
    on the extractor, giving an ordinary trained model for evaluate, export and predict."""

    type = "features.linear_classifier"
    title = "Linear classifier (on CNN codes)"
    category = "Features"
    inputs = (Port("codes", CODES, "Features from the CNN codes node"),)
    outputs = (Port("model", TRAINED_MODEL, "Extractor + linear layer, with train/validation accuracy as history"),)

    class Params(NodeParams):
        method: Literal["logistic_regression", "linear_svm"] = Field("logistic_regression", description=(
            "Softmax regression (calibrated probabilities) or one-vs-rest linear SVM (squared hinge)"))
        C: float = Field(1.0, gt=0, le=1e6, description="Inverse regularisation strength, as in scikit-learn")
        max_iter: int = Field(200, ge=1, le=100_000, description="L-BFGS iterations")
        standardize: bool = Field(True, description="Scale each feature to zero mean, unit variance (on the training split)")
        name: str = Field("linear", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$", description="Name of the new layer")

    def run(self, ctx: RunContext, params: Params, codes: Codes) -> dict:
        if "train" not in codes.splits:
            raise ParamProblem("the codes have no training split", port="codes")
        k = len(codes.classes)
        x, y = codes.splits["train"]
        started = time.perf_counter()
        weight, bias = fit_linear(x, y, k, params.method, params.C, params.max_iter, params.standardize)
        seconds = time.perf_counter() - started
        record: dict[str, Any] = {"epoch": 1, "lr": 0.0}
        for split, prefix in (("train", "train"), ("validation", "val")):
            if split in codes.splits:
                xs, ys = codes.splits[split]
                logits = xs @ weight.T + bias
                record[f"{prefix}_loss"] = F.cross_entropy(logits, ys).item()
                record[f"{prefix}_accuracy"] = (logits.argmax(1) == ys).float().mean().item()
                ctx.log_metric(f"{prefix}_accuracy", record[f"{prefix}_accuracy"], step=1)
            else:
                record[f"{prefix}_loss"] = record[f"{prefix}_accuracy"] = math.nan
        ctx.log(f"{params.method} on {len(y)} × {x.shape[1]} codes in {seconds:.2f} s: train accuracy "
                f"{record['train_accuracy']:.3f}, validation accuracy {record['val_accuracy']:.3f}")
        ctx.log_metric("fit_seconds", seconds)
        extractor = codes.extractor
        taken = {layer["name"] for layer in extractor.spec["layers"]}
        name = params.name
        while name in taken:
            name += "_"
        layer = {"kind": "dense", "name": name, "units": k, "activation": "none", "dropout": 0.0}
        spec = {**extractor.spec, "layers": [*extractor.spec["layers"], layer]}
        state = {**extractor.state, f"{name}.0.weight": weight, f"{name}.0.bias": bias}
        model = ModelValue(spec=spec, frozen=extractor.frozen, state=state, classes=codes.classes,
                           format=extractor.format, history=(record,))
        return {"model": model}


# -- which strategy -----------------------------------------------------------------------------------

STRATEGIES = {
    ("small", "similar"): (
        "feature_extraction",
        "little data from a domain like the backbone's: its features already fit, and training more than a "
        "classifier on them would over-fit",
        "CNN codes + linear classifier, or keep the backbone frozen (feature_extractor: true) and train only a new head"),
    ("small", "different"): (
        "finetune_top",
        "little data from another domain: the early blocks' generic features (edges, textures) still help, the "
        "late ones are too specific, and there is too little data to retrain everything",
        "train a new head on the frozen backbone, then unfreeze the last block(s) with fine-tune and a low lr"),
    ("large", "similar"): (
        "finetune_top",
        "plenty of data from a similar domain: fine-tuning the top blocks adapts the features without much risk "
        "of over-fitting, and the early blocks need no change",
        "train the new head first, then fine-tune the last blocks (discriminative lrs, e.g. block_lrs)"),
    ("large", "different"): (
        "finetune_all",
        "plenty of data from another domain: every block's features need to adapt, and there is enough data to "
        "do so (pretrained weights still start better than random)",
        "train the head, then unfreeze all blocks (fine-tune with every block named) with layer-wise lrs"),
}


def recommend(images_per_class: float, similarity: str, small_per_class: int,
              blocks: list[str] | None = None) -> dict[str, str]:
    """The transfer-learning strategy for one of the four scenarios (target set small or large ×
    similar or different to the backbone's source data), with the reason and the nodeflow recipe."""
    size = "small" if images_per_class < small_per_class else "large"
    strategy, why, how = STRATEGIES[(size, similarity)]
    if blocks and strategy == "finetune_top":
        how += f" (e.g. finetune.unfreeze: [{blocks[-1]}])"
    elif blocks and strategy == "finetune_all":
        how += f" (finetune.unfreeze: [{', '.join(blocks)}])"
    return {"strategy": strategy, "scenario": f"{size} dataset, {similarity} domain",
            "why": f"{images_per_class:.0f} training images per class ({size}: threshold {small_per_class}); {why}",
            "how": how}


class RecommendStrategy(Node):
    """Says which transfer-learning strategy suits a dataset and backbone: feature extraction,
    fine-tuning the top blocks, or fine-tuning all, from the training split's size and how similar
    you say the images are to the backbone's training data (ImageNet photos for 'imagenet')."""

    type = "train.recommend"
    title = "Recommend a strategy"
    category = "Training"
    inputs = (Port("data", IMAGES, "The target dataset"),
              Port("model", MODEL, "Optional: the backbone, to name the blocks to unfreeze", optional=True))
    outputs = (Port("recommendation", METRICS, "The strategy, scenario and reason"),)

    class Params(NodeParams):
        similarity: Literal["similar", "different"] = Field("similar", description=(
            "Are your images like the backbone's source data (e.g. everyday photos for ImageNet)?"))
        small_per_class: int = Field(1000, ge=1, le=10_000_000, description=(
            "Fewer training images per class than this counts as a small dataset"))

    def run(self, ctx: RunContext, params: Params, data: ImageSet, model: ModelValue | None = None) -> dict:
        train = len(data.split("train"))
        per_class = train / max(1, len(data.classes))
        blocks = None
        if model is not None:
            blocks = [b["name"] for b in summarize(model.spec)["blocks"] if b["kind"] == "backbone"] or None
        advice = recommend(per_class, params.similarity, params.small_per_class, blocks)
        ctx.log(f"{advice['strategy']}: {advice['why']}. How: {advice['how']}")
        ctx.preview("metrics_table", {"columns": ["item", "value"],
                                      "rows": [{"item": k, "value": v} for k, v in advice.items()]})
        ctx.log_metric("images_per_class", per_class)
        return {"recommendation": Metrics({"train_images": float(train), "images_per_class": per_class,
                                           "small": float(per_class < params.small_per_class)},
                                          {"recommendation": advice})}


# -- comparing runs -----------------------------------------------------------------------------------


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
            png = tech.line_plot_png({k: [tuple(p) for p in v] for k, v in series.items()}, f"{metric} by epoch")
            atomic_write_bytes(ctx.scratch / f"{metric}.png", png)
            ctx.preview(f"compare_{metric}", _png_preview(png, metric))
        summary = ", ".join(f"{k} {v:.3f}" for k, v in values.items())
        ctx.log(f"last epoch: {summary}")
        return {"comparison": Metrics(values, {"curves": curves})}
