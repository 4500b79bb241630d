"""The editor's Sweep dialog and its results.

A numeric or choice param of the inspector has a "Sweep…" button. The dialog takes its values (a
list, or start/stop/count spaced linearly or logarithmically; for a choice, ticks of the allowed
values), optionally a second param of any node to span a grid, and the node each branch runs up
to; it shows the branch count and refuses values the param's schema refuses, naming the param,
before anything runs. "Start sweep" queues one run per branch in the session's queue
(:meth:`nodeflow.sweep.Sweeps.submit`, the grid expanded by :mod:`nodeflow.sweep` as the CLI does); the
results view follows them: progress, one row per branch with the target's main metric and the best
marked, the branches' curves overlaid, "Apply best" (one undo step) and "Cancel sweep".

The value parsing and checking are plain functions, tested without a browser.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from nicegui import ui

from nodeflow.compare import is_count, readable
from nodeflow.errors import GraphInvalid
from nodeflow.graph import Graph
from nodeflow.session import EditError, Session
from nodeflow.sweep import MAX_BRANCHES, GridError, held_out, held_out_warning

from .forms import bounds_text, layer_facts, resolve, sweep_kind
from .runs_panel import curve_names, overlay_options

REFRESH_SECONDS = 0.5
#: the node categories whose results a sweep is usually judged by
JUDGED_CATEGORIES = ("Training", "Evaluate")
SCALES = ("linear", "log")
#: the "Judge at" choice that leaves the metric to the sweep (a validation metric when there is one)
AUTOMATIC = "auto"


class SweepInputError(ValueError):
    """Values a sweep cannot take; the message names the ``NODE.PARAM``."""


# -- which params, which values ------------------------------------------------------------------
def param_schema(entry: dict[str, Any], param: str) -> dict[str, Any]:
    schema = entry.get("params_schema") or {}
    raw = schema.get("properties", {}).get(param)
    if raw is None:
        return {}
    return resolve(schema, raw)[0]


def shown(value: Any) -> str:
    """A value as a person reads it: 30000000 rather than 30000000.0, 1e-05 as typed."""
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.12g}"
    return value if isinstance(value, str) else json.dumps(value)


def _number_text(text: str) -> float:
    return float(text.replace("−", "-"))


def parse_values(name: str, text: str, kind: str) -> list[int | float]:
    """``"1e-5, 1e-4"`` (commas, semicolons or spaces) as numbers; ints stay ints. SweepInputError
    names ``name`` and the item it cannot read."""
    items = [t for t in text.replace(";", ",").replace(",", " ").split() if t]
    if not items:
        raise SweepInputError(f"{name}: give at least one value, e.g. {'1, 2' if kind == 'int' else '1e-4, 1e-3'}")
    values: list[int | float] = []
    for item in items:
        try:
            number = _number_text(item)
        except ValueError:
            raise SweepInputError(f"{name}: '{item[:40]}' is not a number") from None
        if not math.isfinite(number):
            raise SweepInputError(f"{name}: '{item[:40]}' is not a finite number")
        if kind == "int":
            if not number.is_integer():
                raise SweepInputError(f"{name}: '{item[:40]}' is not a whole number")
            values.append(int(number))
        else:
            values.append(int(number) if number.is_integer() and "." not in item and "e" not in item.lower()
                          else number)
    return values


def spaced(name: str, start: float | None, stop: float | None, count: int | float | None, scale: str,
           kind: str) -> list[int | float]:
    """``count`` values from ``start`` to ``stop`` (both included), evenly on a linear or a log
    scale; for an int param rounded, repeats dropped."""
    if start is None or stop is None or count is None:
        raise SweepInputError(f"{name}: give a start, a stop and a count")
    if not all(math.isfinite(float(v)) for v in (start, stop)):
        raise SweepInputError(f"{name}: start and stop must be finite numbers")
    if float(count) != int(count) or not 1 <= int(count) <= MAX_BRANCHES:
        raise SweepInputError(f"{name}: the count must be a whole number from 1 to {MAX_BRANCHES}")
    count = int(count)
    if scale == "log" and (start <= 0 or stop <= 0):
        raise SweepInputError(f"{name}: a log scale needs a start and a stop above 0")
    if count == 1:
        raw = [float(start)]
    elif scale == "log":
        lo, hi = math.log10(start), math.log10(stop)
        raw = [10 ** (lo + (hi - lo) * i / (count - 1)) for i in range(count)]
    else:
        raw = [start + (stop - start) * i / (count - 1) for i in range(count)]
    if kind == "int":
        return list(dict.fromkeys(int(round(v)) for v in raw))
    return [float(f"{v:.6g}") for v in raw]


def check_values(name: str, prop: dict[str, Any], values: list[Any]) -> None:
    """Each value against the param's schema: type, bounds, allowed choices, no repeats.
    SweepInputError names ``name``, the value and the rule."""
    if not values:
        raise SweepInputError(f"{name}: choose at least one value")
    kind = sweep_kind(prop)
    seen: list[Any] = []
    for value in values:
        text = json.dumps(shown(value)) if isinstance(value, str) else shown(value)
        if value in seen:
            raise SweepInputError(f"{name}: {text} is given twice")
        seen.append(value)
        if kind in ("int", "number"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise SweepInputError(f"{name}: {text} is not a number")
            if kind == "int" and not float(value).is_integer():
                raise SweepInputError(f"{name}: {text} is not a whole number")
            lo, hi = prop.get("minimum"), prop.get("maximum")
            lo_ex, hi_ex = prop.get("exclusiveMinimum"), prop.get("exclusiveMaximum")
            if (lo is not None and value < lo) or (lo_ex is not None and value <= lo_ex) or \
                    (hi is not None and value > hi) or (hi_ex is not None and value >= hi_ex):
                raise SweepInputError(f"{name}: {text} is outside the allowed range{bounds_text(prop)}")
        elif kind == "choice" and value not in prop["enum"]:
            raise SweepInputError(f"{name}: {text} is not one of {', '.join(map(str, prop['enum']))}")
        elif kind == "layers" and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise SweepInputError(f"{name}: {text} is not a list of layer names")


def freeze_boundaries(layers: list[dict[str, Any]]) -> list[list[str]]:
    """The layer lists a fine-tune sweep usually compares: the frozen blocks from one of them on,
    the last block first (``[block5]``, ``[block4, block5]``, ...)."""
    frozen = [layer["name"] for layer in layers if not layer.get("trainable")]
    return [frozen[i:] for i in range(len(frozen) - 1, -1, -1)]


def branch_total(counts: list[int]) -> int:
    return math.prod(counts) if counts else 0


def branches_text(total: int) -> str:
    return f"{total} branch{'es' if total != 1 else ''}"


def topological(graph: Graph) -> list[str]:
    """Node ids, every node after the nodes feeding it (document order among equals)."""
    ids = [n.id for n in graph.nodes]
    indegree = {i: 0 for i in ids}
    for edge in graph.edges:
        indegree[edge.target] += 1
    order, ready = [], [i for i in ids if indegree[i] == 0]
    while ready:
        node = ready.pop(0)
        order.append(node)
        for edge in graph.edges:
            if edge.source == node:
                indegree[edge.target] -= 1
                if indegree[edge.target] == 0:
                    ready.append(edge.target)
    return order + [i for i in ids if i not in order]


def default_target(graph: Graph, categories: dict[str, str], node_id: str) -> str:
    """The node a sweep of ``node_id`` is judged at: the last trainer or evaluation downstream of
    it (the node itself included), else the node itself. ``categories``: node type -> category."""
    below, todo = {node_id}, [node_id]
    while todo:
        current = todo.pop()
        for edge in graph.edges:
            if edge.source == current and edge.target not in below:
                below.add(edge.target)
                todo.append(edge.target)
    judged = [i for i in topological(graph) if i in below and
              categories.get(graph.node(i).type) in JUDGED_CATEGORIES]
    return judged[-1] if judged else node_id


def upstream(graph: Graph, node_id: str) -> list[str]:
    """``node_id`` and every node it needs, nearest first."""
    order, todo = [node_id], [node_id]
    while todo:
        current = todo.pop(0)
        for edge in graph.edges:
            if edge.target == current and edge.source not in order:
                order.append(edge.source)
                todo.append(edge.source)
    return order


#: the order splits are offered in to judge a sweep: validation first, test last (it is held out)
JUDGE_ORDER = ("validation", "train", None, "test")


def judge_options(graph: Graph, registry: Any, target: str | None) -> tuple[dict[str, str], str | None]:
    """The metrics a sweep up to ``target`` can be judged at (``NODE.METRIC`` -> its split), from
    what its nodes declare they measure (``Node.measures``): validation first, accuracies first
    among them and the nearest node first, test last; and the default, the first validation metric
    (None when no node declares one: the sweep then picks the main metric)."""
    if target is None or not graph.has_node(target):
        return {}, None
    found = []
    for distance, node_id in enumerate(upstream(graph, target)):
        spec = graph.node(node_id)
        try:
            cls = registry.get(spec.type)
            measured = cls.measures(cls.Params.model_validate(spec.params))
        except Exception:  # an unknown type or a param that does not validate: nothing to offer
            continue
        for name, split in measured.items():
            if not is_count(name):
                rank = JUDGE_ORDER.index(split) if split in JUDGE_ORDER else JUDGE_ORDER.index(None)
                found.append((rank, "accuracy" not in name, distance, f"{node_id}.{name}", split))
    found.sort()
    default = next((metric for *_, metric, split in found if split == "validation"), None)
    return {metric: split for *_, metric, split in found}, default


def judge_label(metric: str, split: str | None) -> str:
    return f"{metric} ({split}: held out, for the end)" if split == "test" else \
        f"{metric} ({split})" if split else metric


def sweepable_params(graph: Graph, catalogue: dict[str, dict[str, Any]]) -> dict[str, str]:
    """``NODE.PARAM`` -> a label, for every param of the graph a sweep can vary."""
    found = {}
    for spec in graph.nodes:
        entry = catalogue.get(spec.type)
        if entry is None:
            continue
        for param in (entry.get("params_schema") or {}).get("properties", {}):
            if sweep_kind(param_schema(entry, param)) is not None:
                found[f"{spec.id}.{param}"] = f"{spec.title or spec.id} · {param}"
    return found


def best_values(sweep: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    """The best branch's values as node -> params (what "Apply best" sets), or None."""
    if sweep.get("best") is None:
        return None
    nodes: dict[str, dict[str, Any]] = {}
    for name, value in sweep["branches"][sweep["best"]]["params"].items():
        node_id, _, param = name.partition(".")
        nodes.setdefault(node_id, {})[param] = value
    return nodes


