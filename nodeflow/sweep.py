"""Sweeps: one graph run once per combination of parameter values, the branches sharing the cache.

``--grid NODE.PARAM=[v1, v2, ...]`` (repeatable) spans a grid; every combination is a branch, a
graph with those values set. All branches go through the content-keyed cache, so a node whose
params and inputs are the same in every branch (the head training before a fine-tune sweep)
runs once. Locally the branches run one after another; on a Dask cluster they are one dispatch,
where each cache key is one task, and independent branches run at once.

Each branch is a run in the run history (:mod:`nodeflow.runs`), and the report holds per branch
what ``nodeflow run --report`` writes.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nodeflow.access import guarded, reads, works
from nodeflow.compare import (ALPHA, compare_splits, direction, is_count, is_paired_accuracy, mcnemar, metric_splits,
                              readable, split_of, unpairable)
from nodeflow.errors import GraphInvalid
from nodeflow.graph import Graph
from nodeflow.predictions import SplitPredictions
from nodeflow.runs import RunNotFound, RunStore
from nodeflow.reports import RunReport
from nodeflow.runner import Job, drive
from nodeflow.scheduler import InProcess

#: the most branches one sweep from the editor or the HTTP API may have: each is a queued run, and a
#: typo in a count field must not queue thousands of trainings
MAX_BRANCHES = 64


class GridError(ValueError):
    """A grid that cannot be used; the message names it, and ``name`` is the ``NODE.PARAM`` at fault
    (None when the grid as a whole is wrong)."""

    def __init__(self, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name


def parse_grid(items: list[str]) -> list[tuple[str, list[Any]]]:
    """``NODE.PARAM=JSON_LIST`` items as (name, values), in the order given."""
    grid: list[tuple[str, list[Any]]] = []
    for item in items:
        name, sep, text = item.partition("=")
        node_id, dot, param = name.strip().partition(".")
        if not sep or not dot or not node_id or not param:
            raise GridError(f"--grid '{item}': expected NODE.PARAM=[VALUE, ...], e.g. train.lr=[1e-5,1e-4]")
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GridError(f"--grid '{item}': the values are not a JSON list ({exc.msg})") from None
        if not isinstance(values, list) or not values:
            raise GridError(f"--grid '{item}': give a non-empty JSON list of values, e.g. {name}=[1, 2]")
        if any(n == name.strip() for n, _ in grid):
            raise GridError(f"--grid '{item}': {name.strip()} is given twice; put all its values in one list")
        grid.append((name.strip(), values))
    if not grid:
        raise GridError("--grid: give at least one, e.g. --grid train.lr=[1e-5,1e-4]")
    return grid


def combinations(grid: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the last name varying fastest."""
    names = [name for name, _ in grid]
    return [dict(zip(names, values)) for values in itertools.product(*(v for _, v in grid))]


def grid_of(mapping: Any) -> list[tuple[str, list[Any]]]:
    """A grid given as JSON (``{"NODE.PARAM": [values], ...}``, in order) as (name, values) pairs;
    GridError names the entry that is not usable."""
    if not isinstance(mapping, dict) or not mapping:
        raise GridError('grid: give at least one param and its values, e.g. {"train.lr": [1e-5, 1e-4]}')
    grid = []
    for name, values in mapping.items():
        node_id, dot, param = str(name).partition(".")
        if not dot or not node_id or not param:
            raise GridError(f"grid: '{str(name)[:100]}' is not NODE.PARAM, e.g. train.lr", str(name)[:100])
        if not isinstance(values, list) or not values:
            raise GridError(f"{name}: give a non-empty list of values", name)
        grid.append((name, values))
    return grid


def _shown(value: Any) -> str:
    return json.dumps(value) if not (isinstance(value, float) and not math.isfinite(value)) else str(value)


def branch_count(grid: list[tuple[str, list[Any]]]) -> int:
    return math.prod(len(values) for _, values in grid)


@dataclass
class Branch:
    params: dict[str, Any]
    graph: Graph
    report: RunReport | None = None
    run_id: int | None = None


