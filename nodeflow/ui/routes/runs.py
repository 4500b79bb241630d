"""Runs: start, stop and watch one; what one would cost; the run history and its queue (:mod:`nodeflow.runs`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Body, FastAPI, HTTPException, Query, Request

from nodeflow.compare import compare_run_ids
from nodeflow.edits import RunRequest
from nodeflow.errors import GraphInvalid
from nodeflow.runs import run_number

from ..api import Guard, json_safe
from ..state import Hub


def run_routes(app: FastAPI, hub: Hub, guard: Guard) -> None:
    """``/api/run``, ``/api/stop``, ``/api/status``, ``/api/estimate``, ``/api/runs...``."""
    session = hub.session

    @app.post("/api/run", tags=["runs"],
              summary="Start a run, or queue it behind the running one; answers its id, status, queue position "
                      "and plan at once",
              responses={404: {"description": "no node with that id"},
                         422: {"description": "the graph is not valid: the problems, per node"}})
    def post_run(request: Request, run: Annotated[RunRequest | None, Body()] = None) -> dict[str, Any]:
        guard(request)
        try:
            queued = session.queue.submit(run.target if run is not None else None, source="api")
        except GraphInvalid as exc:
            raise HTTPException(422, {"message": "the graph is not valid", "problems":
                                      [p.to_json() for p in exc.problems]}) from None
        except KeyError as exc:
            raise HTTPException(404, str(exc.args[0]) if exc.args else str(exc)) from None
        return queued  # id, status (running or queued), position in the queue, plan

    @app.post("/api/stop", tags=["runs"], summary="Stop the run at the next batch")
    def post_stop(request: Request) -> dict[str, Any]:
        guard(request)
        session.queue.stop()
        return {"running": session.queue.running}

    @app.get("/api/status", tags=["runs"], summary="Per-node state, metrics, problems and the last error")
    def get_status(request: Request) -> dict[str, Any]:
        guard(request)
        return hub.api_status()

    @app.get("/api/estimate", tags=["runs"],
             summary="What a run would cost, per stale node: seconds per epoch and in all, epochs, peak memory, "
                     "device, feature cache; measured on a few batches of the real data, nothing is trained",
             responses={404: {"description": "no node with that id"},
                        422: {"description": "the graph is not valid: the problems, per node"}})
    def get_estimate(request: Request, target: str | None = None) -> dict[str, Any]:
        guard(request)  # a plain def: FastAPI runs it in its thread pool, off the event loop
        try:
            return session.estimator.estimate(target or None)
        except GraphInvalid as exc:
            raise HTTPException(422, {"message": "the graph is not valid", "problems":
                                      [p.to_json() for p in exc.problems]}) from None
        except KeyError as exc:
            raise HTTPException(404, str(exc.args[0]) if exc.args else str(exc)) from None

    # -- run history and queue (nodeflow.runs) -------------------------------------------------------
    @app.get("/api/runs")
    def get_runs(request: Request, limit: int = 200) -> list[dict[str, Any]]:
        guard(request)
        return session.runs.list(limit=max(1, min(limit, 10_000)))

    @app.get("/api/runs/compare", tags=["runs"],
             summary="Two runs compared: changed params, metric deltas in readable units with the images they "
                     "stand on, and per split the difference image by image (95% interval, McNemar's p) with "
                     "the images that flipped",
             responses={404: {"description": "no such run"}, 422: {"description": "a or b missing"}})
    def compare_runs(request: Request, a: Annotated[str, Query(max_length=40)],
                     b: Annotated[str, Query(max_length=40)]) -> dict[str, Any]:
        guard(request)  # a plain def: the bootstrap runs in FastAPI's thread pool, off the event loop
        try:
            return json_safe(compare_run_ids(session.runs, session.predictions, session.registry, a, b))
        except KeyError as exc:
            raise HTTPException(404, str(exc)) from None

    @app.get("/api/runs/{run_id}", responses={404: {"description": "no such run"}})
    def get_run(request: Request, run_id: str) -> dict[str, Any]:
        guard(request)
        try:
            return session.runs.get(run_id)
        except KeyError as exc:
            raise HTTPException(404, str(exc)) from None

    @app.post("/api/runs/{run_id}/cancel", responses={404: {"description": "no such run"}})
    def cancel_run(request: Request, run_id: str) -> dict[str, Any]:
        guard(request)
        try:
            number = run_number(run_id)
            return {"id": number, "status": session.queue.cancel(number)}
        except KeyError as exc:
            raise HTTPException(404, str(exc)) from None