def branch_label(params: dict[str, Any]) -> str:
    """A branch by its values, as its line in the chart's legend: ``lr=0.001 · unfreeze=block5``."""
    def shown(value: Any) -> str:
        if isinstance(value, list):
            return "+".join(str(v) for v in value) or "none"
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    return " · ".join(f"{name.rsplit('.', 1)[-1]}={shown(value)}" for name, value in params.items())


def branch_runs(sweep: dict[str, Any]) -> list[dict[str, Any]]:
    """The branches as the overlay chart takes runs: id, label and curves."""
    return [{"id": b["run"], "label": branch_label(b["params"]), "curves": b.get("curves") or {}}
            for b in sweep["branches"]]


def result_rows(sweep: dict[str, Any]) -> list[dict[str, Any]]:
    """The results table's rows: values, status, metric (in the units people read), time, and the
    star on the clearly best branch or "= tie" on the branches no one of which is clearly better."""
    rows = []
    for branch in sweep["branches"]:
        status = branch["status"] if branch["status"] != "queued" else f"queued #{branch['position']}"
        row = {"branch": branch["branch"], "run": branch["run"], "status": status,
               "value": readable(sweep.get("metric") or "", branch["value"]),
               "time": "–" if branch["seconds"] is None else f"{branch['seconds']:.1f}s",
               "best": "★ best" if branch["best"] else "= tie" if branch.get("tie") else "",
               "is_best": branch["best"],
               "error": branch["error"] or ""}
        for i, value in enumerate(branch["params"].values()):
            row[f"p{i}"] = value if isinstance(value, str) else json.dumps(value)
        rows.append(row)
    return rows


