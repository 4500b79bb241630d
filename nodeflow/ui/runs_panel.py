"""The editor's Runs panel (a dialog from the header) and the lineage strip of the Output tab.

The panel lists the run history of the workspace (nodeflow.runs): when, what changed, key
metrics, duration and status, queued runs with their position. Two selected runs are compared:
their curves overlaid in one chart and their diff (params by ``node.param``, metric deltas).
Where both runs kept per-image predictions, each accuracy says whether its change is real (a 95%
interval and McNemar's p, :mod:`nodeflow.compare`), and the images that flipped are listed, each
opening its confusion cell's gallery. One selected run's graph can be restored as one undo step; a
queued or running one cancelled.
"""

from __future__ import annotations

import json
import time
from typing import Any

from nicegui import run, ui

from nodeflow.compare import compare_run_ids, readable, readable_delta
from nodeflow.graph import Graph, GraphFileError
from nodeflow.session import EditError, Session

from .api import cell_gallery_of
from .outputs import CellGallery
from .state import STATE_STYLE

REFRESH_SECONDS = 1.0
#: long cells wrap, so every column stays in view at 1440 px (a table cell does not wrap by default)
WRAP = "white-space: normal; overflow-wrap: anywhere; min-width: 10rem; max-width: 24rem"
#: a column of names (a target node id, where a run came from): wrapped too, so one long id cannot push the
#: Status column out of the panel
WRAP_NAMES = "white-space: normal; overflow-wrap: anywhere; min-width: 5rem; max-width: 14rem"
#: flipped images listed per direction in the Compare panel (the count says how many there are)
FLIPS_LISTED = 12
#: how a metric's name ranks when choosing which curve to show first
PREFERRED = ("val_accuracy", "accuracy", "val_loss", "loss")


def key_metrics(run: dict[str, Any], limit: int = 2) -> str:
    """The accuracies of the nodes that ran (else their first metric), as short text in the units
    people read (70%, not 0.7)."""
    found: list[str] = []
    for node, info in run["nodes"].items():
        if info.get("status") != "ran":
            continue
        for name, value in (info.get("metrics") or {}).items():
            if "accuracy" in name and isinstance(value, (int, float)):
                found.append(f"{node}.{name}={readable(name, value)}")
    if not found:
        ran = [(n, i) for n, i in run["nodes"].items() if i.get("status") == "ran" and i.get("metrics")]
        if ran:
            node, info = ran[-1]
            name, value = next(iter(info["metrics"].items()))
            found.append(f"{node}.{name}={readable(name, value)}" if isinstance(value, (int, float))
                         else f"{node}.{name}")
    return "  ".join(found[-limit:])


def short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if not isinstance(value, str) else value


def run_state(run: dict[str, Any]) -> str:
    """A run's status in the words and colours of the node states: a run whose node was stopped on
    request reads "stopped", as that node's card does; one whose process ended under it, "interrupted"."""
    if run["status"] == "interrupted" and any(n.get("status") == "interrupted" for n in run["nodes"].values()):
        return "stopped"
    return run["status"]


def run_row(run: dict[str, Any]) -> dict[str, Any]:
    state = run_state(run)
    status = f"queued #{run['position']}" if state == "queued" else state
    when = run["started"] or run["requested"]
    look = STATE_STYLE.get(state, STATE_STYLE["idle"])
    return {"id": run["id"], "when": time.strftime("%m-%d %H:%M:%S", time.localtime(when)),
            "status": status, "changed": ", ".join(f"{k}={short(v['to'])}" for k, v in run["changes"].items()) or "–",
            "metrics": key_metrics(run), "duration": f"{run['seconds']:.1f}s" if run["seconds"] is not None else "–",
            "target": run["target"] or "all", "source": run.get("source") or "–",
            "state": state, "color": look["color"], "background": look["background"]}


#: the colour of each verdict (nodeflow.compare): a clear gain green, a clear loss red, the rest grey
VERDICT_COLOURS = {"better": "text-positive", "worse": "text-negative"}


def verdict_colour(judged: dict[str, Any] | None) -> str:
    """The colour of a verdict, and only of it (a metric's own, or a split's comparison's): green
    for better, red for worse, grey for no clear difference, untested, or no verdict."""
    return VERDICT_COLOURS.get((judged or {}).get("verdict") or "", "text-grey-8")


