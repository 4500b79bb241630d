"""Feature nodes: CNN codes (a frozen network's features of every image, computed once) and a
linear classifier trained on them (the feature-extractor scenario)."""

from __future__ import annotations

import math
import time
from typing import Any, Literal

from pydantic import Field

from nodeflow.node import Node, NodeParams, ParamProblem, Port, RunContext
from nodes.checks import check_fit, check_images, engine_errors, hooks
from nodes.engine.models import summarize
from nodes.ports import CODES, IMAGES, MODEL, TRAINED_MODEL, Codes, ImageSet, ModelValue


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

    def run(self, ctx: RunContext, params: Params, model: ModelValue, data: ImageSet) -> dict:
        from nodes.engine.inference import extract_codes

        check_images(model, data)
        if summarize(model.spec)["output_shape"][0] == "auto":
            raise ParamProblem("the model ends in a dense layer with units 'auto'; feed the feature extractor "
                               "without a classifier", port="model")
        started = time.perf_counter()
        with engine_errors(ctx, params.batch_size):
            codes = extract_codes(model, data, params.pool, params.batch_size, hooks(ctx), ctx.device)
        seconds = time.perf_counter() - started
        done = sum(len(y) for _, y in codes.splits.values())
        ctx.log(f"{codes.dim}-dimensional codes of {done} images in {seconds:.1f} s")
        ctx.log_metric("feature_dim", codes.dim)
        ctx.log_metric("images", done)
        return {"codes": codes}

    def estimate(self, ctx: RunContext, params: Params, model: ModelValue, data: ImageSet) -> dict:
        """One profiled pass of the extractor (pooled as ``run`` pools it) over every split."""
        from nodes.engine.estimate import estimate_pass
        from nodes.engine.inference import extractor_spec
        from nodes.engine.loop import resolve_spec

        extractor = model.with_(spec=extractor_spec(resolve_spec(model.spec, len(data.classes)), params.pool))
        with engine_errors(ctx, params.batch_size):
            return estimate_pass(extractor, data, list(data.splits), params.batch_size, ctx.workspace, ctx.device,
                                 should_stop=lambda: ctx.interrupted).to_json()


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

    @classmethod
    def predictor(cls, outputs: dict, device: str = "cpu"):
        """The trained model kept loaded to classify pictures one at a time (the Try it tab)."""
        from nodes.engine.trying import Predictor

        return Predictor(outputs["model"], device)

    def run(self, ctx: RunContext, params: Params, codes: Codes) -> dict:
        import torch.nn.functional as F

        from nodes.engine.linear import fit_linear

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
