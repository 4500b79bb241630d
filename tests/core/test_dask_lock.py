"""One computation per cache key across processes that share a workspace (the lock Dask workers rely on)."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

from nodeflow.executor import Executor
from nodeflow.node import Registry

from .conftest import make_graph


def _run(workspace: str, log: str, start, results) -> None:
    os.environ["NODEPACK_RUN_LOG"] = log
    from tests import nodepack

    registry = Registry()
    registry.add_module(nodepack)
    graph = make_graph({"slow": ("test.slow", {"steps": 20, "delay": 0.05}), "t": ("test.describe", {})},
                       ["slow.value->t.value"])
    start.wait(30)
    report = Executor(registry, Path(workspace)).run(graph)
    results.put({n: r.status for n, r in report.nodes.items()})


def test_two_processes_asking_for_the_same_key_compute_it_once(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    log = tmp_path / "runs.log"
    procs = [ctx.Process(target=_run, args=(str(tmp_path / "ws"), str(log), start, results)) for _ in range(2)]
    for p in procs:
        p.start()
    start.set()
    statuses = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert log.read_text().split().count("slow") == 1  # the second process waited, then took the first's result
    assert sorted(s["slow"] for s in statuses) == ["cached", "ran"]
    assert all(s["t"] in ("ran", "cached") for s in statuses)
    assert not list((tmp_path / "ws" / "cache").rglob("*.damaged-*"))


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    log = tmp_path / "runs.log"
    victim = ctx.Process(target=_run, args=(str(tmp_path / "ws"), str(log), start, results))
    victim.start()
    start.set()
    for _ in range(200):  # wait until it holds the lock and computes
        if log.exists() and "slow" in log.read_text():
            break
        multiprocessing.connection.wait([victim.sentinel], timeout=0.05)
    victim.kill()
    victim.join(10)
    survivor = ctx.Process(target=_run, args=(str(tmp_path / "ws"), str(log), start, results))
    survivor.start()
    assert results.get(timeout=60)["slow"] == "ran"
    survivor.join(30)
    assert log.read_text().split().count("slow") == 2