# -- the dialog ------------------------------------------------------------------------------------
class Axis:
    """The values of one swept param: typed numbers or a range, or ticks of its choices."""

    def __init__(self, dialog: SweepDialog, node_id: str, param: str, removable: bool = False) -> None:
        self.dialog = dialog
        self.node_id, self.param = node_id, param
        self.name = f"{node_id}.{param}"
        session = dialog.session
        spec = session.document.graph.node(node_id)
        entry = dialog.catalogue.get(spec.type) or {}
        self.prop = param_schema(entry, param)
        self.kind = sweep_kind(self.prop)
        current = {**(entry.get("defaults") or {}), **spec.params}.get(param)
        self.boxes: list[tuple[ui.checkbox, Any]] = []
        with ui.column().classes("w-full gap-1 nf-sweep-axis").props(f'data-param="{self.name}"') as self.box:
            with ui.row().classes("w-full items-center no-wrap"):
                ui.label(self.name).classes("text-subtitle2 grow nf-sweep-param")
                ui.label(f"now {json.dumps(current)}").classes("text-xs text-grey-7")
                if removable:
                    ui.button(icon="close", on_click=lambda: dialog.remove_axis(self)) \
                        .props(f'flat dense round size=sm aria-label="Remove {self.name}"')
            if self.kind in ("int", "number"):
                self.mode = ui.toggle({"list": "List", "range": "Range"}, value="list",
                                      on_change=lambda _: self._show_mode()).props("dense no-caps size=sm")
                with ui.column().classes("w-full gap-0") as self.list_box:
                    example = "2, 4, 8" if self.kind == "int" else "1e-5, 1e-4, 1e-3"
                    self.text = ui.input(f"values{bounds_text(self.prop)}", placeholder=f"e.g. {example}",
                                         on_change=lambda _: dialog.changed()) \
                        .props("dense outlined").classes("w-full nf-sweep-values").mark(f"sweep-values-{self.name}")
                with ui.row().classes("w-full no-wrap gap-1") as self.range_box:
                    self.start = ui.number("start", on_change=lambda _: dialog.changed()).props("dense outlined") \
                        .classes("w-24 nf-sweep-start")
                    self.stop = ui.number("stop", on_change=lambda _: dialog.changed()).props("dense outlined") \
                        .classes("w-24 nf-sweep-stop")
                    self.count = ui.number("count", value=3, min=1, max=MAX_BRANCHES, step=1,
                                           on_change=lambda _: dialog.changed()).props("dense outlined") \
                        .classes("w-20 nf-sweep-count-field")
                    self.scale = ui.select(list(SCALES), value="log" if self.kind == "number" else "linear",
                                           on_change=lambda _: dialog.changed()).props("dense outlined") \
                        .classes("w-24 nf-sweep-scale")
                self._show_mode()
            else:
                if self.kind == "choice":
                    options = [(str(o), o) for o in self.prop["enum"]]
                else:  # layers: the freeze boundaries of the incoming model
                    layers = layer_facts(session.input_facts(node_id)) or []
                    options = [(", ".join(b), b) for b in freeze_boundaries(layers)]
                    if not options:
                        ui.label("Connect a model to this node to sweep its layers.").classes("text-sm text-grey-7")
                with ui.row().classes("w-full gap-x-3 gap-y-0 nf-sweep-choices"):
                    for label, value in options:
                        box = ui.checkbox(label, value=value == current, on_change=lambda _: dialog.changed()) \
                            .props("dense")
                        self.boxes.append((box, value))
            self.preview = ui.label("").classes("text-xs text-grey-8 nf-sweep-preview")

    def _show_mode(self) -> None:
        ranged = self.mode.value == "range"
        self.list_box.set_visibility(not ranged)
        self.range_box.set_visibility(ranged)
        self.dialog.changed()

    def raw_values(self) -> list[Any]:
        """The values entered, read but not yet checked against the param's schema."""
        if self.kind in ("int", "number"):
            if self.mode.value == "range":
                return spaced(self.name, self.start.value, self.stop.value, self.count.value, self.scale.value,
                              self.kind)
            return parse_values(self.name, self.text.value or "", self.kind)
        return [value for box, value in self.boxes if box.value]

    def values(self) -> list[Any]:
        """The values entered, checked against the param's schema; SweepInputError names the param."""
        values = self.raw_values()
        check_values(self.name, self.prop, values)
        return values


