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
import difflib
import itertools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nodeflow.errors import GraphInvalid
from nodeflow.executor import RunReport
from nodeflow.graph import Graph
from nodeflow.runs import Recording, RunStore

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


def run_sweep(executor: Any, branches: list[Branch], target: str | None = None, force: tuple[str, ...] = (),
              backend: Any = None, store: RunStore | None = None) -> list[Branch]:
    """Run every branch as one run of the scheduler (:func:`nodeflow.scheduler.execute`) on ``backend``
    (one node at a time here when None; a Dask backend runs independent branches at once). Each
    branch is recorded in ``store`` when given; a branch that a stop left with nothing done is
    cancelled."""
    from nodeflow.scheduler import InProcess, execute

    with contextlib.ExitStack() as stack:
        recordings = [stack.enter_context(Recording(store, executor, b.graph, target, source="sweep",
                                                          subscribe=False))
                      for b in branches] if store is not None else []
        for branch, recording in zip(branches, recordings):
            branch.run_id = recording.run_id
        listeners = [[r.recorder] for r in recordings] or [[] for _ in branches]
        prepared = [executor.prepare(b.graph, target, force, heard) for b, heard in zip(branches, listeners)]
        reports = execute(prepared, backend if backend is not None else InProcess(executor.stop_flag))
        for i, (branch, report) in enumerate(zip(branches, reports)):
            branch.report = report
            if recordings:
                recordings[i].report = report
                if report.interrupted and all(r.status == "skipped" for r in report.nodes.values()):
                    recordings[i].status = "cancelled"
    return branches


def _node_metrics(branch: Branch) -> dict[str, dict[str, Any]] | None:
    if branch.report is None:
        return None
    return {node_id: node.metrics for node_id, node in branch.report.nodes.items()}


def main_metric(runs: list[dict[str, dict[str, Any]]], target: str | None) -> str | None:
    """The ``NODE.METRIC`` that ranks branches, from each branch's final metrics by node: of the
    target (or of the last node with metrics), a validation accuracy, else another accuracy, else
    its first metric."""
    if not runs:
        return None
    nodes = [target] if target is not None else list(dict.fromkeys(n for r in runs for n in r))
    for node_id in reversed(nodes):
        names = sorted({name for r in runs for name, value in (r.get(node_id) or {}).items()
                        if isinstance(value, (int, float)) and not isinstance(value, bool)})
        if names:
            ranked = [n for n in names if n.startswith("val") and "accuracy" in n] or \
                [n for n in names if "accuracy" in n] or names
            return f"{node_id}.{ranked[0]}"
    return None


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
    lower = any(word in (metric or "").rsplit(".", 1)[-1].lower() for word in ("loss", "error"))
    return (min if lower else max)(scored)[1]


def key_metric(branches: list[Branch], target: str | None, metric: str | None = None) -> str | None:
    """The ``NODE.METRIC`` that ranks the branches: the one asked for, else :func:`main_metric`."""
    if metric is not None:
        return metric
    return main_metric([m for b in branches if (m := _node_metrics(b)) is not None], target)


def metric_value(branch: Branch, metric: str | None) -> float | None:
    return value_of(_node_metrics(branch), metric)


def best_branch(branches: list[Branch], metric: str | None) -> int | None:
    """Index of the best finished branch by ``metric`` (see :func:`best_of`)."""
    return best_of([metric_value(b, metric) if b.report is not None and b.report.ok else None for b in branches],
                   metric)


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


# -- sweeps from the editor: each branch a queued run of the session, tagged with the sweep -----------
SOURCE_PREFIX = "sweep:"


def source_tag(sweep_id: int) -> str:
    """The ``source`` of a branch's run in the history: which sweep it belongs to."""
    return f"{SOURCE_PREFIX}{sweep_id}"


def summary(record: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A sweep as the editor and ``GET /api/sweeps/{id}`` show it: per branch its values, run,
    status, the target's main metric and time; the best finished branch; progress.

    ``record``: ``{"id", "grid": [[NAME, VALUES], ...], "target", "branches": [{"params", "run"}]}``;
    ``runs``: the history rows of its branches, in the same order."""
    done = [r["status"] == "done" for r in runs]
    finals = [{n: info.get("metrics") or {} for n, info in r["nodes"].items()} for r in runs]
    metric = main_metric([m for m, ok in zip(finals, done) if ok], record.get("target"))
    values = [value_of(m, metric) if ok else None for m, ok in zip(finals, done)]
    best = best_of(values, metric)
    branches = [{"branch": i + 1, "params": b["params"], "run": b["run"], "status": r["status"],
                 "position": r.get("position"), "value": v, "seconds": r["seconds"], "error": r["error"],
                 "best": i == best}
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
            "status": state, "finished": finished, "total": total, "progress": progress, "best": best,
            "branches": branches}


__all__ = ["MAX_BRANCHES", "Branch", "GridError", "best_branch", "best_of", "branch_count", "combinations", "expand",
           "key_metric", "main_metric", "parse_grid", "results_table", "run_sweep", "source_tag", "summary",
           "sweep_report", "value_of", "with_values"]
