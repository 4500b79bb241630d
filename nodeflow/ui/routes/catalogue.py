"""What the API offers: the node catalogue and the API's own schema."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request

from ..api import Guard, document_refusals
from ..state import Hub


def catalogue_routes(app: FastAPI, hub: Hub, guard: Guard) -> None:
    """``/api/nodes``, ``/api/openapi.json`` (every ``/api/`` route of ``app``, whichever group added it)."""

    @app.get("/api/nodes", tags=["catalogue"], summary="The node catalogue (types, ports, params schemas)")
    def get_nodes(request: Request) -> list[dict[str, Any]]:
        guard(request)
        return hub.catalogue_list

    @app.get("/api/openapi.json", tags=["catalogue"], summary="This API's OpenAPI schema")
    def get_openapi_schema(request: Request) -> dict[str, Any]:
        guard(request)
        from fastapi.openapi.utils import get_openapi

        routes = [r for r in app.routes if getattr(r, "path", "").startswith("/api/")]
        return document_refusals(get_openapi(
            title="nodeflow editor API", version="1", routes=routes,
            description="The open graph, its edits and its runs; the same session the editor shows."))