class SweepDialog:
    """The dialog that sets a sweep up; ``open(node_id, param)`` shows it for one param."""

    def __init__(self, session: Session, catalogue: dict[str, dict[str, Any]],
                 on_started: Callable[[dict[str, Any]], None],
                 last: Callable[[], int | None] = lambda: None, show_last: Callable[[], None] = lambda: None) -> None:
        self.session = session
        self.catalogue = catalogue
        self.on_started = on_started
        self.last = last
        self.axes: list[Axis] = []
        self.splits: dict[str, str] = {}  # the metrics offered to judge at, and their splits
        with ui.dialog() as self.dialog, ui.card().classes("nf-sweep-dialog").style("width: min(560px, 96vw)"):
            with ui.row().classes("w-full items-center"):
                self.title = ui.label("Sweep").classes("text-h6")
                ui.space()
                ui.button(icon="close", on_click=self.dialog.close).props('flat dense round aria-label="Close sweep"')
            ui.label("Each combination of the values is a branch: a run of the graph with those values, queued "
                     "behind the runs going now. Nodes the branches share run once.").classes("text-xs text-grey-7")
            self.axes_box = ui.column().classes("w-full gap-2")
            with ui.row().classes("w-full items-center no-wrap gap-1 nf-sweep-add"):
                self.add_select = ui.select({}, label="Add a second param (grid)", with_input=True) \
                    .props("dense outlined options-dense clearable").classes("grow nf-sweep-add-select") \
                    .mark("sweep-add")
                self.add_btn = ui.button("Add", icon="add", on_click=self.add_second).props("flat dense no-caps") \
                    .mark("sweep-add-button")
            self.target = ui.select({}, label="Run up to (target node)", on_change=lambda _: self._refresh_metrics()) \
                .props("dense outlined options-dense").classes("w-full nf-sweep-target").mark("sweep-target")
            self.metric = ui.select({}, label="Judge at (metric)", on_change=lambda _: self._show_warning()) \
                .props("dense outlined options-dense").classes("w-full nf-sweep-metric").mark("sweep-metric")
            self.warning = ui.label("").classes("text-sm text-orange-10 nf-sweep-warning") \
                .style("overflow-wrap: anywhere")
            self.warning.set_visibility(False)
            with ui.row().classes("w-full items-center no-wrap"):
                self.count = ui.label("").classes("text-subtitle2 grow nf-sweep-branches")
                self.last_btn = ui.button("", on_click=lambda: (self.dialog.close(), show_last())) \
                    .props("flat dense no-caps color=indigo-7")
                self.start_btn = ui.button("Start sweep", icon="play_arrow", on_click=self.start) \
                    .props("unelevated no-caps color=green-7")
            self.error = ui.label("").classes("text-negative text-sm nf-sweep-error").style("overflow-wrap: anywhere")
            self.error.set_visibility(False)

    def open(self, node_id: str, param: str) -> None:
        graph = self.session.document.graph
        self.axes_box.clear()
        self.axes = []
        self.title.set_text(f"Sweep {node_id}.{param}")
        with self.axes_box:
            self.axes.append(Axis(self, node_id, param))
        categories = {t: e.get("category", "") for t, e in self.catalogue.items()}
        self.target.options = {n.id: f"{n.title or n.id} ({n.id})" for n in graph.nodes}
        self.target.value = default_target(graph, categories, node_id)
        self.target.update()
        self._refresh_metrics()
        self._refresh_add_options()
        self.error.set_visibility(False)
        last = self.last()
        self.last_btn.set_text(f"Results of sweep {last}" if last is not None else "")
        self.last_btn.set_visibility(last is not None)
        self.changed()
        self.dialog.open()

    def _refresh_metrics(self) -> None:
        """The metrics the branches can be judged at, up to the target: a validation one chosen."""
        self.splits, default = judge_options(self.session.document.graph, self.session.registry, self.target.value)
        self.metric.options = {AUTOMATIC: "automatic (the target's main metric)",
                               **{m: judge_label(m, split) for m, split in self.splits.items()}}
        self.metric.value = default or AUTOMATIC
        self.metric.update()
        self._show_warning()

    def _show_warning(self) -> None:
        """Choosing by a test metric is allowed, and said plainly."""
        metric = self.metric.value
        test = metric not in (None, AUTOMATIC) and held_out(metric, self.splits)
        self.warning.set_text(held_out_warning(metric) if test else "")
        self.warning.set_visibility(test)

    def _refresh_add_options(self) -> None:
        taken = {a.name for a in self.axes}
        options = {k: v for k, v in sweepable_params(self.session.document.graph, self.catalogue).items() if k not in taken}
        self.add_select.options = options
        self.add_select.value = None
        self.add_select.update()
        room = len(self.axes) < 2
        self.add_select.set_visibility(room)
        self.add_btn.set_visibility(room)

    def add_second(self) -> None:
        name = self.add_select.value
        if not name or len(self.axes) >= 2:
            return
        node_id, _, param = name.partition(".")
        with self.axes_box:
            self.axes.append(Axis(self, node_id, param, removable=True))
        self._refresh_add_options()
        self.changed()

    def remove_axis(self, axis: Axis) -> None:
        self.axes.remove(axis)
        self.axes_box.remove(axis.box)
        self._refresh_add_options()
        self.changed()

    def grid(self) -> dict[str, list[Any]]:
        """Every axis's values; SweepInputError names the first param whose values are wrong."""
        return {axis.name: axis.values() for axis in self.axes}

    def changed(self) -> None:
        """Redraw the previews and the branch count as values are typed (a refusal waits for Start,
        and goes once the values change)."""
        self.error.set_visibility(False)
        counts = []
        for axis in self.axes:
            try:
                values = axis.raw_values()
            except SweepInputError:
                axis.preview.set_text("")
                counts.append(0)
                continue
            counts.append(len(values))
            axis.preview.set_text(", ".join(map(shown, values)))
        total = branch_total(counts)
        too_many = total > MAX_BRANCHES
        self.count.set_text(branches_text(total) + (f" (at most {MAX_BRANCHES})" if too_many else ""))
        self.count.classes(replace="text-subtitle2 grow nf-sweep-branches" + (" text-negative" if too_many else ""))

    def show_error(self, message: str) -> None:
        self.error.set_text(message)
        self.error.set_visibility(True)

    async def start(self) -> None:
        from nicegui import run as background

        self.error.set_visibility(False)
        try:
            grid = self.grid()
        except SweepInputError as exc:
            self.show_error(str(exc))
            return
        total = branch_total([len(v) for v in grid.values()])
        if total > MAX_BRANCHES:
            self.show_error(f"{branches_text(total)}: a sweep may have at most {MAX_BRANCHES}; give fewer values")
            return
        try:  # off the event loop: checking every value and branch plans the graph up to 64 times
            metric = None if self.metric.value in (None, AUTOMATIC) else self.metric.value
            sweep = await background.io_bound(self.session.sweeps.submit, list(grid.items()), self.target.value, metric)
        except (GridError, GraphInvalid) as exc:  # what only the whole graph shows (a node's own check)
            self.show_error(str(exc))
            return
        self.dialog.close()
        self.on_started(sweep)


