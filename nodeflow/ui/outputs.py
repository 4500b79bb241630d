"""What a node produced, beside the form: its error first when it failed, then metric curves, a
metrics table, a confusion matrix and sample images, each labelled with the run it belongs to.
Redrawn only when the node's snapshot actually changed. A click on a cell of an error analysis's
confusion matrix opens that cell's images with their Grad-CAM overlays (:class:`CellGallery`)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

from nicegui import ui
from nicegui.run import io_bound

from nodeflow.node import ParamProblem

from .api import overlay_url

CHART_HEIGHT = "h-56"
PREVIOUS_COLOR = "#b0b8c4"  # the previous run's curves, until the new run's replace them
PREVIOUS_SUFFIX = " (previous run)"
#: how node errors name the param to change: "parameter 'weights': ..." (see the executor's messages)
PARAM_IN_ERROR = re.compile(r"\bparam(?:eter)? '([A-Za-z_][A-Za-z0-9_]*)'")
#: series whose points carry an ``lr`` (the learning-rate finder's) are drawn against it, log scale
LR_CHART = "Loss vs learning rate"
GALLERY_PAGE = 12  # images per page of a confusion cell's gallery
EVALUATE_HINT = ("To see a cell's images with Grad-CAM overlays, add an Error analysis node (Evaluate → Error "
                 "analysis) on the same model and data, run it, and click a cell of its matrix.")
#: (node id, true class, predicted class, page, per page) -> one page of a cell's images (Results.cell_gallery)
GalleryProvider = Callable[[str, str, str, int, int, Any], dict[str, Any]]


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


def chart_options(title: str, series: dict[str, list[dict[str, Any]]],
                  previous: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """One chart; ``previous`` (the run before this one) is drawn dashed and grey behind it."""
    by_epoch = any(p.get("epoch") is not None for pts in series.values() for p in pts)
    if title == LR_CHART:
        return lr_chart_options(series)
    grey = {"color": PREVIOUS_COLOR}
    old = [{"name": name + PREVIOUS_SUFFIX, "type": "line", "showSymbol": False, "silent": True, "z": 1,
            "lineStyle": {**grey, "type": "dashed"}, "itemStyle": grey, "data": [[_x(p), p["value"]] for p in points]}
           for name, points in (previous or {}).items()]
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
        "series": [{"name": name, "type": "line", "showSymbol": len(points) < 40, "smooth": False, "z": 2,
                    "sampling": "lttb", "data": [[_x(p), p["value"]] for p in points]}
                   for name, points in series.items()] + old,
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


def find_matrix(previews: dict[str, Any]) -> dict[str, Any] | None:
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


def error_param(message: str, param: str | None = None) -> str | None:
    """The param a node's error names, so the panel can link to its field."""
    if param:
        return param
    found = PARAM_IN_ERROR.search(message or "")
    return found.group(1) if found else None


def _clock(t: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) if t else ""


def run_label(live: dict[str, Any]) -> str:
    """Which run the shown output belongs to, and the node's state in the words its card uses."""
    run = live.get("run") or {}
    state = live.get("state")
    words = live.get("words") or state or ""
    started, finished = _clock(run.get("started")), _clock(run.get("finished"))
    if state == "queued":
        return "New run queued: below, the previous run's output" if live.get("previous") else "New run queued"
    if state == "running":
        return f"Run started {started}: {words}" if started else words.capitalize()
    if state == "failed":
        return f"Run of {started} failed" if started else "Failed"
    if state == "stopped":
        return f"Run of {started}: {words}" if started else words.capitalize()
    if state == "cached":
        return f"From the cache: computed by the run of {started}, finished {finished}" if finished else \
            "From the cache"
    if finished:
        return f"Run of {started}, finished {finished}"
    return ""


