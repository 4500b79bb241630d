"""A finished node's details: the tables it reported, a confusion cell's images and their Grad-CAM overlays."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import Response

from nodeflow.node import ParamProblem
from nodeflow.runs import run_number

from ..api import API_BASE, Guard, OVERLAY_NAME, cell_gallery_of, overlay_url, read_overlay
from ..state import Hub


def result_routes(app: FastAPI, hub: Hub, guard: Guard) -> None:
    """``/api/tables/{node_id}``, ``/api/errors/{node_id}/...``."""
    session = hub.session

    @app.get("/api/tables/{node_id}", tags=["runs"], summary="The tables a finished node reported (e.g. the "
             "dataset doctor's findings, the worst errors)", responses={404: {"description": "no such node, or it "
                                                                               "has no result for its params"}})
    def get_tables(request: Request, node_id: str) -> dict[str, Any]:
        guard(request)
        try:
            return {"node": node_id, "tables": session.results.tables(node_id)}
        except LookupError as exc:
            raise HTTPException(404, str(exc.args[0]) if exc.args else str(exc)) from None

    @app.get("/api/errors/{node_id}/cells/{true}/{predicted}", tags=["runs"],
             summary="One page of a confusion-matrix cell's images (true class, predicted class), worst first, "
                     "with Grad-CAM overlay URLs; overlays are drawn once and then served from the cache",
             responses={404: {"description": "no such node, class or page, or the node has not run"},
                        409: {"description": "the overlays could not be drawn (the cause is named)"},
                        422: {"description": "a parameter of the node that the drawing refuses"}})
    def get_cell(request: Request, node_id: str, true: str, predicted: str,
                 page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
                 per_page: Annotated[int, Query(ge=1, le=200)] = 12,
                 run: Annotated[str | None, Query(max_length=40, description=(
                     "the node as this run had it (a compared run's flipped image), not as the open graph "
                     "has it now"))] = None) -> dict[str, Any]:
        guard(request)
        try:
            gallery = cell_gallery_of(session)(node_id, true, predicted, page, per_page, run)
        except LookupError as exc:
            raise HTTPException(404, str(exc.args[0]) if exc.args else str(exc)) from None
        except ParamProblem as exc:
            raise HTTPException(422, f"{node_id}: parameter '{exc.param}': {exc}") from None
        except RuntimeError as exc:
            raise HTTPException(409, str(exc)) from None
        base = request.scope.get(API_BASE, "/api")
        return {"node": node_id, **gallery, "rows": [
            {**row, "overlay_url": overlay_url(node_id, row.get("overlay"), base, run)} for row in gallery["rows"]]}

    @app.get("/api/errors/{node_id}/overlays/{name}", tags=["runs"], summary="A Grad-CAM overlay PNG",
             response_class=Response, responses={200: {"content": {"image/png": {}}},
                                                 404: {"description": "no such overlay"}})
    def get_overlay(request: Request, node_id: str, name: str,
                    run: Annotated[str | None, Query(max_length=40, description=(
                        "the node as this run had it (a compared run's flipped image)"))] = None) -> Response:
        guard(request)
        try:
            graph = session.document.graph if run is None else session.runs.graph_of(run_number(run))[0]
        except KeyError:
            raise HTTPException(404, f"no run '{run[:40]}'") from None
        if not graph.has_node(node_id):
            raise HTTPException(404, f"no node with id '{node_id[:80]}'")
        png = read_overlay(session.results.overlay_folder, name) if OVERLAY_NAME.fullmatch(name) else None
        if png is None:
            raise HTTPException(404, f"no overlay '{name[:80]}'")
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=86400"})