# -- the results -----------------------------------------------------------------------------------
class SweepResults:
    """A dialog following one sweep: progress, the results table, the overlaid curves."""

    def __init__(self, session: Session, on_apply: Callable[[], None] = lambda: None) -> None:
        self.session = session
        self.on_apply = on_apply
        self.sweep_id: int | None = None
        self.data: dict[str, Any] | None = None
        self.chart: Any = None
        self.signature: Any = None
        with ui.dialog() as self.dialog, \
                ui.card().classes("nf-sweep-results").style("width: min(1100px, 96vw); max-width: 96vw"):
            with ui.row().classes("w-full items-center"):
                self.title = ui.label("Sweep").classes("text-h6")
                self.progress = ui.label("").classes("text-sm q-ml-md nf-sweep-progress")
                ui.space()
                self.apply_btn = ui.button("Apply best", icon="done_all", on_click=self.apply_best) \
                    .props("unelevated dense no-caps color=teal-7")
                self.cancel_btn = ui.button("Cancel sweep", icon="cancel", on_click=self.cancel) \
                    .props("flat dense no-caps color=red-7")
                ui.button(icon="close", on_click=self.dialog.close) \
                    .props('flat dense round aria-label="Close sweep results"')
            self.bar = ui.linear_progress(value=0, show_value=False).props("rounded instant-feedback color=indigo-6") \
                .classes("nf-sweep-bar")
            self.warning = ui.label("").classes("text-sm text-orange-10 nf-sweep-results-warning")
            self.judgement = ui.label("").classes("text-sm nf-sweep-judgement")
            self.table_box = ui.column().classes("w-full gap-0")
            self.table: Any = None  # made on the first show: a page has one ui.table (the runs') until then
            self.chart_box = ui.column().classes("w-full gap-1")
        self.timer = ui.timer(REFRESH_SECONDS, self.refresh, active=False)
        self.dialog.on_value_change(lambda e: self.timer.activate() if e.value else self.timer.deactivate())

    def show(self, sweep_id: int) -> None:
        if self.table is None:
            with self.table_box:
                self.table = ui.table(columns=[], rows=[], row_key="branch") \
                    .props('dense flat bordered hide-pagination :pagination="{rowsPerPage: 0}"') \
                    .classes("w-full nf-sweep-table").mark("sweep-table")
                self.table.add_slot("body", SWEEP_ROW_SLOT)
        self.sweep_id = sweep_id
        self.signature = None
        self.data = None
        self.chart_box.clear()
        self.chart = None
        self.refresh()
        self.dialog.open()

    def refresh(self) -> None:
        if self.sweep_id is None or self.table is None:
            return
        if self.data is not None and self.data["id"] == self.sweep_id and \
                self.data["status"] not in ("running", "queued"):
            return  # finished: nothing changes any more
        data = self.session.sweeps.get(self.sweep_id, curves=True)
        points = sum(len(p) for b in data["branches"] for c in (b.get("curves") or {}).values() for p in c.values())
        signature = (json.dumps([[b["status"], b["position"], b["value"], b["best"], b.get("tie")]
                                 for b in data["branches"]]), points)
        if signature == self.signature:
            return
        self.signature = signature
        self.data = data
        self.title.set_text(f"Sweep {data['id']}")
        self.progress.set_text(f"{data['progress']} · {data['status']}")
        self.bar.set_value(data["finished"] / max(1, data["total"]))
        active = data["status"] in ("running", "queued")
        self.cancel_btn.set_enabled(active)
        self.apply_btn.set_enabled(data["best"] is not None)
        self.warning.set_text(data.get("warning") or "")
        self.warning.set_visibility(bool(data.get("warning")))
        judged = f"Judged at {data['metric']}" + (f" ({data['split']})" if data.get("split") else "") \
            if data["metric"] else ""
        self.judgement.set_text(f"{judged}: {data['judgement']}" if data.get("judgement") else judged)
        self.judgement.classes(replace="text-sm nf-sweep-judgement " + (
            "text-grey-8" if data.get("star") is None else "text-positive"))
        names = [name for name, _ in data["grid"]]
        self.table.columns = [{"name": "branch", "label": "#", "field": "branch", "align": "right"},
                              *[{"name": f"p{i}", "label": n, "field": f"p{i}", "align": "left"}
                                for i, n in enumerate(names)],
                              {"name": "status", "label": "Status", "field": "status", "align": "left"},
                              {"name": "value", "label": data["metric"] or "metric", "field": "value",
                               "align": "right"},
                              {"name": "time", "label": "Time", "field": "time", "align": "right"},
                              {"name": "run", "label": "Run", "field": "run", "align": "right"},
                              {"name": "best", "label": "", "field": "best", "align": "left"}]
        self.table.rows = result_rows(data)
        self.table.update()
        self._chart(data)

    def _chart(self, data: dict[str, Any]) -> None:
        runs = branch_runs(data)
        names = curve_names(*runs)
        if not names:
            if not data["branches"] or self.chart is not None:
                return
            self.chart_box.clear()
            with self.chart_box:
                ui.label("Curves appear here as the branches train.").classes("text-xs text-grey-7")
            return
        if self.chart is None:
            self.chart_box.clear()
            with self.chart_box:
                self.curve = ui.select(names, value=names[0], label="Curve",
                                       on_change=lambda e: self._draw(e.value)) \
                    .props("dense outlined options-dense").classes("w-72 nf-sweep-curve")
                self.chart = ui.echart(overlay_options(runs, names[0]), renderer="svg") \
                    .classes("w-full h-64 nf-sweep-chart")
        else:
            self.curve.options = names
            self.curve.update()
        self._draw(self.curve.value)

    def _draw(self, curve: str | None) -> None:
        if self.chart is None or self.data is None:
            return
        self.chart.options.clear()
        self.chart.options.update(overlay_options(branch_runs(self.data), curve))
        self.chart.update()

    def cancel(self) -> None:
        if self.sweep_id is None:
            return
        running = self.session.sweeps.get(self.sweep_id)["status"] == "running"
        self.session.sweeps.cancel(self.sweep_id)
        ui.notify(f"Sweep {self.sweep_id} cancelled" + ("; the running branch stops at its next step" if running
                                                         else ""), type="info")
        self.refresh()

    def apply_best(self) -> None:
        """The best branch's values into the open graph, as one undo step."""
        values = best_values(self.data or {})
        if not values:
            return
        ops = [{"op": "set_params", "id": node_id, "params": params} for node_id, params in values.items()]
        try:
            self.session.document.edits(ops)
        except EditError as exc:  # e.g. the node was deleted since
            ui.notify(f"Cannot apply the best values: {exc}", type="warning")
            return
        shown = ", ".join(f"{k}={json.dumps(v)}" for k, v in self.data["branches"][self.data["best"]]["params"].items())
        tie = " — a tie: the best by value, not clearly better than the others" if self.data.get("tie") else ""
        ui.notify(f"Applied {shown}{tie} (Undo brings back the values before)", type="positive")
        self.on_apply()


