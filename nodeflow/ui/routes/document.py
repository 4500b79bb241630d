"""The open graph document: read it, replace it, edit it, validate it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Body, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from nodeflow.edits import MAX_OPS, EditRequest
from nodeflow.graph import Graph, GraphFileError
from nodeflow.session import EditError

from ..api import Guard
from ..state import Hub


def document_routes(app: FastAPI, hub: Hub, guard: Guard) -> None:
    """``/api/graph``, ``/api/edit``, ``/api/validate``."""
    session = hub.session

    @app.get("/api/graph", tags=["document"], summary="The open graph document")
    def get_graph(request: Request) -> JSONResponse:
        guard(request)
        return JSONResponse(session.document.graph.model_dump(mode="json", exclude_none=True),
                            headers={"X-Nodeflow-Version": str(session.document.version)})

    @app.put("/api/graph", tags=["document"], summary="Replace the open graph document (undoable)",
             responses={422: {"description": "not a graph document, or a path outside the allowed folders"}})
    def put_graph(request: Request, data: Annotated[dict[str, Any], Body(
            description="a graph document, as `nodeflow` saves it")]) -> dict[str, Any]:
        guard(request)
        try:
            graph = Graph.from_data(data, "request body")
            session.document.replace(graph)
        except (GraphFileError, EditError) as exc:
            raise HTTPException(422, str(exc)) from None
        return {"version": session.document.version, "problems": [p.to_json() for p in session.validate()]}

    @app.post("/api/edit", tags=["document"], summary=f"Apply edit operations as one undo step (at most {MAX_OPS})",
              responses={422: {"description": "a wrong op or argument (named), or an edit the document cannot take; "
                                              "nothing was changed"}})
    def post_edit(request: Request, edit: EditRequest) -> dict[str, Any]:
        """Edits, all or nothing: ``add_node``, ``remove_node``, ``set_params``, ``move``,
        ``rename``, ``connect``, ``disconnect`` (see the schema for each op's arguments)."""
        guard(request)
        try:
            session.document.edits(edit.ops)
        except EditError as exc:
            raise HTTPException(422, str(exc).strip('"')) from None
        return {"version": session.document.version}

    @app.get("/api/validate", tags=["document"], summary="Problems of the open graph")
    def get_validate(request: Request) -> dict[str, Any]:
        guard(request)
        return {"problems": [p.to_json() for p in session.validate()]}
