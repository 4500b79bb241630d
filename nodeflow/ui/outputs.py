"""What a node produced, beside the form: metric curves, a metrics table, a confusion matrix and
sample images. Redrawn only when the node's snapshot actually changed."""

from __future__ import annotations

import json
from typing import Any

from nicegui import ui

CHART_HEIGHT = "h-56"
#: series whose points carry an ``lr`` (the learning-rate finder's) are drawn against it, log scale
LR_CHART = "Loss vs learning rate"


def group_series(series: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Split metric series into charts: loss, accuracy and everything else."""
    groups: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for name, points in series.items():
        low = name.lower()
        if len(points) < 2 and not low.startswith(("train_", "val_")):
            continue  # a one-off number (image counts, parameter count): the metrics table has it
        if points and points[0].get("lr") is not None:
            title = LR_CHART
        elif low.startswith("batch"):
            title = "Per batch"
        else:
            title = "Loss" if "loss" in low else "Accuracy" if "acc" in low else "Other metrics"
        groups.setdefault(title, {})[name] = points
    order = [LR_CHART, "Loss", "Accuracy", "Per batch", "Other metrics"]
    return {k: groups[k] for k in order if k in groups}


def _x(point: dict[str, Any]) -> float:
    """Plot by epoch when the node reports it (batch points then sit between epochs), else by step."""
    if point.get("epoch") is not None:
        return float(point["epoch"])
    return float(point.get("step") or 0)


def chart_options(title: str, series: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    by_epoch = any(p.get("epoch") is not None for pts in series.values() for p in pts)
    if title == LR_CHART:
        return lr_chart_options(series)
    return {
        "animation": False,
        "title": {"text": title, "textStyle": {"fontSize": 12}, "left": 4, "top": 0},
        "tooltip": {"trigger": "axis"},
        "legend": {"top": 0, "right": 4, "textStyle": {"fontSize": 10}},
        "grid": {"left": 44, "right": 12, "top": 30, "bottom": 28},
        "xAxis": {"type": "value", "name": "batch" if title == "Per batch" else "epoch" if by_epoch or title in
                  ("Loss", "Accuracy") else "step", "nameLocation": "middle",
                  "nameGap": 20, "minInterval": 1 if not by_epoch else 0},
        "yAxis": {"type": "value", "scale": True},
        "series": [{"name": name, "type": "line", "showSymbol": len(points) < 40, "smooth": False,
                    "sampling": "lttb", "data": [[_x(p), p["value"]] for p in points]}
                   for name, points in series.items()],
    }


def lr_chart_options(series: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Loss against the learning rate on a log axis, as an LR range test is read."""
    return {
        "animation": False,
        "title": {"text": LR_CHART, "textStyle": {"fontSize": 12}, "left": 4, "top": 0},
        "tooltip": {"trigger": "axis"},
        "grid": {"left": 44, "right": 12, "top": 30, "bottom": 28},
        "xAxis": {"type": "log", "name": "learning rate", "nameLocation": "middle", "nameGap": 20},
        "yAxis": {"type": "value", "scale": True},
        "series": [{"name": name, "type": "line", "showSymbol": False, "data": [[p["lr"], p["value"]] for p in points]}
                   for name, points in series.items()],
    }


def find_matrix(previews: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any] | None:
    for payload in previews.values():
        if isinstance(payload, dict) and isinstance(payload.get("matrix"), list):
            return payload
    return None


def find_images(previews: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    found = []
    for kind, payload in previews.items():
        images = payload.get("images") if isinstance(payload, dict) else payload if isinstance(payload, list) else None
        if images and all(isinstance(i, dict) and "src" in i for i in images):
            title = kind + (f" ({payload['split']})" if isinstance(payload, dict) and payload.get("split") else "")
            found.append((title, images))
    return found


class OutputPanel:
    """The selected node's live output. ``show`` is cheap when nothing changed."""

    def __init__(self) -> None:
        self.container = ui.column().classes("w-full gap-2 nf-output")
        self.node_id: str | None = None
        self._sig: Any = None
        self._charts: dict[str, ui.echart] = {}

    def show(self, node_id: str | None, live: dict[str, Any] | None) -> None:
        live = live or {}
        series = live.get("series") or {}
        previews = live.get("previews") or {}
        metrics = live.get("metrics") or {}
        sig = (node_id, tuple((k, len(v)) for k, v in series.items()), json.dumps(metrics, sort_keys=True, default=str),
               tuple(sorted(previews)), id(previews.get("confusion_matrix")), live.get("state"))
        if sig == self._sig:
            return
        same_layout = (self._sig is not None and self._sig[0] == node_id and self._sig[1:2] and
                       tuple(k for k, _ in self._sig[1]) == tuple(series) and self._sig[3] == sig[3]
                       and self._sig[2] == sig[2])
        self._sig = sig
        groups = group_series(series)
        if same_layout and set(groups) == set(self._charts):
            for title, chart in self._charts.items():  # only new points: update the charts in place
                chart.options.update(chart_options(title, groups[title]))
                chart.update()
            return
        self.node_id = node_id
        self.container.clear()
        self._charts = {}
        with self.container:
            if node_id is None:
                ui.label("Select a node to see its output.").classes("text-grey-7 text-sm")
                return
            if metrics:
                rows = [{"metric": k, "value": _number(v)} for k, v in metrics.items()]
                ui.table(columns=[{"name": "metric", "label": "metric", "field": "metric", "align": "left"},
                                  {"name": "value", "label": "value", "field": "value", "align": "right"}],
                         rows=rows, row_key="metric").props("dense flat bordered").classes("w-full nf-metrics")
            for title, group in groups.items():
                self._charts[title] = ui.echart(chart_options(title, group)).classes(f"w-full {CHART_HEIGHT} nf-chart")
            matrix = find_matrix(previews, metrics)
            if matrix:
                self._matrix(matrix)
            table = previews.get("metrics_table")
            if isinstance(table, dict) and table.get("columns") and isinstance(table.get("rows"), list):
                ui.table(columns=[{"name": c, "label": c, "field": c, "align": "left" if i == 0 else "right"}
                                  for i, c in enumerate(table["columns"])],
                         rows=[{c: (f"{r.get(c):.3g}" if isinstance(r.get(c), float) else r.get(c))
                                for c in table["columns"]} for r in table["rows"]],
                         row_key=table["columns"][0]).props("dense flat bordered").classes("w-full nf-class-metrics")
            for title, images in find_images(previews):
                ui.label(f"What the model sees: {title}").classes("text-subtitle2")
                with ui.element("div").classes("nf-samples grid grid-cols-4 gap-1 w-full"):
                    for image in images[:32]:
                        with ui.column().classes("gap-0 items-center"):
                            ui.image(image["src"]).classes("w-full rounded").props("fit=contain no-spinner")
                            if image.get("label") is not None:
                                ui.label(str(image["label"])).classes("text-xs text-grey-8")
            if not (metrics or groups or matrix or previews or live.get("state") == "running"):
                ui.label("No output yet: run this node (▶ on the node, or 'Run selected').") \
                    .classes("text-grey-7 text-sm")

    @staticmethod
    def _matrix(payload: dict[str, Any]) -> None:
        matrix = payload["matrix"]
        labels = [str(c) for c in (payload.get("classes") or payload.get("labels") or range(len(matrix)))]
        data = [[j, i, matrix[i][j]] for i in range(len(matrix)) for j in range(len(matrix[i]))]
        top = max((v for _, _, v in data), default=1) or 1
        ui.echart({
            "animation": False,
            "title": {"text": "Confusion matrix (rows: true, columns: predicted)", "textStyle": {"fontSize": 12}},
            "grid": {"left": 70, "right": 12, "top": 30, "bottom": 40},
            "xAxis": {"type": "category", "data": labels, "name": "predicted", "nameLocation": "middle", "nameGap": 24},
            "yAxis": {"type": "category", "data": labels, "inverse": True},
            "visualMap": {"min": 0, "max": top, "show": False, "inRange": {"color": ["#f5f7fa", "#3f51b5"]}},
            "series": [{"type": "heatmap", "data": data, "label": {"show": True}}],
        }).classes("w-full h-64 nf-confusion")


def _number(value: Any) -> str:
    if isinstance(value, (int, float)):
        if float(value).is_integer() and abs(value) >= 1000:
            return f"{int(value):,}"
        return f"{value:.4g}"
    return str(value)
