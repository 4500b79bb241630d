"""Error analysis: which images a trained model gets wrong, how badly, and where it looked."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from nodeflow.files import atomic_write_bytes, atomic_write_text
from nodeflow.node import Node, NodeParams, ParamProblem, Port, RunContext
from nodes.checks import check_fit, check_scoring, engine_errors, hooks, png_preview
from nodes.ports import IMAGES, METRICS, TRAINED_MODEL, ImageSet, Metrics, ModelValue


class ErrorAnalysis(Node):
    """Lists the misclassified images of a split, highest loss first (true class, predicted class,
    confidence), groups every image by confusion-matrix cell, and draws Grad-CAM overlays from the
    last convolutional block over the worst errors: what the network looked at when it erred.
    Overlays need the optional 'insight' extra (captum). In the editor, a click on a cell of its
    confusion matrix shows that cell's images with their overlays (:meth:`cell_gallery`)."""

    type = "eval.errors"
    title = "Error analysis"
    category = "Evaluate"
    inputs = (Port("model", TRAINED_MODEL), Port("data", IMAGES))
    outputs = (Port("errors", METRICS, "Top-N errors, confusion-cell groups and overlay files"),)
    version = 2  # confusion cells carry each image's confidence and loss, for the cell galleries

    class Params(NodeParams):
        split: Literal["test", "validation", "train"] = Field("test", description="Which split to analyse")
        top_n: int = Field(20, ge=1, le=10_000, description="How many of the worst errors to list")
        overlays: int = Field(12, ge=0, le=1000, description=(
            "Grad-CAM overlay PNGs for this many of the worst errors (0: none, no captum needed)"))
        block: str = Field("", pattern=r"^[A-Za-z0-9_]{0,64}$", description=(
            "Block whose activations Grad-CAM explains (empty: the last convolutional block)"))
        batch_size: int = Field(64, ge=1, le=4096, description="Images per forward pass")

    @classmethod
    def infer(cls, params: Params, inputs, node_id: str | None = None):
        check_fit(inputs.get("model") or {}, inputs.get("data") or {})
        return {}

    @classmethod
    def measures(cls, params: Params) -> dict[str, str]:
        return {name: params.split for name in ("samples", "errors", "error_rate", "mean_loss")}

    def run(self, ctx: RunContext, params: Params, model: ModelValue, data: ImageSet) -> dict:
        from nodes.engine.explain import (confusion_cells, error_rows, grad_cam, overlay_png, overlay_scale,
                                          score_images)

        check_scoring(model, data, params.split)
        with engine_errors(ctx, params.batch_size):
            scored = score_images(model, data, params.split, params.batch_size, hooks(ctx), ctx.device)
        rows = error_rows(scored, model.classes, params.top_n)
        cells = confusion_cells(scored, model.classes)
        samples = len(scored.files)
        wrong = int((scored.predicted != scored.labels).sum())
        folder = ctx.workspace / "errors" / ctx.node_id
        written: list[str] = []
        count = min(params.overlays, len(rows))
        if count:
            try:
                import captum  # noqa: F401
            except ImportError:
                raise ParamProblem("Grad-CAM overlays need captum: pip install 'nodeflow[insight]' (or set "
                                   "overlays to 0)", param="overlays") from None
            targets = [model.classes.index(r["predicted"]) for r in rows[:count]]
            try:
                with engine_errors(ctx, params.batch_size):
                    maps = grad_cam(model, [r["file"] for r in rows[:count]], targets, params.batch_size,
                                    hooks(ctx), params.block, ctx.device)
            except ValueError as exc:
                raise ParamProblem(str(exc), param="block") from None
            folder.mkdir(parents=True, exist_ok=True)
            scale = overlay_scale(maps.images.shape[-1])
            for rank, (r, image, heat) in enumerate(zip(rows, maps.images, maps.maps), start=1):
                stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(r["file"]).stem)[:60]
                path = folder / f"{rank:03d}_{r['true']}_as_{r['predicted']}_{stem}.png"
                png = overlay_png(image, heat, scale=scale)
                atomic_write_bytes(path, png)
                r["overlay"] = str(path)
                written.append(str(path))
                if rank <= 4:
                    ctx.preview(f"error_{rank}", png_preview(png, f"{r['true']} as {r['predicted']}"))
            ctx.log(f"Grad-CAM from block '{maps.block}': {len(written)} overlays in {folder}")
        values = {"samples": float(samples), "errors": float(wrong),
                  "error_rate": wrong / samples if samples else 0.0,
                  "mean_loss": float(scored.losses.mean()) if samples else 0.0}
        for name, value in values.items():
            ctx.log_metric(name, value)
        ctx.log(f"{params.split}: {wrong} of {samples} images misclassified")
        columns = ["file", "true", "predicted", "confidence", "loss"]
        shown = [{**r, "file": Path(r["file"]).name} for r in rows[:50]]  # the panel is narrow
        ctx.preview("metrics_table", {"columns": columns, "rows": shown})
        ctx.preview("confusion_matrix", {"matrix": confusion_matrix(cells, model.classes),
                                         "classes": list(model.classes), "gallery": True, "split": params.split})
        ctx.table("top_errors", rows, [*columns, "overlay"])
        tables = {"split": params.split, "classes": list(model.classes),
                  "top_errors": {"columns": columns, "rows": rows}, "confusion_cells": cells,
                  "overlays": {"folder": str(folder), "files": written}}
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "errors.json", json.dumps({"values": values, "tables": tables}, indent=1))
        ctx.log(f"top errors and confusion cells in {folder / 'errors.json'}")
        return {"errors": Metrics(values, tables)}

    def estimate(self, ctx: RunContext, params: Params, model: ModelValue, data: ImageSet) -> dict:
        """A profiled scoring pass over the split, plus at most ``overlays`` Grad-CAM passes."""
        from nodes.engine.estimate import estimate_pass

        with engine_errors(ctx, params.batch_size):
            return estimate_pass(model, data, [params.split], params.batch_size, ctx.workspace, ctx.device,
                                 backward_images=min(params.overlays, params.top_n),
                                 should_stop=lambda: ctx.interrupted).to_json()

    @classmethod
    def cell_gallery(cls, params: Params, outputs: dict[str, Any], input_keys: dict[str, str],
                     load_input: Callable[[str], Any], folder: Path, workspace: Path, device: str,
                     true: str, predicted: str, page: int = 1, per_page: int = 12,
                     check_files: Callable[[list[Path]], None] = lambda files: None,
                     draw: bool = True) -> dict[str, Any]:
        """One page of a confusion cell's images (true class ``true``, predicted ``predicted``),
        highest loss first, each with its Grad-CAM overlay for the predicted class. Overlays come
        from the on-disk cache in ``folder`` (keyed by the model's cache key, the file, the class and
        the block) and are drawn only when missing, so opening a cell again draws nothing; the model
        (``load_input("model")``, cache key ``input_keys["model"]``) is loaded only to draw.
        ``check_files`` is the run's confinement check (:meth:`RunContext.check_files`): the page's
        images are checked before an overlay is looked up (which hashes the image) or drawn, and a
        file that leads outside the allowed folders now refuses the page (PermissionError).
        ``draw`` False shows only the overlays drawn before (a read-only viewer's page: drawing is work
        on the machine and writes into the project). Raises KeyError for a class the model does not
        have or a page past the end."""
        from nodes.engine.explain import OverlayCache
        from nodes.engine.hooks import Hooks

        tables = outputs["errors"].tables
        known = list(tables.get("classes") or [])
        for name in (true, predicted):
            if name not in known:
                raise KeyError(f"no class '{name}' in this analysis (classes: {', '.join(known)})")
        cell = next((c for c in tables.get("confusion_cells", []) if c["true"] == true and
                     c["predicted"] == predicted), {"rows": [], "count": 0})
        members = cell.get("rows") or [{"file": f, "confidence": None, "loss": None} for f in cell.get("files", [])]
        pages = max(1, math.ceil(len(members) / per_page))
        if not 1 <= page <= pages:
            raise KeyError(f"no page {page} of cell {true} → {predicted} (pages: 1 to {pages})")
        shown = members[(page - 1) * per_page: page * per_page]
        result: dict[str, Any] = {"true": true, "predicted": predicted, "count": len(members), "page": page,
                                  "pages": pages, "per_page": per_page, "split": tables.get("split"),
                                  "block": params.block, "drawn": 0, "from_cache": 0, "note": None}
        rows = [{"rank": (page - 1) * per_page + i, "file": r["file"], "name": Path(r["file"]).name, "true": true,
                 "predicted": predicted, "confidence": r.get("confidence"), "loss": r.get("loss"), "overlay": None}
                for i, r in enumerate(shown, start=1)]
        result["rows"] = rows
        if not rows:
            return result
        try:
            import captum  # noqa: F401
        except ImportError:
            result["note"] = "Grad-CAM overlays need captum: pip install 'nodeflow[insight]'"
            return result
        cache = OverlayCache(folder)
        target = known.index(predicted)

        def confined(files: list[str]) -> None:
            try:
                check_files([Path(file) for file in files])
            except ParamProblem as exc:
                raise PermissionError(str(exc)) from None

        if not draw:
            confined([r["file"] for r in rows])
            for r in rows:
                path = cache.path(input_keys["model"], r["file"], target, params.block)
                r["overlay"] = str(path) if path.is_file() else None
            if any(r["overlay"] is None for r in rows):
                result["note"] = "some overlays are not drawn yet: they are drawn when the project's owner opens this cell"
            return result
        try:
            paths, drawn = cache.overlays(lambda: load_input("model"), input_keys["model"], [r["file"] for r in rows],
                                          [target] * len(rows), params.block, params.batch_size,
                                          Hooks(workspace=workspace), device, check=confined)
        except ValueError as exc:  # a block the model does not have
            raise ParamProblem(str(exc), param="block") from None
        for r, path in zip(rows, paths):
            r["overlay"] = str(path)
        result.update(drawn=drawn, from_cache=len(rows) - drawn)
        return result


def confusion_matrix(cells: list[dict[str, Any]], classes: tuple[str, ...] | list[str]) -> list[list[int]]:
    """Counts by (true, predicted) from the confusion cells, rows true and columns predicted."""
    index = {c: i for i, c in enumerate(classes)}
    matrix = [[0] * len(classes) for _ in classes]
    for cell in cells:
        matrix[index[cell["true"]]][index[cell["predicted"]]] = int(cell["count"])
    return matrix
