"""Sweeps (:mod:`nodeflow.sweep`): a grid over the open graph, each branch a queued run."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from nodeflow.errors import GraphInvalid
from nodeflow.runs import RunNotFound
from nodeflow.sweep import SweepNotFound
from nodeflow.sweep import MAX_BRANCHES, GridError, grid_of

from ..api import Guard
from ..state import Hub


class SweepRequest(BaseModel):
    """``POST /api/sweep``: values per ``NODE.PARAM`` (every combination is a branch) and the node
    each branch runs up to."""

    model_config = ConfigDict(extra="forbid")
    grid: dict[str, list[Any]] = Field(description='values per NODE.PARAM, e.g. {"train.lr": [1e-5, 1e-4]}')
    target: str | None = Field(None, description="run each branch up to this node (default: the whole graph)")
    metric: str | None = Field(None, max_length=300, description=(
        "NODE.METRIC that ranks the branches (default: a validation metric; a test metric is allowed, and the "
        "results then carry a warning)"))


def sweep_routes(app: FastAPI, hub: Hub, guard: Guard) -> None:
    """``/api/sweep``, ``/api/sweeps/{sweep_id}``, its cancel."""
    session = hub.session

    @app.post("/api/sweep", tags=["runs"],
              summary=f"Sweep params of the open graph: one queued run per combination (at most {MAX_BRANCHES})",
              responses={422: {"description": "a value its param refuses, an unknown node or param, too many "
                                              "branches, or a branch that cannot run: the message names it, "
                                              "'param' is the NODE.PARAM at fault; nothing was queued"}})
    def post_sweep(request: Request, body: SweepRequest) -> dict[str, Any]:
        """Every value is checked against its param and every branch as a whole before anything is
        queued; the answer is the sweep as ``GET /api/sweeps/{id}`` gives it."""
        guard(request)
        try:
            return session.sweeps.submit(grid_of(body.grid), body.target, body.metric)
        except GridError as exc:
            raise HTTPException(422, {"message": str(exc), "param": exc.name}) from None
        except GraphInvalid as exc:
            raise HTTPException(422, {"message": "the graph is not valid", "problems":
                                      [p.to_json() for p in exc.problems]}) from None

    @app.get("/api/sweeps/{sweep_id}", tags=["runs"],
             summary="A sweep's branches (values, run, status, main metric, time), the best one and its progress",
             responses={404: {"description": "no such sweep, or a branch's run is gone from the history"}})
    def get_sweep(request: Request, sweep_id: str, curves: bool = False) -> dict[str, Any]:
        guard(request)
        try:
            return session.sweeps.get(sweep_id, curves=curves)
        except (SweepNotFound, RunNotFound) as exc:  # a branch's run gone from the history too
            raise HTTPException(404, str(exc)) from None

    @app.post("/api/sweeps/{sweep_id}/cancel", tags=["runs"],
              summary="Cancel a sweep's queued branches and stop its running one",
              responses={404: {"description": "no such sweep, or a branch's run is gone from the history"}})
    def cancel_sweep(request: Request, sweep_id: str) -> dict[str, Any]:
        guard(request)
        try:
            return session.sweeps.cancel(sweep_id)
        except (SweepNotFound, RunNotFound) as exc:  # a branch's run gone from the history too
            raise HTTPException(404, str(exc)) from None
