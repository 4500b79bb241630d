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

import contextlib
import itertools
import json
import math
from dataclasses import dataclass
from typing import Any

from nodeflow.executor import RunReport
from nodeflow.graph import Graph
from nodeflow.runs import Recording, RunStore


class GridError(ValueError):
    """A ``--grid`` that cannot be used; the message names it."""


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


@dataclass
class Branch:
    params: dict[str, Any]
    graph: Graph
    report: RunReport | None = None
    run_id: int | None = None


def run_sweep(make_executor, branches: list[Branch], target: str | None = None, force: tuple[str, ...] = (),
              dispatcher: Any = None, store: RunStore | None = None) -> list[Branch]:
    """Run every branch, each through its own executor (so events and history stay per branch)
    sharing one cache; with a dispatcher all branches are one dispatch. Each is recorded in
    ``store`` when given."""
    executors = [make_executor() for _ in branches]
    for executor in executors[1:]:
        executor.cache = executors[0].cache  # one memory cache too, for values that are not persisted
    with contextlib.ExitStack() as stack:
        recordings = []
        for branch, executor in zip(branches, executors):
            if store is not None:
                recording = stack.enter_context(Recording(store, executor, branch.graph, target, source="sweep"))
                branch.run_id = recording.run_id
                recordings.append(recording)
        if dispatcher is None:
            for i, (branch, executor) in enumerate(zip(branches, executors)):
                branch.report = executor.run(branch.graph, target=target, force=force)
                if recordings:
                    recordings[i].report = branch.report
                if branch.report.interrupted:
                    break
        else:
            prepared = [ex.prepare(b.graph, target, force) for b, ex in zip(branches, executors)]
            for i, (branch, report) in enumerate(zip(branches, dispatcher.run(prepared))):
                branch.report = report
                if recordings:
                    recordings[i].report = report
        for i, branch in enumerate(branches):  # a branch never started (a stop before it) is cancelled
            if branch.report is None and recordings:
                recordings[i].status = "cancelled"
    return branches


def key_metric(branches: list[Branch], target: str | None, metric: str | None = None) -> str | None:
    """The ``NODE.METRIC`` that ranks the branches: the one asked for, else an accuracy of the target
    (or of the last node with metrics), else that node's first metric."""
    if metric is not None:
        return metric
    reports = [b.report for b in branches if b.report is not None]
    if not reports:
        return None
    first = reports[0]
    nodes = [target] if target is not None else list(first.nodes)
    for node_id in reversed(nodes):
        names = sorted({name for r in reports for name in r.nodes.get(node_id, _EMPTY).metrics})
        if names:
            accurate = [n for n in names if "accuracy" in n]
            return f"{node_id}.{(accurate or names)[0]}"
    return None


def metric_value(branch: Branch, metric: str | None) -> float | None:
    if metric is None or branch.report is None:
        return None
    node_id, _, name = metric.partition(".")
    value = branch.report.nodes.get(node_id, _EMPTY).metrics.get(name)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def best_branch(branches: list[Branch], metric: str | None) -> int | None:
    """Index of the best branch by ``metric``: the highest, or the lowest for a loss or an error."""
    scored = [(metric_value(b, metric), i) for i, b in enumerate(branches) if b.report is not None and b.report.ok]
    scored = [(v, i) for v, i in scored if v is not None]
    if not scored:
        return None
    lower = any(word in (metric or "").lower() for word in ("loss", "error"))
    return (min if lower else max)(scored)[1]


def results_table(branches: list[Branch], metric: str | None) -> str:
    """A plain-text table: one row per branch, its params, status and key metric, the best marked *."""
    best = best_branch(branches, metric)
    names = list(branches[0].params) if branches else []
    header = ["", "RUN", *names, "STATUS", metric or "METRIC"]
    rows = []
    for i, b in enumerate(branches):
        status = "-" if b.report is None else (
            "ok" if b.report.ok else "interrupted" if b.report.interrupted else "failed")
        value = metric_value(b, metric)
        rows.append(["*" if i == best else "", str(b.run_id or "-"),
                     *[json.dumps(b.params[n]) for n in names], status,
                     "-" if value is None else f"{value:.4g}"])
    widths = [max(len(str(r[c])) for r in [header, *rows]) for c in range(len(header))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    if best is not None:
        lines.append(f"* best: {', '.join(f'{k}={json.dumps(v)}' for k, v in branches[best].params.items())} "
                     f"({metric} = {metric_value(branches[best], metric):.4g})")
    return "\n".join(lines)


def sweep_report(branches: list[Branch], backend: str) -> dict[str, Any]:
    """What ``--report`` writes: per branch its params and what ``nodeflow run --report`` writes."""
    return {"backend": backend,
            "branches": [{"params": b.params, "run": b.run_id,
                          **(b.report.to_json() if b.report is not None else {"ok": False, "nodes": {}})}
                         for b in branches]}


class _Empty:
    metrics: dict[str, float] = {}


_EMPTY = _Empty()

__all__ = ["Branch", "GridError", "best_branch", "combinations", "key_metric", "parse_grid", "results_table",
           "run_sweep", "sweep_report"]