def metric_line(name: str, m: dict[str, Any]) -> None:
    """A metric's change in the units people read, with the images it stands on, coloured by its
    verdict alone (nodeflow.compare: every figure measured on the same images is tested on them;
    counts and parameters have none and stay grey), and under it what the test says: the interval
    and p-value, tie or not, or that it is untested."""
    text = f"{name}: {readable(name, m['a'])} → {readable(name, m['b'])}"
    if m["delta"] is not None:
        text += f" ({readable_delta(name, m['delta'])})" if m["delta"] else " (same)"
    counts = [n for n in (m.get("images") or {}).values() if n is not None]
    if counts:
        split = f" {m['split']}" if m.get("split") else ""
        text += f" · {counts[0]:,}{split} images" if len(set(counts)) == 1 else \
            f" · {counts[0]:,} → {counts[1]:,}{split} images"
    colour = verdict_colour(m)
    ui.label(text).classes(f"text-xs nf-diff-metric {colour}").props(f'data-verdict="{m.get("verdict") or ""}"')
    if m.get("judged"):
        ui.label(m["judged"]).classes(f"text-xs q-ml-md nf-diff-interval {colour}")


def curve_names(*runs: dict[str, Any]) -> list[str]:
    """``node.metric`` of every curve in these runs, the most telling first."""
    names = sorted({f"{node}.{metric}" for run in runs for node, curves in run["curves"].items() for metric in curves})

    def rank(name: str) -> tuple[int, str]:
        metric = name.split(".", 1)[1]
        return (PREFERRED.index(metric) if metric in PREFERRED else len(PREFERRED), name)

    return sorted(names, key=rank)


def overlay_options(runs: list[dict[str, Any]], curve: str | None) -> dict[str, Any]:
    """One chart: the same curve of each run, one line per run, named by its ``label`` when it has
    one (a sweep branch's values), else by its run number."""
    node, _, metric = (curve or "").partition(".")
    series = []
    for run in runs:
        points = run["curves"].get(node, {}).get(metric, [])
        series.append({"name": run.get("label") or f"run {run['id']}", "type": "line", "showSymbol": len(points) < 40,
                       "data": [[step, value] for step, value in points]})
    return {"animation": False,
            "title": {"text": curve or "no curves", "textStyle": {"fontSize": 12}, "left": 4, "top": 0},
            "tooltip": {"trigger": "axis"}, "legend": {"top": 0, "right": 4},
            "grid": {"left": 48, "right": 16, "top": 34, "bottom": 30},
            "xAxis": {"type": "value", "name": "step", "nameLocation": "middle", "nameGap": 20, "minInterval": 1},
            "yAxis": {"type": "value", "scale": True}, "series": series}


