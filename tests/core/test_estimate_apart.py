"""Where a session runs its tasks in a worker process, its estimates are measured in a process of
their own too (nodeflow.worker.EstimateWorker), so the process that serves the editor never holds
the profiled batches; a refused graph or target is refused as before."""

from __future__ import annotations

import os

import pytest

from nodeflow.errors import GraphInvalid
from nodeflow.graph import Graph
from nodeflow.session import Session
from tests.core.test_classroom_limits import MiB, allocate_graph
from tests.core.test_classroom_server import pack


def test_the_one_person_editors_estimates_are_measured_in_a_process_kept_for_the_next(tmp_path):
    session = Session(pack(), tmp_path / "ws", graph=allocate_graph(8 * MiB), device="cpu", isolate=True)
    try:
        first = session.estimator.estimate()["nodes"]["take"]
        measurer = session.estimator.worker.pid
        assert first["status"] == "stale" and first["pid"] == measurer and measurer != os.getpid()
        session.document.replace(allocate_graph(16 * MiB))
        again = session.estimator.estimate()["nodes"]["take"]
        assert again["bytes"] == 16 * MiB and again["pid"] == measurer  # the same process: no second start
        with pytest.raises(KeyError):
            session.estimator.estimate("nowhere")
        broken = Graph.from_data({"format": "nodeflow.graph", "version": 1, "nodes": [
            {"id": "take", "type": "test.allocate", "params": {"bytes": -1}}], "edges": []})
        session.document.replace(broken)
        with pytest.raises(GraphInvalid):
            session.estimator.estimate()
    finally:
        session.close()
    assert session.estimator.worker.pid is None


def test_in_process_sessions_still_measure_here(tmp_path):
    session = Session(pack(), tmp_path / "ws", graph=allocate_graph(MiB), device="cpu")
    try:
        assert session.estimator.worker is None and session.estimator.estimate()["nodes"]["take"]["pid"] == os.getpid()
    finally:
        session.close()
