"""The editor's HTTP API, on the same server and the same Session as the page, so a script and
a browser tab always see one graph and one run."""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from typing import Any

from fastapi import Body, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from nodeflow.executor import GraphInvalid
from nodeflow.graph import Graph, GraphFileError
from nodeflow.session import EditError

from .state import Hub


def token_ok(request: Request, token: str | None) -> bool:
    if token is None:
        return True
    given = request.query_params.get("token") or request.cookies.get(COOKIE) or ""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        given = header[7:].strip()
    return hmac.compare_digest(given.encode(), token.encode())


#: NiceGUI's own scripts, styles and websocket: no data of ours, and the websocket only accepts
#: clients whose page was served (which needs the token)
PUBLIC_PREFIXES = ("/_nicegui/", "/_nicegui_ws/", "/favicon")
COOKIE = "nodeflow_token"


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def access_token(host: str, token: str | None) -> tuple[str | None, bool]:
    """The token to require, and whether it was made up here: off loopback one is always needed."""
    if token or is_loopback(host):
        return token or None, False
    return secrets.token_urlsafe(24), True


def install_token_check(app: FastAPI, token: str | None) -> None:
    """Every page and API request needs the token (query, bearer header or the cookie the page
    sets); anything else gets 401. Comparison is constant-time."""
    if not token:
        return

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        if not request.url.path.startswith(PUBLIC_PREFIXES) and not token_ok(request, token):
            return PlainTextResponse("401: missing or wrong token; open the address `nodeflow serve` printed, "
                                     "or send 'Authorization: Bearer <token>'", status_code=401)
        response = await call_next(request)
        if request.query_params.get("token"):
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response


def install_api(app: FastAPI, hub: Hub, token: str | None = None) -> None:
    session = hub.session
    install_token_check(app, token)

    def guard(request: Request) -> None:
        if not token_ok(request, token):
            raise HTTPException(401, "missing or wrong token: pass ?token=... or 'Authorization: Bearer ...'")

    @app.get("/api/graph")
    def get_graph(request: Request) -> JSONResponse:
        guard(request)
        return JSONResponse(session.graph.model_dump(mode="json", exclude_none=True),
                            headers={"X-Nodeflow-Version": str(session.version)})

    @app.put("/api/graph")
    def put_graph(request: Request, data: Any = Body(...)) -> dict[str, Any]:
        guard(request)
        try:
            graph = Graph.from_data(data, "request body")
            session.replace(graph)
        except (GraphFileError, EditError) as exc:
            raise HTTPException(422, str(exc)) from None
        return {"version": session.version, "problems": [p.to_json() for p in session.validate()]}

    @app.post("/api/edit")
    def post_edit(request: Request, data: Any = Body(...)) -> dict[str, Any]:
        """A list of edit ops (as Session.edits takes them), applied as one undo step."""
        guard(request)
        ops = data.get("ops") if isinstance(data, dict) else data
        if not isinstance(ops, list):
            raise HTTPException(422, 'send {"ops": [{"op": "move", "id": ..., "x": ..., "y": ...}, ...]}')
        try:
            session.edits(ops)
        except (EditError, KeyError, TypeError) as exc:
            raise HTTPException(422, str(exc).strip('"')) from None
        return {"version": session.version}

    @app.post("/api/run")
    def post_run(request: Request, data: Any = Body(None)) -> dict[str, Any]:
        guard(request)
        target = data.get("target") if isinstance(data, dict) else None
        try:
            queued = session.submit(target, source="api")
        except GraphInvalid as exc:
            raise HTTPException(422, {"message": "the graph is not valid", "problems":
                                      [p.to_json() for p in exc.problems]}) from None
        except KeyError as exc:
            raise HTTPException(404, str(exc).strip('"')) from None
        except RuntimeError as exc:
            raise HTTPException(409, str(exc)) from None
        return queued  # id, status (running or queued), position in the queue, plan

    @app.post("/api/stop")
    def post_stop(request: Request) -> dict[str, Any]:
        guard(request)
        session.stop()
        return {"running": session.running}

    @app.get("/api/status")
    def get_status(request: Request) -> dict[str, Any]:
        guard(request)
        return hub.api_status()

    @app.get("/api/nodes")
    def get_nodes(request: Request) -> list[dict[str, Any]]:
        guard(request)
        return hub.catalogue_list

    @app.get("/api/validate")
    def get_validate(request: Request) -> dict[str, Any]:
        guard(request)
        return {"problems": [p.to_json() for p in session.validate()]}

    # -- run history and queue (nodeflow.runs) -------------------------------------------------------
    @app.get("/api/runs")
    def get_runs(request: Request, limit: int = 200) -> list[dict[str, Any]]:
        guard(request)
        return session.runs.list(limit=max(1, min(limit, 10_000)))

    @app.get("/api/runs/{run_id}")
    def get_run(request: Request, run_id: str) -> dict[str, Any]:
        guard(request)
        try:
            return session.runs.get(run_id)
        except KeyError as exc:
            raise HTTPException(404, str(exc)) from None

    @app.post("/api/runs/{run_id}/cancel")
    def cancel_run(request: Request, run_id: str) -> dict[str, Any]:
        guard(request)
        try:
            number = int(run_id)
            return {"id": number, "status": session.cancel(number)}
        except (KeyError, ValueError) as exc:
            raise HTTPException(404, f"no run {run_id!r}" if isinstance(exc, ValueError) else str(exc)) from None