class RunsPanel:
    """A dialog over the editor; ``open()`` shows it."""

    COLUMNS = [{"name": "id", "label": "Run", "field": "id", "align": "right", "headerStyle": "width: 3.5rem"},
               {"name": "when", "label": "When", "field": "when", "align": "left", "headerStyle": "width: 8rem"},
               {"name": "target", "label": "Target", "field": "target", "align": "left", "style": WRAP_NAMES,
                "headerStyle": "width: 12rem"},
               {"name": "changed", "label": "What changed", "field": "changed", "align": "left", "style": WRAP},
               {"name": "metrics", "label": "Key metrics", "field": "metrics", "align": "left", "style": WRAP},
               {"name": "duration", "label": "Duration", "field": "duration", "align": "right",
                "headerStyle": "width: 5.5rem"},
               {"name": "source", "label": "From", "field": "source", "align": "left", "style": WRAP_NAMES,
                "headerStyle": "width: 5.5rem"},
               {"name": "status", "label": "Status", "field": "status", "align": "left",
                "headerStyle": "width: 8.5rem"}]

    def __init__(self, session: Session, on_restore=None) -> None:
        self.session = session
        self.on_restore = on_restore
        self.signature: Any = None
        self.compared: list[int] = []
        with ui.dialog().props("maximized=false") as self.dialog, \
                ui.card().classes("nf-runs-panel").style("width: min(1200px, 96vw); max-width: 96vw"):
            with ui.row().classes("w-full items-center"):
                ui.label("Runs").classes("text-h6")
                ui.space()
                self.compare_btn = ui.button("Compare", icon="compare_arrows", on_click=self.compare) \
                    .props("unelevated dense no-caps color=indigo-6")
                self.restore_btn = ui.button("Restore graph", icon="restore", on_click=self.restore) \
                    .props("unelevated dense no-caps color=teal-7")
                self.cancel_btn = ui.button("Cancel run", icon="cancel", on_click=self.cancel) \
                    .props("flat dense no-caps color=red-7")
                ui.button(icon="close", on_click=self.dialog.close).props('flat dense round aria-label="Close runs"')
            ui.label("Select two runs to compare them, one to restore its graph or cancel it.") \
                .classes("text-xs text-grey-7")
            self.table = ui.table(columns=self.COLUMNS, rows=[], row_key="id", selection="multiple",
                                  pagination={"rowsPerPage": 8, "sortBy": "id", "descending": True},
                                  on_select=lambda _: self.update_buttons()) \
                .props('dense flat bordered no-data-label="No runs yet: Run all (or ▶ on a node) records one here"') \
                .classes("w-full nf-runs-table")
            # the status as a chip in the colours its node states have on the cards
            self.table.add_slot("body-cell-status", r"""
                <q-td :props="props"><span class="nf-run-status" :data-state="props.row.state"
                  :style="{background: props.row.background, color: props.row.color, padding: '0 7px',
                           borderRadius: '10px', whiteSpace: 'nowrap'}">{{ props.value }}</span></q-td>""")
            self.comparison = ui.column().classes("w-full gap-1 nf-runs-compare")
        self.gallery = CellGallery(cell_gallery_of(session))  # a flipped image's confusion cell
        self.timer = ui.timer(REFRESH_SECONDS, self.refresh, active=False)
        self.dialog.on_value_change(lambda e: self.timer.activate() if e.value else self.timer.deactivate())
        self.update_buttons()

    def open(self) -> None:
        self.signature = None
        self.refresh()
        self.dialog.open()

    # -- the table --------------------------------------------------------------------------------
    def refresh(self) -> None:
        runs = self.session.runs.list(limit=500)
        signature = [(r["id"], r["status"], r.get("position"), r["ended"]) for r in runs]
        if signature == self.signature:
            return
        self.signature = signature
        self.table.rows = [run_row(r) for r in runs]
        ids = {r["id"] for r in runs}
        self.table.selected = [row for row in self.table.rows if row["id"] in {s["id"] for s in self.table.selected}
                               and row["id"] in ids]
        self.table.update()
        self.update_buttons()

    def selected_ids(self) -> list[int]:
        return sorted(row["id"] for row in self.table.selected)

    def update_buttons(self) -> None:
        ids = self.selected_ids()
        self.compare_btn.set_enabled(len(ids) == 2)
        self.restore_btn.set_enabled(len(ids) == 1)
        statuses = {row["id"]: row["status"] for row in self.table.rows}
        self.cancel_btn.set_enabled(len(ids) == 1 and (statuses.get(ids[0], "").startswith(("queued", "running"))))

    # -- actions ----------------------------------------------------------------------------------
    async def compare(self) -> None:
        ids = self.selected_ids()
        if len(ids) != 2:
            ui.notify("Select two runs to compare", type="warning")
            return
        self.compared = ids
        self.comparison.clear()
        with self.comparison:
            ui.spinner(size="md").classes("nf-runs-compare-spinner")
        session = self.session
        try:  # off the event loop: the bootstrap over a large split takes a moment
            runs, diff = await run.io_bound(lambda: ([session.runs.get(i) for i in ids], compare_run_ids(
                session.runs, session.predictions, session.registry, *ids)))
        except KeyError as exc:  # a run deleted meanwhile
            self.comparison.clear()
            ui.notify(str(exc.args[0] if exc.args else exc), type="warning")
            return
        if self.compared != ids:  # another comparison was asked for meanwhile
            return
        names = curve_names(*runs)
        self.comparison.clear()
        with self.comparison:
            with ui.row().classes("w-full items-start no-wrap gap-4"):
                with ui.column().classes("grow gap-1"):
                    choice = ui.select(names, value=names[0] if names else None, label="Curve") \
                        .props("dense outlined options-dense").classes("w-72 nf-runs-curve")
                    chart = ui.echart(overlay_options(runs, choice.value), renderer="svg") \
                        .classes("w-full h-64 nf-runs-chart")

                    def show(e) -> None:
                        chart.options.clear()
                        chart.options.update(overlay_options(runs, e.value))
                        chart.update()

                    choice.on_value_change(show)
                with ui.column().classes("gap-0 nf-runs-diff").style("min-width: 340px; max-width: 46%"):
                    ui.label(f"Run {ids[0]} → run {ids[1]}").classes("text-subtitle2")
                    if not diff["params"]:
                        ui.label("No parameter changed").classes("text-sm text-grey-7")
                    for name, change in diff["params"].items():
                        ui.label(f"{name}: {short(change['from'])} → {short(change['to'])}") \
                            .classes("text-sm text-weight-medium nf-diff-param")
                    changed = set(diff["changed_nodes"])
                    for name, m in diff["metrics"].items():
                        if m["delta"] or name.split(".", 1)[0] in changed:
                            metric_line(name, m)
            for entry in diff["comparisons"]:
                self._flipped(entry)

    def _flipped(self, entry: dict[str, Any]) -> None:
        """One split's comparison, image by image: what the change fixed and what it broke, the
        most confidently wrong first, each opening its confusion cell's gallery."""
        with ui.column().classes("w-full gap-1 q-mt-sm nf-runs-flips") \
                .props(f'data-node="{entry["node"]}" data-split="{entry["split"]}"'):
            also = "".join(f", {n}" for n in entry["also"])
            held = " · test is held out: for the final check, not for choosing" if entry["held_out"] else ""
            ui.label(f"{entry['node']}{also} on {entry['split']}{held}").classes("text-subtitle2")
            ui.label(entry["words"]).classes(f"text-sm nf-flips-words {verdict_colour(entry)}")
            flipped = entry.get("flips")
            if not flipped:
                return
            gallery = entry.get("gallery")
            with ui.row().classes("w-full items-start no-wrap gap-4"):
                for key, title, side in (("right_to_wrong", "Right → wrong", "b"),
                                         ("wrong_to_right", "Wrong → right", "a")):
                    group = flipped[key]
                    with ui.column().classes(f"grow gap-0 nf-flips nf-flips-{key.replace('_', '-')}"):
                        ui.label(f"{title} ({group['count']})").classes("text-caption text-weight-medium")
                        for row in group["rows"][:FLIPS_LISTED]:
                            with ui.row().classes("items-center no-wrap gap-2 nf-flip"):
                                said = f"now {row['b']}" if side == "b" else f"was {row['a']}"
                                ui.label(f"{row['name']} · {row['true']}, {said} "
                                         f"({row['confidence_' + side]:.2f})").classes("text-xs ellipsis") \
                                    .tooltip(row["file"])
                                if gallery is not None:
                                    true, predicted = row["cell"]
                                    ui.link(f"cell {true} → {predicted}").classes("text-xs nf-flip-cell") \
                                        .on("click", lambda _, t=true, p=predicted, r=entry.get("gallery_run"):
                                            self.gallery.open(gallery, t, p, run=r))
                        if group["count"] > FLIPS_LISTED:
                            ui.label(f"and {group['count'] - FLIPS_LISTED} more").classes("text-xs text-grey-7")
            if gallery is None:
                ui.label("Add an Error analysis node on this model and split to open each image's confusion cell.") \
                    .classes("text-xs text-grey-7 nf-flips-hint")

    def restore(self) -> None:
        ids = self.selected_ids()
        if len(ids) != 1:
            return
        run = self.session.runs.get(ids[0])
        try:
            self.session.document.replace(Graph.from_data(run["graph"], f"run {ids[0]}"))  # one undo step
        except (GraphFileError, EditError) as exc:
            ui.notify(f"Cannot restore run {ids[0]}: {exc}", type="warning")
            return
        ui.notify(f"Restored the graph of run {ids[0]} (Undo brings back the one before)", type="positive")
        if self.on_restore is not None:
            self.on_restore()

    def cancel(self) -> None:
        ids = self.selected_ids()
        if len(ids) == 1:
            status = self.session.queue.cancel(ids[0])
            ui.notify(f"Run {ids[0]}: {status}", type="info")
            self.refresh()