class OutputPanel:
    """The selected node's live output. ``show`` is cheap when nothing changed. ``on_param(node,
    param)`` is called when the user follows the link to a param that an error names."""

    def __init__(self, on_param: Callable[[str, str], None] | None = None,
                 gallery: GalleryProvider | None = None) -> None:
        # three parts, each redrawn only when its own content changed: a chart that is created and
        # removed again before it was drawn would fail in the browser ("dispose" of nothing)
        with ui.column().classes("w-full gap-2 nf-output") as self.container:
            self.head = ui.column().classes("w-full gap-2")
            self.charts = ui.column().classes("w-full gap-2")
            self.rest = ui.column().classes("w-full gap-2")
            # outside the parts that are redrawn, so an open gallery survives the next snapshot
            self.gallery = CellGallery(gallery) if gallery is not None else None
        self.on_param = on_param or (lambda node, param: None)
        self.node_id: str | None = None
        self._sigs: dict[str, Any] = {}
        self._charts: dict[str, ui.echart] = {}

    def show(self, node_id: str | None, live: dict[str, Any] | None) -> None:
        live = live or {}
        state = live.get("state")
        series = live.get("series") or {}
        previous = live.get("previous") or {}
        old_series = previous.get("series") or {} if state in ("queued", "running") else {}
        previews = live.get("previews") or {}
        metrics = live.get("metrics") or {}
        error = live.get("error") if state == "failed" else None
        groups = group_series(series)
        old_groups = group_series(old_series)
        titles = list(dict.fromkeys([*groups, *old_groups]))
        self.node_id = node_id
        head_sig = (node_id, state, error, live.get("error_param"), json.dumps(metrics, sort_keys=True, default=str),
                    json.dumps(live.get("run"), default=str), bool(old_series), previous.get("started"),
                    bool(titles or previews))
        if head_sig != self._sigs.get("head"):
            self._sigs["head"] = head_sig
            self.head.clear()
            with self.head:
                self._head(node_id, live, error, metrics, old_series, previous, bool(titles or previews))
        points_sig = (tuple((k, len(v)) for k, v in series.items()), tuple((k, len(v)) for k, v in old_series.items()))
        chart_sig = (node_id, tuple(titles))
        if chart_sig != self._sigs.get("charts"):
            self._sigs["charts"] = chart_sig
            self.charts.clear()
            self._charts = {}
            with self.charts:
                for title in titles:
                    options = chart_options(title, groups.get(title, {}), old_groups.get(title))
                    self._charts[title] = ui.echart(options).classes(f"w-full {CHART_HEIGHT} nf-chart")
            self._sigs["points"] = points_sig  # just drawn with these points
        if points_sig != self._sigs.get("points"):
            self._sigs["points"] = points_sig
            for title, chart in self._charts.items():  # new points: update the charts in place
                chart.options.clear()
                chart.options.update(chart_options(title, groups.get(title, {}), old_groups.get(title)))
                chart.update()
        # previews only: a new metric (every batch of a run) must not redraw the matrix and the samples
        rest_sig = (node_id, hash(json.dumps(previews, sort_keys=True, default=str)))
        if rest_sig != self._sigs.get("rest"):
            self._sigs["rest"] = rest_sig
            self.rest.clear()
            with self.rest:
                self._rest(previews)

    def _head(self, node_id: str | None, live: dict[str, Any], error: str | None, metrics: dict[str, Any],
              old_series: dict[str, Any], previous: dict[str, Any], has_output: bool) -> None:
        if node_id is None:
            ui.label("Select a node to see its output.").classes("text-grey-7 text-sm")
            return
        if error:
            self._error(node_id, error, error_param(error, live.get("error_param")))
        label = run_label(live)
        if label:
            ui.label(label).classes("text-caption text-grey-8 nf-run-label")
        if metrics:
            rows = [{"metric": k, "value": _number(v)} for k, v in metrics.items()]
            ui.table(columns=[{"name": "metric", "label": "metric", "field": "metric", "align": "left"},
                              {"name": "value", "label": "value", "field": "value", "align": "right"}],
                     rows=rows, row_key="metric").props("dense flat bordered").classes("w-full nf-metrics")
        if old_series:
            ui.label("Grey dashed: the previous run"
                     + (f" (of {_clock(previous.get('started'))})" if previous.get("started") else "")
                     + ", until this run's curves replace it.").classes("text-caption text-grey-7 nf-previous-note")
        if not (error or metrics or has_output or live.get("state") in ("running", "queued", "stopped")):
            ui.label("No output yet: run this node (▶ on the node, or 'Run selected').") \
                .classes("text-grey-7 text-sm")

    def _rest(self, previews: dict[str, Any]) -> None:
        matrix = find_matrix(previews)
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

    def _error(self, node_id: str, message: str, param: str | None) -> None:
        with ui.column().classes("w-full gap-1 nf-error-box"):
            ui.label("This node failed").classes("text-subtitle2 text-negative")
            ui.label(message).classes("text-sm nf-error-text")
            if param:
                ui.link(f"Change '{param}' in the Parameters tab", "#") \
                    .on("click.prevent", lambda n=node_id, p=param: self.on_param(n, p)) \
                    .classes("text-sm nf-error-param").props(f"data-param={param}")

    def _matrix(self, payload: dict[str, Any]) -> None:
        matrix = payload["matrix"]
        labels = [str(c) for c in (payload.get("classes") or payload.get("labels") or range(len(matrix)))]
        data = [[j, i, matrix[i][j]] for i in range(len(matrix)) for j in range(len(matrix[i]))]
        top = max((v for _, _, v in data), default=1) or 1
        chart = ui.echart({
            "animation": False,
            "title": {"text": "Confusion matrix (rows: true, columns: predicted)", "textStyle": {"fontSize": 12}},
            "grid": {"left": 70, "right": 12, "top": 30, "bottom": 40},
            "xAxis": {"type": "category", "data": labels, "name": "predicted", "nameLocation": "middle", "nameGap": 24},
            "yAxis": {"type": "category", "data": labels, "inverse": True},
            "visualMap": {"min": 0, "max": top, "show": False, "inRange": {"color": ["#f5f7fa", "#3f51b5"]}},
            "series": [{"type": "heatmap", "data": data, "label": {"show": True},
                        "cursor": "pointer" if payload.get("gallery") else "default"}],
        }).classes("w-full h-64 nf-confusion")
        if not payload.get("gallery"):
            ui.label(EVALUATE_HINT).classes("text-caption text-grey-7 nf-gallery-hint")
            return
        if self.gallery is None:
            return
        ui.label("Click a cell to see its images, worst first, with what the network looked at (Grad-CAM).") \
            .classes("text-caption text-grey-7 nf-gallery-tip")
        node_id = self.node_id

        async def clicked(e) -> None:
            value = e.value if isinstance(e.value, list) else e.data if isinstance(e.data, list) else None
            if node_id is None or not value or len(value) < 2:
                return
            await self.gallery.open(node_id, labels[int(value[1])], labels[int(value[0])])

        chart.on_point_click(clicked)