def with_values(graph: Graph, values: dict[str, Any]) -> Graph:
    """``graph`` with ``NODE.PARAM`` values set (a new document; ``graph`` is not changed)."""
    data = graph.model_dump(mode="json")
    nodes = {n["id"]: n for n in data["nodes"]}
    for name, value in values.items():
        node_id, _, param = name.partition(".")
        nodes[node_id].setdefault("params", {})[param] = value
    return Graph.from_data(data, "graph with sweep values")


def expand(base: Graph, grid: list[tuple[str, list[Any]]], check: Any, target: str | None = None,
           assign: Callable[[Graph, dict[str, Any]], Graph] = with_values) -> list[Branch]:
    """The branches of ``grid`` over ``base``, each checked before anything runs: every value
    against its param (bounds, type, what the node itself refuses), then every branch's graph as a
    whole for ``target``. ``check`` is an executor (its ``validate`` and ``plan``); ``assign`` sets
    values into a graph (the CLI's also makes typed paths absolute). Raises GridError naming the
    param, or the branch, at fault."""
    if branch_count(grid) > MAX_BRANCHES:  # the one cap, for the CLI, the API and the editor alike
        sizes = " × ".join(str(len(values)) for _, values in grid) + " = " if len(grid) > 1 else ""
        raise GridError(f"{sizes}{branch_count(grid)} branches is more than the {MAX_BRANCHES} one sweep may have; "
                        "give fewer values", grid[-1][0] if grid else None)
    ids = [n.id for n in base.nodes]
    for name, values in grid:
        node_id, _, param = name.partition(".")
        if node_id not in ids:
            close = difflib.get_close_matches(node_id, ids, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f" (nodes: {', '.join(ids)})"
            raise GridError(f"{name}: no node '{node_id}'{hint}", name)
        seen: list[Any] = []
        for value in values:
            if value in seen:  # the same branch twice would train the same model twice
                raise GridError(f"{name}: {_shown(value)} is given twice", name)
            seen.append(value)
            try:
                graph = assign(base, {name: value})
            except ValueError as exc:  # e.g. NaN, which no graph document may hold
                raise GridError(f"{name}: value {_shown(value)}: {exc}", name) from None
            wrong = [p for p in check.validate(graph) if p.blocking and p.node_id == node_id and
                     (getattr(p, "param", None) or "").split(".")[0] == param]
            if wrong:
                raise GridError(f"{name}: value {_shown(value)}: {wrong[0]}", name)
    branches = [Branch(params, assign(base, params)) for params in combinations(grid)]
    for branch in branches:
        try:
            check.plan(branch.graph, target=target)
        except GraphInvalid as exc:
            where = ", ".join(f"{k}={json.dumps(v)}" for k, v in branch.params.items())
            more = f" (and {len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
            raise GridError(f"the branch {where} is not valid: {exc.problems[0]}{more}") from None
    return branches


def check_metric(graph: Graph, metric: str | None) -> None:
    """A metric asked to rank a sweep must be ``NODE.METRIC`` of a node of ``graph``; GridError
    (naming ``metric``) otherwise."""
    if metric is None:
        return
    node_id, dot, name = metric.partition(".")
    if not dot or not node_id or not name:
        raise GridError(f"metric: '{metric[:100]}' is not NODE.METRIC, e.g. train.val_accuracy", "metric")
    if not graph.has_node(node_id):
        raise GridError(f"metric: no node '{node_id[:100]}'", "metric")


def run_sweep(executor: Any, branches: list[Branch], target: str | None = None, force: tuple[str, ...] = (),
              backend: Any = None, store: RunStore | None = None) -> list[Branch]:
    """Run every branch as one run of the scheduler (:func:`nodeflow.runner.drive`) on ``backend``
    (one node at a time here when None; a Dask backend runs independent branches at once). Each
    branch is recorded in ``store`` when given; a branch that a stop left with nothing done is
    cancelled."""
    jobs = drive(executor, [Job(b.graph, target, force, source="sweep") for b in branches],
                 backend if backend is not None else InProcess(executor.stop_flag), store, untouched="cancelled")
    for branch, job in zip(branches, jobs):
        branch.report = job.report
        if store is not None:
            branch.run_id = job.run_id
    return branches


def _node_metrics(branch: Branch) -> dict[str, dict[str, Any]] | None:
    if branch.report is None:
        return None
    return {node_id: node.metrics for node_id, node in branch.report.nodes.items()}


def main_metric(runs: list[dict[str, dict[str, Any]]], target: str | None,
                splits: dict[str, str] | None = None) -> str | None:
    """The ``NODE.METRIC`` that ranks branches by default, from each branch's final metrics by node:
    a validation accuracy (the target's, else the latest node's that has one), else another
    validation metric; only without any, the target's (or the last node's) accuracy, else its
    first metric, which may be measured on test (:func:`held_out`). ``splits`` says which split a
    metric is on where its name does not (``Node.measures``). Counts never rank."""
    if not runs:
        return None
    order = list(dict.fromkeys(n for r in runs for n in r))

    def numeric(node_id: str) -> list[str]:
        return sorted({name for r in runs for name, value in (r.get(node_id) or {}).items()
                       if isinstance(value, (int, float)) and not isinstance(value, bool)
                       and not is_count(name)})

    nearest = ([target] if target is not None else []) + [n for n in reversed(order) if n != target]
    for accurate in (True, False):
        for node_id in nearest:
            names = [n for n in numeric(node_id) if split_of(f"{node_id}.{n}", splits) == "validation"
                     and (not accurate or "accuracy" in n)]
            if names:
                return f"{node_id}.{names[0]}"
    for node_id in reversed([target] if target is not None else order):
        names = numeric(node_id)
        if names:
            ranked = [n for n in names if "accuracy" in n] or names
            return f"{node_id}.{ranked[0]}"
    return None


def held_out(metric: str | None, splits: dict[str, str] | None = None) -> bool:
    """Whether ``metric`` is measured on the test split, which choosing by it spends."""
    return metric is not None and split_of(metric, splits) == "test"


def held_out_warning(metric: str) -> str:
    """What the sweep's results say when they are ranked by a test metric."""
    return (f"{metric} is measured on the test split: the branch chosen by it has an optimistic test figure. "
            "Judge on a validation metric and keep test for the end.")


def value_of(metrics: dict[str, dict[str, Any]] | None, metric: str | None) -> float | None:
    """``NODE.METRIC`` in one branch's final metrics by node, if it is a finite number."""
    if metric is None or metrics is None:
        return None
    node_id, _, name = metric.partition(".")
    value = (metrics.get(node_id) or {}).get(name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def best_of(values: list[float | None], metric: str | None) -> int | None:
    """Index of the best value: the highest, or the lowest for a loss or an error; None if none."""
    scored = [(v, i) for i, v in enumerate(values) if v is not None]
    if not scored:
        return None
    if direction(metric or "") < 0:
        return min(scored)[1]
    return max(scored, key=lambda vi: (vi[0], -vi[1]))[1]  # the first of equals


@dataclass
class Judgement:
    """Which branch is best, and whether that is more than chance: ``star`` is the best branch
    when it is clearly better than every other, ``tie`` the branches (the best among them) that
    are not clearly worse than it, ``tested`` whether per-image predictions could tell, and
    ``words`` says it in a sentence."""

    best: int | None = None
    star: int | None = None
    tie: list[int] = field(default_factory=list)
    tested: bool = False
    words: str | None = None
    #: the best branch against the runner-up, image by image (:func:`nodeflow.compare.compare_splits`)
    comparison: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"best": self.best, "star": self.star, "tie": self.tie, "tested": self.tested, "words": self.words,
                "comparison": None if self.comparison is None else
                {k: v for k, v in self.comparison.items() if k != "flips"}}


def judge(values: list[float | None], metric: str | None,
          outcomes: list[SplitPredictions | None] | None = None) -> Judgement:
    """Rank branches by ``values`` of ``metric`` and say whether the best is clearly better than the
    others: for a top-1 accuracy with each branch's per-image predictions on the same images
    (``outcomes``), by a paired comparison with each (:func:`nodeflow.compare.paired`); otherwise
    the best by value keeps its star, untested, and the words say so. Branches with the same value
    are a tie either way."""
    best = best_of(values, metric)
    if best is None:
        return Judgement()
    others = [i for i, v in enumerate(values) if v is not None and i != best]
    if not others:
        return Judgement(best, best, words=None)
    lower = direction(metric or "") < 0
    runner = sorted(others, key=lambda i: (values[i] if lower else -values[i], i))[0]

    def n(i: int) -> str:
        return f"branch {i + 1}"

    testable = is_paired_accuracy(metric or "") and outcomes is not None and \
        all(outcomes[i] is not None for i in [best, *others])
    if not testable:
        tie = [i for i in others if values[i] == values[best]]
        if tie:
            return Judgement(best, None, [best, *tie], False, f"tie: {', '.join(n(i) for i in [best, *tie])} have "
                                                              f"the same {metric}")
        why = "has no per-image record" if not is_paired_accuracy(metric or "") else \
            "has no per-image predictions in every branch"
        return Judgement(best, best, [], False, f"{n(best)} is best by value, untested: {metric} {why}")
    unpaired = [i for i in others if unpairable(outcomes[i], outcomes[best])]
    if unpaired:
        return Judgement(best, best, [], False, f"{n(best)} is best by value, untested: "
                                                f"{unpairable(outcomes[unpaired[0]], outcomes[best])}")
    # McNemar first (no resampling): a branch it cannot tell from the best is tied without a bootstrap
    tie = [i for i in others if mcnemar(outcomes[i].correct, outcomes[best].correct) >= ALPHA or
           not compare_splits(outcomes[i], outcomes[best])["clear"]]
    versus = compare_splits(outcomes[tie[0] if tie else runner], outcomes[best])
    if tie:
        words = f"tie: {n(best)} against {n(tie[0])}: {versus['words']}"
        return Judgement(best, None, [best, *tie], True, words, versus)
    return Judgement(best, best, [], True, f"{n(best)} against {n(runner)}, the runner-up: {versus['words']}", versus)


def branch_outcomes(runs: list[dict[str, Any] | None], metric: str | None, split: str | None,
                    predictions_of: Callable[[str | None], dict[str, SplitPredictions]]
                    ) -> list[SplitPredictions | None]:
    """Each branch's per-image predictions on the split ``metric`` is measured on, from the result
    of its node that the branch's run (a run-history row) recorded."""
    if metric is None or split is None:
        return [None] * len(runs)
    node_id = metric.partition(".")[0]
    return [predictions_of(((run or {}).get("nodes", {}).get(node_id) or {}).get("key")).get(split)
            for run in runs]


def key_metric(branches: list[Branch], target: str | None, metric: str | None = None,
               splits: dict[str, str] | None = None) -> str | None:
    """The ``NODE.METRIC`` that ranks the branches: the one asked for, else :func:`main_metric`."""
    if metric is not None:
        return metric
    return main_metric([m for b in branches if (m := _node_metrics(b)) is not None], target, splits)


def metric_value(branch: Branch, metric: str | None) -> float | None:
    return value_of(_node_metrics(branch), metric)


def branch_values(branches: list[Branch], metric: str | None) -> list[float | None]:
    """Each finished branch's value of ``metric`` (None for one that failed or never ran)."""
    return [metric_value(b, metric) if b.report is not None and b.report.ok else None for b in branches]


def results_table(branches: list[Branch], metric: str | None, judgement: Judgement | None = None) -> str:
    """A plain-text table: one row per branch, its params, status and key metric; the best marked *
    when it is clearly the best (or untested), ``=`` on the branches of a tie; then what it means."""
    judgement = judgement or judge(branch_values(branches, metric), metric)
    names = list(branches[0].params) if branches else []
    header = ["", "RUN", *names, "STATUS", metric or "METRIC"]
    rows = []
    for i, b in enumerate(branches):
        status = "-" if b.report is None else (
            "ok" if b.report.ok else "stopped" if b.report.interrupted else "failed")
        value = metric_value(b, metric)
        mark = "*" if i == judgement.star else "=" if i in judgement.tie else ""
        rows.append([mark, str(b.run_id or "-"), *[json.dumps(b.params[n]) for n in names], status,
                     "-" if value is None else readable(metric or "", value)])
    widths = [max(len(str(r[c])) for r in [header, *rows]) for c in range(len(header))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    if metric is not None and judgement.best is not None:
        lines.append(f"ranked by {metric}" + (f": {judgement.words}" if judgement.words else ""))
    if judgement.star is not None:
        star = branches[judgement.star]
        lines.append(f"* best: {', '.join(f'{k}={json.dumps(v)}' for k, v in star.params.items())} "
                     f"({metric} = {metric_value(star, metric):.4g})")
    elif judgement.tie:
        others = len(judgement.tie) - 1
        lines.append(f"= tie: the best by value is not clearly better than {others} other branch"
                     f"{'es' if others != 1 else ''}; more images, or a larger difference, would tell")
    return "\n".join(lines)


def sweep_report(branches: list[Branch], backend: str, metric: str | None = None,
                 judgement: Judgement | None = None, warning: str | None = None) -> dict[str, Any]:
    """What ``--report`` writes: the metric the branches were ranked by and the judgement, then per
    branch its params and what ``nodeflow run --report`` writes."""
    return {"backend": backend, "metric": metric, "warning": warning,
            "judgement": judgement.to_json() if judgement is not None else None,
            "branches": [{"params": b.params, "run": b.run_id,
                          **(b.report.to_json() if b.report is not None else {"ok": False, "nodes": {}})}
                         for b in branches]}


# -- sweeps from the editor: each branch a queued run of the session, tagged with the sweep -----------
SOURCE_PREFIX = "sweep:"


def source_tag(sweep_id: int) -> str:
    """The ``source`` of a branch's run in the history: which sweep it belongs to."""
    return f"{SOURCE_PREFIX}{sweep_id}"


def branch_seconds(run: dict[str, Any]) -> float | None:
    """A branch's own time: what its nodes that ran took (a node the cache had, or another branch of
    the same job computed, took it nothing), so a fully cached branch shows 0 and not the whole
    job's time, which every branch's run spans. None while it has not finished."""
    if run["status"] in ("queued", "running") or run.get("seconds") is None:
        return None
    return round(sum(float(info.get("seconds") or 0.0) for info in run["nodes"].values()
                     if info.get("status") == "ran"), 3)


def summary(record: dict[str, Any], runs: list[dict[str, Any]], registry: Any = None,
            predictions_of: Callable[[str | None], dict[str, SplitPredictions]] | None = None) -> dict[str, Any]:
    """A sweep as the editor and ``GET /api/sweeps/{id}`` show it: per branch its values, run,
    status, the main metric and time; the metric it is ranked by (the record's ``metric``, else a
    validation metric, :func:`main_metric`), a warning when that metric is measured on test; the
    best branch and whether it is clearly best (``star``) or tied (:func:`judge`, from each
    branch's per-image predictions through ``predictions_of``); progress.

    ``record``: ``{"id", "grid": [[NAME, VALUES], ...], "target", "metric", "branches": [{"params", "run"}]}``;
    ``runs``: the history rows of its branches, in the same order (with their graphs, whose nodes
    ``registry`` says the metrics' splits of)."""
    done = [r["status"] == "done" for r in runs]
    finals = [{n: info.get("metrics") or {} for n, info in r["nodes"].items()} for r in runs]
    splits: dict[str, str] = {}
    if registry is not None:
        for run in runs:
            splits.update(metric_splits(run.get("graph"), registry))
    metric = record.get("metric") or main_metric([m for m, ok in zip(finals, done) if ok], record.get("target"),
                                                 splits)
    values = [value_of(m, metric) if ok else None for m, ok in zip(finals, done)]
    split = split_of(metric, splits) if metric else None
    outcomes = branch_outcomes(runs, metric, split, predictions_of) if predictions_of is not None else None
    judgement = judge(values, metric, outcomes)
    branches = [{"branch": i + 1, "params": b["params"], "run": b["run"], "status": r["status"],
                 "position": r.get("position"), "value": v, "seconds": branch_seconds(r), "error": r["error"],
                 "best": i == judgement.star, "tie": i in judgement.tie}
                for i, (b, r, v) in enumerate(zip(record["branches"], runs, values))]
    total = len(branches)
    active = [b["branch"] for b in branches if b["status"] in ("queued", "running")]
    running = [b["branch"] for b in branches if b["status"] == "running"]
    statuses = {b["status"] for b in branches}
    if active:
        state = "running" if running else "queued"
    elif "cancelled" in statuses:
        state = "cancelled"
    elif statuses - {"done"}:
        state = "failed"
    else:
        state = "done"
    finished = total - len(active)
    if running:
        progress = f"branch {running[0]} of {total}"
    elif active:
        progress = f"waiting: branch {active[0]} of {total} is queued"
    else:
        progress = f"{finished} of {total} branches finished"
    return {"id": record["id"], "grid": record["grid"], "target": record.get("target"), "metric": metric,
            "split": split, "warning": held_out_warning(metric) if held_out(metric, splits) else None,
            "status": state, "finished": finished, "total": total, "progress": progress, "best": judgement.best,
            "star": judgement.star, "tie": [i + 1 for i in judgement.tie], "judgement": judgement.words,
            "comparison": judgement.to_json()["comparison"], "branches": branches}


class SweepNotFound(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


@guarded
class Sweeps:
    """The sweeps of one project over its open document: one job of its run queue each, every branch
    a run tagged with the sweep."""

    def __init__(self, document: Any, queue: Any, store: RunStore, executor: Any, predictions: Any) -> None:
        self.document = document
        self.queue = queue
        self.store = store
        self.executor = executor
        self.predictions = predictions

    @works
    def submit(self, grid: list[tuple[str, list[Any]]], target: str | None = None,
               metric: str | None = None) -> dict[str, Any]:
        """Check a grid over the open document (every value against its param, every branch as a
        whole; a GridError names what is wrong and nothing is queued), then queue its branches as one
        job behind whatever runs now; ``metric`` (``NODE.METRIC``) ranks them, by default a validation
        metric. Returns the sweep as :meth:`get` does."""

        def confined(graph: Graph, values: dict[str, Any]) -> Graph:
            """The values set, with path params held to the allowed folders as an edit's are (an
            EditError, a ValueError, which ``expand`` turns into a GridError naming the param)."""
            result = with_values(graph, values)
            self.document.check_paths(result)
            return result

        self.queue.admit()
        base = self.document.graph
        if target is not None and not base.has_node(target):
            raise GridError(f"target: no node '{target}'", "target")
        check_metric(base, metric)
        branches = expand(base, grid, self.executor, target, assign=confined)
        try:
            sweep_id = self.queue.add_sweep([(b.graph, b.params) for b in branches], target, grid, base.name,
                                            source_tag, metric)
        finally:
            self.queue.jobs_changed()
        return self.get(sweep_id)

    def _record(self, sweep_id: int | str) -> dict[str, Any]:
        try:
            return self.store.sweep(sweep_id)
        except RunNotFound as exc:
            raise SweepNotFound(str(exc)) from None

    @reads
    def get(self, sweep_id: int | str, curves: bool = False) -> dict[str, Any]:
        """A sweep's branches (values, run, status, the target's main metric, time), the best one and
        its progress (see :func:`summary`); ``curves`` adds each branch's curves (for a branch that
        came from the cache, those of the run that computed its result)."""
        record = self._record(sweep_id)
        runs = [self.store.get(b["run"]) for b in record["branches"]]
        data = summary(record, runs, self.executor.registry, self.predictions.of)
        if curves:
            for branch, run in zip(data["branches"], runs):
                branch["curves"] = self.store.run_curves(run)
        return data

    @works
    def cancel(self, sweep_id: int | str) -> dict[str, Any]:
        """Cancel the sweep's queued branches, then stop its running ones (they end ``cancelled``)."""
        record = self._record(sweep_id)
        self.queue.cancel(*(branch["run"] for branch in record["branches"]))
        return self.get(sweep_id)


__all__ = ["MAX_BRANCHES", "Branch", "GridError", "Judgement", "SweepNotFound", "Sweeps", "best_of", "branch_count",
           "branch_outcomes",
           "branch_values", "check_metric", "combinations", "expand", "held_out", "held_out_warning", "judge",
           "key_metric", "main_metric", "parse_grid", "results_table", "run_sweep", "source_tag", "summary",
           "sweep_report", "value_of", "with_values"]
