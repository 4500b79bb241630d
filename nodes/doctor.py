"""The dataset doctor: is the data sound before any training?"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import Field

from nodeflow.files import atomic_write_text
from nodeflow.node import Node, NodeParams, ParamProblem, Port, RunContext
from nodes.checks import check_fit, check_images, engine_errors, hooks
from nodes.engine.models import summarize
from nodes.ports import IMAGES, METRICS, MODEL, ImageSet, Metrics, ModelValue


class DatasetDoctor(Node):
    """Checks a dataset before training: class balance; unreadable, tiny and extreme-aspect
    images; exact duplicates (same bytes, same class); label conflicts (same bytes under two
    classes); near duplicates across train/validation/test (leakage), by cosine similarity of a
    frozen backbone's CNN codes; and suspected label errors, where a linear probe's out-of-fold
    prediction confidently names another class. Without a model only the balance, file and
    same-bytes checks run. Findings are grouped by kind."""

    type = "data.doctor"
    title = "Dataset doctor"
    category = "Data"
    inputs = (Port("data", IMAGES, "Formatted images (augmentation is not applied)"),
              Port("model", MODEL, "Optional: a frozen feature extractor (input layer + backbone) for the "
                                   "near-duplicate and label checks", optional=True))
    outputs = (Port("findings", METRICS, "Counts per finding kind, and the files of each finding"),)

    class Params(NodeParams):
        pool: Literal["avg", "flatten"] = Field("avg", description=(
            "How feature maps become codes: global average pool, or flatten (keeps the layout; larger)"))
        near_threshold: float = Field(0.95, gt=0, le=1, description=(
            "Cosine similarity of (centred) codes at or above which two images count as near duplicates"))
        near_scope: Literal["across_splits", "all"] = Field("across_splits", description=(
            "Near duplicates between splits only (leakage), or within a split too"))
        folds: int = Field(5, ge=2, le=20, description="Folds of the out-of-fold linear probe")
        C: float = Field(0.1, gt=0, le=1e6, description="Inverse regularisation of the linear probe")
        min_confidence: float = Field(0.6, ge=0, le=1, description=(
            "A suspected label error needs at least this out-of-fold probability for the other class"))
        min_side: int = Field(32, ge=1, le=10_000, description="Images with a shorter side below this are 'tiny'")
        max_aspect: float = Field(4.0, ge=1, le=1000, description="Longer/shorter side above this is 'extreme'")
        batch_size: int = Field(64, ge=1, le=4096, description="Images per forward pass")

    @classmethod
    def infer(cls, params: Params, inputs, node_id: str | None = None):
        model, data = inputs.get("model") or {}, inputs.get("data") or {}
        if model:
            check_fit({k: v for k, v in model.items() if k in ("input_shape", "input_node")},
                      {k: v for k, v in data.items() if k != "classes"})
        return {}

    def run(self, ctx: RunContext, params: Params, data: ImageSet, model: ModelValue | None = None) -> dict:
        import torch

        from nodes.engine.doctor import (Entry, class_balance, entries, exact_duplicates, file_problems,
                                         label_conflicts, label_suspects, near_duplicates, out_of_fold_probs,
                                         skipped_files)
        from nodes.engine.inference import extract_codes

        items = entries(data)
        if not items:
            raise ParamProblem("the dataset has no images", port="data")
        balance = class_balance(data)
        findings = file_problems(items, params.min_side, params.max_aspect)
        outside = [Entry(path, "skipped", -1) for path in skipped_files(data)]
        if outside:  # the dataset node dropped unreadable files: name them too
            findings["unreadable"] += file_problems(outside, params.min_side, params.max_aspect)["unreadable"]
        ctx.progress(1, 4)
        bad = {f["file"] for f in findings["unreadable"]}
        readable = [e for e in items if e.file not in bad]
        findings["exact_duplicates"] = exact_duplicates(readable)
        findings["label_conflicts"] = label_conflicts(readable, data.classes)
        ctx.progress(2, 4)
        checked = ["balance", "files", "exact_duplicates", "label_conflicts"]
        if model is not None:
            check_images(model, data)
            if summarize(model.spec)["output_shape"][0] == "auto":
                raise ParamProblem("the model ends in a dense layer with units 'auto'; feed the feature extractor "
                                   "(input layer + backbone) without a classifier", port="model")
            clean = data.with_(augment=(), splits={s: tuple(i for i in data.split(s) if i[0] not in bad)
                                                   for s in data.splits})
            with engine_errors(ctx, params.batch_size):
                codes = extract_codes(model, clean, params.pool, params.batch_size, hooks(ctx), ctx.device)
            order = [e for s in clean.splits if clean.split(s) for e in readable if e.split == s]
            x = torch.cat([codes.splits[s][0] for s in clean.splits if clean.split(s)])
            y = torch.cat([codes.splits[s][1] for s in clean.splits if clean.split(s)])
            skip = {frozenset((a, b)) for kind in ("exact_duplicates", "label_conflicts")
                    for g in findings[kind] for a in g["files"] for b in g["files"]}
            findings["near_duplicates"] = near_duplicates(x, order, params.near_threshold,
                                                          params.near_scope == "across_splits", skip)
            ctx.progress(3, 4)
            if len(data.classes) > 1 and len(y) >= 2 * params.folds:
                probs = out_of_fold_probs(x, y, len(data.classes), params.folds, params.C)
                findings["label_suspects"] = label_suspects(probs, y, order, data.classes, params.min_confidence)
                checked.append("label_suspects")
            checked.append("near_duplicates")
        else:
            ctx.log("no model connected: near-duplicate and label checks skipped")
        ctx.progress(4, 4)
        values = {f"{kind}_count": float(len(found)) for kind, found in findings.items()}
        values["images"] = float(len(items))
        values["leaked_exact_duplicates_count"] = float(sum(g["across_splits"] for g in findings["exact_duplicates"]))
        shares = [row["share"] for row in balance]
        if min(shares) > 0:  # an empty class shows in the balance table; a ratio would be infinite
            values["imbalance_ratio"] = max(shares) / min(shares)
        for name, value in values.items():
            ctx.log_metric(name, value)
        ctx.log("; ".join(f"{kind}: {len(found)}" for kind, found in findings.items()))
        ctx.table("class_balance", balance)
        for kind, found in findings.items():  # the run report lists each finding, grouped by kind
            ctx.table(kind, found)
        ctx.preview("metrics_table", {"columns": ["finding", "count"],
                                      "rows": [{"finding": k, "count": len(v)} for k, v in findings.items()]})
        folder = ctx.workspace / "doctor" / ctx.node_id
        folder.mkdir(parents=True, exist_ok=True)
        tables = {"class_balance": balance, "findings": findings, "checked": checked,
                  "report": str(folder / "findings.json")}
        atomic_write_text(folder / "findings.json", json.dumps({"values": values, "tables": tables}, indent=1))
        ctx.log(f"findings by kind in {folder / 'findings.json'}")
        return {"findings": Metrics(values, tables)}

    def estimate(self, ctx: RunContext, params: Params, data: ImageSet, model: ModelValue | None = None) -> dict | None:
        """With a model: a profiled pass of it over every split (the codes the checks compare);
        without one the doctor only reads files, which is quick."""
        if model is None:
            return None
        from nodes.engine.estimate import estimate_pass
        from nodes.engine.inference import extractor_spec
        from nodes.engine.loop import resolve_spec

        extractor = model.with_(spec=extractor_spec(resolve_spec(model.spec, len(data.classes)), params.pool))
        with engine_errors(ctx, params.batch_size):
            found = estimate_pass(extractor, data.with_(augment=()), list(data.splits), params.batch_size,
                                  ctx.workspace, ctx.device, should_stop=lambda: ctx.interrupted).to_json()
        found["notes"].append("plus reading every file once for the file and duplicate checks")
        return found