def _number(value: Any) -> str:
    if isinstance(value, (int, float)):
        if float(value).is_integer() and abs(value) >= 1000:
            return f"{int(value):,}"
        return f"{value:.4g}"
    return str(value)


#: height of the editor's toolbar, which the gallery (a full-height side dialog) leaves uncovered
HEADER_PX = 48


class CellGallery:
    """A dialog with one confusion cell's images (true X predicted as Y), highest loss first, each
    with its Grad-CAM overlay, the classes, the confidence and the loss, a page at a time. The
    overlays are drawn off the event loop; the status line says how many were drawn now and how
    many came from the overlay cache."""

    def __init__(self, provider: GalleryProvider, per_page: int = GALLERY_PAGE) -> None:
        self.provider = provider
        self.per_page = per_page
        self.cell: tuple[str, str, str, int, Any] | None = None  # the page asked for last
        # seamless, at the left: the matrix stays in view and another cell can be clicked meanwhile
        with ui.dialog().props("seamless position=left") as self.dialog, \
                ui.card().classes("nf-gallery w-[960px] max-w-[72vw] overflow-auto") \
                .style(f"margin-top: {HEADER_PX}px; height: calc(100vh - {HEADER_PX}px)"):  # the toolbar stays usable
            with ui.row().classes("w-full items-center no-wrap"):
                self.title = ui.label().classes("text-subtitle1 nf-gallery-title")
                ui.space()
                ui.button(icon="close", on_click=self.dialog.close).props("flat round dense") \
                    .classes("nf-gallery-close")
            self.status = ui.label().classes("text-caption text-grey-8 nf-gallery-status")
            self.body = ui.column().classes("w-full gap-2")

    async def open(self, node_id: str, true: str, predicted: str, page: int = 1, run: Any = None) -> None:
        """A page of the cell; with ``run``, of the node as that run had it (a compared run's flipped
        image), not as the open graph has it now."""
        self.cell = (node_id, true, predicted, page, run)
        self.title.set_text(f"True {true}, predicted {predicted}")
        self.status.set_text("Drawing Grad-CAM overlays…")
        self.body.clear()
        with self.body:
            ui.spinner(size="lg").classes("self-center nf-gallery-spinner")
        self.dialog.open()
        try:
            result = await io_bound(self.provider, node_id, true, predicted, page, self.per_page, run)
        except (LookupError, ParamProblem, RuntimeError) as exc:
            if self.cell != (node_id, true, predicted, page, run):
                return
            self.body.clear()
            self.status.set_text("")
            with self.body:
                where = f"parameter '{exc.param}': " if isinstance(exc, ParamProblem) and exc.param else ""
                ui.label(where + str(exc.args[0] if exc.args else exc)).classes("text-negative nf-gallery-error")
            return
        if self.cell == (node_id, true, predicted, page, run):  # not replaced by a later click meanwhile
            self._show(node_id, result, run)

    def _show(self, node_id: str, result: dict[str, Any], run: Any = None) -> None:
        true, predicted, count = result["true"], result["predicted"], result["count"]
        split = f" of the {result['split']} split" if result.get("split") else ""
        kind = "correct" if true == predicted else "misclassified"
        self.title.set_text(f"True {true}, predicted {predicted}: {count} {kind} image{'s' if count != 1 else ''}"
                            f"{split}, highest loss first")
        drawn, cached = result.get("drawn", 0), result.get("from_cache", 0)
        if result.get("note"):
            status = result["note"]
        elif not result["rows"]:
            status = "No images in this cell."
        elif drawn and cached:
            status = f"{drawn} overlays drawn now, {cached} from the overlay cache"
        elif drawn:
            status = f"{drawn} overlay{'s' if drawn != 1 else ''} drawn now (cached for next time)"
        else:
            status = f"all {cached} overlay{'s' if cached != 1 else ''} from the overlay cache"
        self.status.set_text(f"{status} · Grad-CAM of class '{predicted}'"
                             f"{' from block ' + result['block'] if result.get('block') else ''}")
        self.body.clear()
        with self.body:
            with ui.element("div").classes("grid grid-cols-4 gap-3 w-full nf-gallery-grid"):
                for row in result["rows"]:
                    with ui.element("figure").classes("m-0 nf-gallery-item").props(f"data-rank={row['rank']}"):
                        url = row.get("overlay_url") or overlay_url(node_id, row.get("overlay"), run=run)
                        if url:
                            image = ui.element("img").classes("w-full rounded nf-gallery-img") \
                                .style("image-rendering: pixelated")
                            image.props["src"] = url
                            image.props["alt"] = f"Grad-CAM of {row['name']}"
                        with ui.element("figcaption").classes("text-xs leading-tight nf-gallery-caption"):
                            ui.label(f"true {row['true']} · predicted {row['predicted']}") \
                                .classes("font-medium nf-gallery-classes")
                            numbers = []
                            if row.get("confidence") is not None:
                                numbers.append(f"confidence {row['confidence']:.2f}")
                            if row.get("loss") is not None:
                                numbers.append(f"loss {max(row['loss'], 0.0):.2f}")  # never "-0.00"
                            ui.label(" · ".join(numbers)).classes("text-grey-8 nf-gallery-numbers")
                            ui.label(f"#{row['rank']} {row['name']}").classes("text-grey-6 ellipsis nf-gallery-file") \
                                .tooltip(row["name"])
            if result.get("pages", 1) > 1:
                node, true_, pred = node_id, true, predicted
                ui.pagination(1, result["pages"], direction_links=True, value=result["page"],
                              on_change=lambda e: self.open(node, true_, pred, int(e.value), run)) \
                    .props("max-pages=7 boundary-numbers").classes("self-center nf-gallery-pages")