class SweepPanel:
    """The Sweep dialog and the results view of the latest sweep, for one editor tab."""

    def __init__(self, session: Session, catalogue: dict[str, dict[str, Any]],
                 on_change: Callable[[], None] = lambda: None) -> None:
        self.results = SweepResults(session, on_apply=on_change)
        self.setup = SweepDialog(session, catalogue, on_started=self.started, last=lambda: self.results.sweep_id,
                                 show_last=lambda: self.results.show(self.results.sweep_id))
        self.on_change = on_change

    def open(self, node_id: str, param: str) -> None:
        self.setup.open(node_id, param)

    def started(self, sweep: dict[str, Any]) -> None:
        ui.notify(f"Sweep {sweep['id']}: {branches_text(sweep['total'])} queued", type="info")
        self.results.show(sweep["id"])
        self.on_change()


SWEEP_ROW_SLOT = r"""
<q-tr :props="props" :class="props.row.is_best ? 'nf-sweep-best bg-green-1 text-weight-bold' : ''"
      :data-best="props.row.is_best ? 'true' : 'false'" :data-status="props.row.status">
  <q-td v-for="col in props.cols" :key="col.name" :props="props" :title="col.name === 'status' ? props.row.error : ''">
    {{ col.value }}
  </q-td>
</q-tr>
"""
