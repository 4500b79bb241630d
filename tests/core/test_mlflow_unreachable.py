"""An MLflow tracking server where nothing listens (the real client, a free port on loopback):
the run is finished and the next queued run starts before MLflow is asked anything, the client
gives up within bounds, and the failure is a warning in the editor's log and in the run's record."""

from __future__ import annotations

import socket
import time

import pytest

from nodeflow.mlflow_log import HTTP_BOUNDS, BackgroundLogger
from nodeflow.session import Session
from tests.waiting import wait_for

from .conftest import make_graph

pytest.importorskip("mlflow")


def nowhere() -> str:
    """An http address on loopback where nothing listens (a port the OS just gave out, closed again)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def session(registry, workspace):
    graph = make_graph({"a": ("test.constant", {}), "b": ("test.constant", {}), "sum": ("test.add", {})},
                       ["a.value->sum.a", "b.value->sum.b"], name="tracked")
    session = Session(registry, workspace, graph=graph)
    yield session
    session.close()


def test_an_unreachable_mlflow_holds_neither_the_run_nor_the_queue(session, monkeypatch):
    # few tries, so that logging before the next run (as it was) fails this test in seconds, not minutes
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    session.mlflow_uri = uri = nowhere()
    first = session.queue.submit()["id"]
    second = session.queue.submit()["id"]
    assert wait_for(lambda: session.runs.get(second)["status"] == "done", 60)
    assert session.runs.get(first)["status"] == "done" and not session.queue.running
    assert wait_for(lambda: session.runs.get(first)["warnings"], 120)
    [warning] = session.runs.get(first)["warnings"]
    assert f"could not log run {first} to MLflow at {uri}" in warning
    logged = [e for e in session.snapshot()["log"] if e["message"] == warning]
    assert logged, "the warning is in the editor's log too"
    assert session.runs.get(second)["started"] < logged[0]["time"]  # the next run did not wait for MLflow


def test_mlflow_is_given_up_on_within_bounds_when_the_environment_sets_none(session, monkeypatch):
    for name in HTTP_BOUNDS:  # as a user who never heard of these variables
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    run = session.queue.submit()["id"]
    assert wait_for(lambda: session.runs.get(run)["status"] == "done", 60)
    logger = BackgroundLogger(session.runs, nowhere())
    started = time.monotonic()
    logger.submit(run)
    assert logger.close(timeout=120)
    assert time.monotonic() - started < 60  # MLflow's own defaults kept trying for about four minutes
    assert "could not log run" in session.runs.get(run)["warnings"][0]