class LineageView:
    """Under a node's output: where its model came from, oldest first (from nodeflow.runs)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.key: str | None = None
        self.box = ui.column().classes("w-full gap-0 nf-lineage")

    def show(self, node_id: str | None, live: dict[str, Any] | None) -> None:
        key = (live or {}).get("key") if (live or {}).get("state") in ("done", "cached") else None
        if key == self.key:
            return
        self.key = key
        self.box.clear()
        version = self.session.runs.by_key(key) if key else None
        if version is None or not version["inputs"]:
            return
        lineage = self.session.runs.lineage(key)
        with self.box:
            ui.label("Lineage").classes("text-subtitle2 q-mt-sm")
            ui.label(" → ".join(step_label(v) for v in lineage["chain"])).classes("text-sm nf-lineage-chain")
            for v in lineage["chain"]:
                ui.label(f"{v['node']} · {v['type']} · {v['key'][:10]} · run {v['run_id']}") \
                    .classes("text-xs text-grey-7")
            for d in lineage["data"]:
                ui.label(f"data: {d['node']}" + (f" ({d['fingerprint'][:24]})" if d["fingerprint"] else "")) \
                    .classes("text-xs text-grey-7")


def step_label(version: dict[str, Any]) -> str:
    """``finetune(unfreeze=['block5'])``: a node with its list-valued params, which say what it did to
    the model (the layers it unfroze), or its only param."""
    params = version["given"]
    shown = {k: v for k, v in params.items() if isinstance(v, list)} or (params if len(params) == 1 else {})
    inner = ", ".join(f"{k}={short(v)}" for k, v in shown.items())
    return f"{version['node']}({inner})" if inner else version["node"]
