"""Running from the editor: Run (asking first when the known price is high), Run selected, Stop,
Validate, Estimate, and each stale node's price on its card."""

from __future__ import annotations

from typing import Any

from nicegui import ui

from nodeflow.errors import GraphInvalid
from nodeflow.planner import estimate_note
from nodeflow.words import format_seconds
from nodeflow.session import Session

from .page import Page

#: a run whose estimated cost (the sum over the nodes it computes) exceeds this many seconds asks
#: for confirmation first, listing its heaviest nodes
RUN_CONFIRM_SECONDS = 60.0
#: a quick node (a layer, a dataset scan) measured below this shows no estimate: "≈ 0.00 s" on every
#: layer card hides the few lines that matter
QUICK_UNSHOWN_SECONDS = 0.5


class RunControls:
    """What the run bar's buttons, a card's Run button and the inspector's "Run to here" do."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.session: Session = page.session

    # -- cost preview ----------------------------------------------------------------------------
    def with_estimates(self, status: dict[str, dict[str, Any]], keys: dict[str, str]) -> dict[str, dict[str, Any]]:
        """Each stale node's price (for the snapshot's cache ``keys``) as a line on its card: the same
        per-node numbers the Run confirmation adds up."""
        found = self.session.estimator.prices(keys)
        for node_id, shown in status.items():
            entry = found.get(node_id)
            if entry is not None and shown["state"] in ("stale", "idle") and entry["status"] not in ("cached", "ahead"):
                line = estimate_line(entry)
                if line:
                    shown.update(estimate=line, estimate_note=estimate_note(entry))
        return status

    async def estimate_costs(self) -> None:
        """The Estimate button: measure (a few real batches) on a background thread, then say the total."""
        from nicegui import run as background

        target = self.page.selected[0] if len(self.page.selected) == 1 else None
        note = ui.notification("Estimating the cost…", spinner=True, timeout=None)
        try:
            found = await background.io_bound(self.session.estimator.estimate, target)
        except GraphInvalid as exc:
            lines = [str(p) for p in exc.problems]
            ui.notify("Cannot estimate: " + "; ".join(lines[:3]) + (f" (+{len(lines) - 3} more)" if len(lines) > 3
                                                                   else ""), type="negative", multi_line=True)
            return
        except KeyError as exc:
            ui.notify(str(exc).strip('"'), type="warning")
            return
        finally:
            note.dismiss()
            self.page.tick_now()
        ui.notify(f"Estimated: ≈ {format_seconds(found['total_seconds'])}" + (f" up to {target}" if target else ""),
                  type="info", timeout=3000)

    def run(self, target: str | None) -> None:
        """Run at once: nothing is measured first. When the run's price is already known (it ran before
        with these params, or was profiled in the background) and is over RUN_CONFIRM_SECONDS, a
        dialog lists the heavy nodes first, with the numbers their cards show."""
        try:
            found = self.session.estimator.price(target)
        except (GraphInvalid, KeyError):
            found = None  # start_run says what is wrong
        if found is not None and found["total_seconds"] > RUN_CONFIRM_SECONDS:
            self.confirm_run(target, found)
            return
        self.start_run(target)

    def confirm_run(self, target: str | None, found: dict[str, Any]) -> None:
        heavy = sorted(((n, e) for n, e in found["nodes"].items() if e["status"] not in ("cached", "ahead")
                        and isinstance(e.get("seconds"), (int, float)) and e["seconds"] >= 1),
                       key=lambda item: -item[1]["seconds"])
        with ui.dialog() as dialog, ui.card().classes("w-[36rem] nf-run-confirm"):
            ui.label(f"This run takes about {format_seconds(found['total_seconds'])}").classes("text-h6")
            unknown = [n for n, e in found["nodes"].items() if e["status"] == "unknown"]
            ui.label(f"More than {format_seconds(RUN_CONFIRM_SECONDS)}, from earlier runs and measurements on the "
                     "real data" + (f" ({', '.join(unknown)} not measured yet)" if unknown else "")
                     + ". The heavy nodes:").classes("text-sm text-grey-8")
            for node_id, entry in heavy[:10]:
                with ui.column().classes("gap-0 nf-heavy-node"):
                    ui.label(f"{node_id}: {estimate_line(entry)}").classes("text-body2 text-weight-medium")
                    if estimate_note(entry):
                        ui.label(estimate_note(entry)).classes("text-xs text-grey-7")
            with ui.row().classes("w-full justify-end"):
                ui.button("Cancel", on_click=dialog.close).props("flat")
                ui.button("Run", on_click=lambda: (dialog.close(), self.start_run(target))) \
                    .props("unelevated color=green-7")
        dialog.open()

    # -- running ---------------------------------------------------------------------------------
    def start_run(self, target: str | None) -> None:
        try:
            queued = self.session.queue.submit(target)
            plan = queued["plan"]
        except GraphInvalid as exc:
            lines = [str(p) for p in exc.problems]
            ui.notify("Cannot run: " + "; ".join(lines[:3]) + (f" (+{len(lines) - 3} more)" if len(lines) > 3 else ""),
                      type="negative", multi_line=True, timeout=8000)
            return
        except (RuntimeError, KeyError) as exc:
            ui.notify(str(exc).strip('"'), type="warning")
            return
        if queued["status"] == "queued":
            ui.notify(f"Run {queued['id']} queued (#{queued['position']}): Runs, the clock button at the top right, "
                      "lists it and cancels it", type="info")
            return
        self.page.tabs.set_value("output")  # the curves are what one watches while it runs
        todo = sum(1 for a in plan.values() if a == "run")
        ui.notify(f"Running {todo} node{'s' if todo != 1 else ''}, {len(plan) - todo} from cache"
                  + (f" up to {target}" if target else ""), type="info", timeout=2500)
        self.page.tick_now()

    def run_selected(self):
        if len(self.page.selected) != 1:
            ui.notify("Select one node to run it and the stale nodes it needs", type="warning")
            return
        return self.run(self.page.selected[0])

    def stop(self) -> None:
        self.session.queue.stop()
        ui.notify("Stopping at the next batch…", timeout=2000)

    def validate(self) -> None:
        problems = self.session.validate()
        if not problems:
            ui.notify("The graph is valid", type="positive")
        else:
            errors = sum(p.blocking for p in problems)
            counts = [f"{n} {word}{'s' if n != 1 else ''}" for n, word in
                      ((errors, "problem"), (len(problems) - errors, "warning")) if n]
            with ui.dialog() as dialog, ui.card().classes("w-[32rem]"):
                ui.label(", ".join(counts) + ("" if errors else ": the graph can run")).classes("text-h6")
                for p in problems:
                    ui.label(str(p)).classes("text-sm nf-problem-line")
                ui.button("Close", on_click=dialog.close).props("flat")
            dialog.open()
        self.page.tick_now()


def estimate_line(entry: dict[str, Any]) -> str:
    """A node's estimate as its card shows it, e.g. "≈ 42 s · 3 epochs · CPU · feature cache: hit";
    empty when there is none, or for a quick node that costs next to nothing."""
    seconds = entry.get("seconds")
    if not isinstance(seconds, (int, float)):
        return ""
    if str(entry.get("note") or "").startswith("quick") and seconds < QUICK_UNSHOWN_SECONDS:
        return ""
    parts = [f"≈ {format_seconds(seconds)}"]
    if entry.get("epochs"):
        parts.append(f"{entry['epochs']} epoch{'s' if entry['epochs'] != 1 else ''}")
    if entry.get("device"):
        parts.append(str(entry["device"]).split(" ")[0].upper())
    if entry.get("feature_cache") == "hit":
        parts.append("feature cache: hit")
    return " · ".join(parts)
