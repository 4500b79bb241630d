"""The editor's HTTP API, on the same server and the same Session as the page, so a script and
a browser tab always see one graph and one run.

What a request must look like (see README, "Running it safely"):

- a state-changing request (anything but GET/HEAD/OPTIONS) whose ``Origin`` or ``Referer`` is not
  the editor's own address is refused (403), so a page on another site cannot drive the editor
  with the user's cookie; a body must be ``application/json`` (415);
- served on loopback without a token, the editor answers only to a loopback ``Host`` (403),
  which defeats DNS rebinding (with a token, a rebound name lacks the token);
- a body is at most :data:`MAX_BODY_BYTES` (413, chunked or not), an edit at most ``MAX_OPS``
  operations (422); text in a body that is not valid Unicode is a 422 naming the field, and a
  repeated ``Origin`` (or another header the checks read) a 400;
- the websocket accepts only the editor's own origin.

The OpenAPI schema lists every status an operation answers (:func:`document_refusals` adds the
ones above to each), and ``OPTIONS`` names every method of a path.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import math
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import Body, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from nodeflow.access import Refused, allows
from nodeflow.compare import compare_run_ids
from nodeflow.edits import MAX_OPS, EditRequest, RunRequest
from nodeflow.errors import GraphInvalid
from nodeflow.graph import Graph, GraphFileError
from nodeflow.node import ParamProblem
from nodeflow.runs import RunNotFound, run_number
from nodeflow.session import EditError
from nodeflow.sweep import SweepNotFound
from nodeflow.sweep import MAX_BRANCHES, GridError, grid_of

#: the largest request body the API reads (a 10,000-node graph is about 2 MB)
MAX_BODY_BYTES = 10 * 1024 * 1024
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
#: what an overlay's file name looks like (a SHA-256 hex digest): nothing else is served from that folder
OVERLAY_NAME = re.compile(r"[0-9a-f]{64}\.png")
#: the ASGI scope key under which a server that serves this API elsewhere than ``/api`` says where
API_BASE = "nodeflow.api_base"

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


def _host_of(value: str) -> tuple[str, int | None] | None:
    """(host, port) of a ``Host`` header or of an origin/referer URL; None if unreadable."""
    try:
        parts = urlsplit(value if "//" in value else f"//{value}")
        return (parts.hostname or "").lower(), parts.port
    except ValueError:
        return None


def host_allowed(host_header: str, server: tuple[str, int] | None) -> bool:
    """A server listening on loopback answers only to loopback names: a page on another site that
    resolves its own name to 127.0.0.1 (DNS rebinding) is then still another site."""
    if server is None or not is_loopback(server[0]):
        return True
    parsed = _host_of(host_header)
    return parsed is not None and is_loopback(parsed[0].strip("[]"))


def same_origin(origin: str, scheme: str, host_header: str) -> bool:
    """Whether ``origin`` (an Origin header, or a Referer URL) is the editor's own address."""
    theirs, ours = _host_of(origin), _host_of(host_header)
    if theirs is None or ours is None or not origin.lower().startswith(f"{scheme}://"):
        return False
    default = 443 if scheme == "https" else 80
    return theirs[0] == ours[0] and (theirs[1] or default) == (ours[1] or default)


def refusal(scope: dict[str, Any], headers: dict[str, str], check_host: bool = True) -> tuple[int, str] | None:
    """Why a request must be refused before it reaches a route, or None. ``check_host``: without
    a token (only ever on loopback) the Host must be loopback too; with one, every request needs
    the token anyway, which a rebound name does not have."""
    host = headers.get("host", "")
    if check_host and not host_allowed(host, scope.get("server")):
        return 403, f"403: this editor answers only to its loopback address, not to Host '{host[:100]}'"
    if not scope["path"].startswith("/api/"):
        return None
    # every API call, reads too: some reads do work (an estimate profiles batches, a gallery draws
    # overlays), and a page elsewhere can make a browser send a GET with an <img> and no Origin
    scheme = scope.get("scheme", "http")
    origin = headers.get("origin")
    if origin is None and headers.get("referer"):
        origin = headers["referer"]
    fetch_site = headers.get("sec-fetch-site", "same-origin")
    if (origin is not None and not same_origin(origin, scheme, host)) or fetch_site not in ("same-origin", "none"):
        return 403, (f"403: cross-site request refused: {(origin or fetch_site)[:100]!r} is not this editor's "
                     "address; scripts may call the API without an Origin header")
    if scope["method"] in SAFE_METHODS:
        return None
    length = headers.get("content-length")
    has_body = (length is not None and length.strip() != "0") or "transfer-encoding" in headers
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if (has_body or content_type) and content_type != "application/json":
        return 415, "415: send the body as JSON, with 'Content-Type: application/json'"
    digits = length is not None and length.strip().isascii() and length.strip().isdigit()
    if length is not None and (not digits or int(length) > MAX_BODY_BYTES):
        return 413, f"413: a request body may be at most {MAX_BODY_BYTES // (1024 * 1024)} MB"
    return None


#: headers a request may carry once: with two, the check and the app could each read another one
SINGLE_HEADERS = ("host", "origin", "referer", "sec-fetch-site", "content-type", "content-length", "authorization")
#: JSON text that may decode to a lone surrogate: a \uD800-\uDFFF escape (bytes that are not UTF-8
#: are looked at too, as ``json.loads`` decodes them with 'surrogatepass')
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def twice_given(raw_headers: list[tuple[bytes, bytes]]) -> str | None:
    """The first header of :data:`SINGLE_HEADERS` that the request repeats, or None."""
    names = [name.decode("latin-1").lower() for name, _ in raw_headers]
    return next((name for name in SINGLE_HEADERS if names.count(name) > 1), None)


def not_unicode(body: bytes) -> list[str | int] | None:
    """Where a JSON body holds a string (or a key) that is not valid Unicode: a lone surrogate, which
    JSON can spell but no answer can encode. FastAPI-style location (``["body", "ops", 0, "id"]``),
    or None when there is none or the body is no JSON at all (FastAPI answers that itself)."""
    try:
        body.decode("utf-8")
        if not SURROGATE_ESCAPE.search(body):
            return None
    except UnicodeDecodeError:
        pass
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    stack: list[tuple[Any, list[str | int]]] = [(data, ["body"])]
    while stack:  # no recursion: the nesting is the sender's choice
        value, loc = stack.pop()
        if isinstance(value, str) and not _encodable(value):
            return loc
        if isinstance(value, list):
            stack.extend((item, [*loc, i]) for i, item in enumerate(value))
        elif isinstance(value, dict):
            for key, item in value.items():
                if not _encodable(key):
                    return loc
                stack.append((item, [*loc, key]))
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


class RequestGuard:
    """ASGI middleware applying :func:`refusal`, then reading an API request's body whole (at most
    :data:`MAX_BODY_BYTES`, counted as it arrives, so a chunked body cannot pass the limit either)
    and refusing one that holds text that is not valid Unicode (422, naming the field), before any
    route sees it: every route echoes some input back, and an answer cannot encode such text."""

    def __init__(self, app: Any, check_host: bool = True) -> None:
        self.app = app
        self.check_host = check_host

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        repeated = twice_given(scope.get("headers", []))
        if repeated is not None:
            await PlainTextResponse(f"400: the header '{repeated}' is given more than once; send it once",
                                    status_code=400)(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refused = refusal(scope, headers, self.check_host)
        if refused is not None:
            await PlainTextResponse(refused[1], status_code=refused[0])(scope, receive, send)
            return
        if not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > MAX_BODY_BYTES:
                await PlainTextResponse(f"413: a request body may be at most {MAX_BODY_BYTES // (1024 * 1024)} MB",
                                        status_code=413)(scope, receive, send)
                return
            more = message.get("more_body", False)
        body = b"".join(chunks)
        where = not_unicode(body)
        if where is not None:
            place = ".".join(str(p) for p in where)
            await JSONResponse({"detail": [{"type": "string_unicode", "loc": where, "msg": (
                f"{place}: not valid Unicode (it holds a lone surrogate, \\ud800-\\udfff); send text as UTF-8")}]},
                status_code=422)(scope, receive, send)
            return
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: wait for the client to go away, as Starlette does
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        emptied = False

        async def allow_all(message) -> None:
            """FastAPI's 405 names the methods of one route only: name every method of the path, and
            answer OPTIONS with them (204, no body) instead of refusing it."""
            nonlocal emptied
            if message["type"] == "http.response.start" and message["status"] == 405:
                allow = (b"allow", ", ".join(allowed_methods(scope.get("app"), scope["path"])).encode())
                if scope["method"] == "OPTIONS":
                    emptied = True
                    message = {"type": "http.response.start", "status": 204, "headers": [allow]}
                else:
                    message = {**message, "headers": [h for h in message.get("headers", [])
                                                      if h[0].lower() != b"allow"] + [allow]}
            elif message["type"] == "http.response.body" and emptied:
                if message.get("more_body"):
                    return
                message = {"type": "http.response.body", "body": b""}
            await send(message)

        await self.app(scope, replay, allow_all)


def allowed_methods(app: Any, path: str) -> list[str]:
    """The methods some route of ``app`` answers at ``path`` (OPTIONS included); [] when none does.
    FastAPI makes one route per method, so its own 405 names only the first route's."""
    methods = {method for route in getattr(app, "routes", []) if getattr(route, "methods", None)
               and route.path_regex.match(path) for method in route.methods}
    return sorted(methods | {"OPTIONS"}) if methods else []


def restrict_socket_origins(check_host: bool = True) -> None:
    """NiceGUI's socket.io server echoes any Origin back; accept only the editor's own (and a
    client that sends none, such as a script)."""
    from nicegui import core

    def allowed(origin: str | None, environ: dict[str, Any]) -> bool:
        host = environ.get("HTTP_HOST", "")
        scheme = environ.get("wsgi.url_scheme", "http")
        server = environ.get("asgi.scope", {}).get("server")
        if check_host and not host_allowed(host, server):
            return False
        return origin is None or same_origin(origin, scheme, host) or \
            same_origin(origin, {"ws": "http", "wss": "https"}.get(scheme, scheme), host)

    core.sio.eio.cors_allowed_origins = allowed


#: how deep echoed input is shown; deeper is cut (the sender chose the nesting, not the stack)
ECHO_DEPTH = 16


def _json_safe(value: Any, depth: int = 0) -> Any:
    """Echoed input as JSON can carry it: NaN and Infinity as text, bytes as text, nesting cut."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (dict, list, tuple)) and depth >= ECHO_DEPTH:
        return "..."
    if isinstance(value, dict):
        return {str(k): _json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v, depth + 1) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


#: what any API request may be answered before its route sees it (see :class:`RequestGuard`)
REFUSALS = {"400": "a header given twice, or a body that cannot be read as JSON (not UTF-8, nested too deeply)",
            "401": "a missing or wrong token (when the editor has one)",
            "403": "a request from another site or port, or to a Host other than the editor's loopback address",
            "413": f"a body over {MAX_BODY_BYTES // (1024 * 1024)} MB",
            "415": "a body that is not sent as 'Content-Type: application/json'",
            "422": "a malformed argument, or text that is not valid Unicode (the field is named)"}


def document_refusals(schema: dict[str, Any]) -> dict[str, Any]:
    """Add to every operation of an OpenAPI ``schema`` the answers :data:`REFUSALS` lists, so the
    schema names every status an endpoint gives (a route documents its own, such as 404)."""
    for item in schema.get("paths", {}).values():
        for method, operation in item.items():
            answers = operation.setdefault("responses", {})
            for status, description in REFUSALS.items():
                if status == "415" and method.upper() in SAFE_METHODS:
                    continue  # a read's body is not looked at
                answers.setdefault(status, {"description": description})
    return schema


def read_overlay(folder: Path, name: str) -> bytes | None:
    """The bytes of overlay ``name`` in ``folder``, read as the check is made: a plain file right in
    the folder (no link is followed), or None."""
    try:
        fd = os.open(Path(folder) / name, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        return handle.read() if stat.S_ISREG(os.fstat(handle.fileno()).st_mode) else None


def cell_gallery_of(session: Any) -> Any:
    """How the holder of ``session`` opens a confusion cell: drawing the missing overlays, or, through
    a read-only view (which refuses the drawing, as the session declares it), with those drawn before."""
    return session.results.cell_gallery if allows(session, "results.cell_gallery") else session.results.drawn_cell_gallery


def overlay_url(node_id: str, path: str | None, base: str = "/api", run: Any = None) -> str | None:
    """Where the API serves an overlay PNG drawn for ``node_id`` (see ``get_overlay``); ``base`` is
    where the API is (a project's, on a multi-user server); ``run``: the node as that run had it."""
    if not path:
        return None
    return f"{base}/errors/{quote(node_id, safe='')}/overlays/{Path(path).name}" + (f"?run={run}" if run else "")


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422, made safe to serialise when the body held NaN or Infinity."""
    errors = [{k: v for k, v in error.items() if k in ("type", "loc", "msg", "input")} for error in exc.errors()]
    return JSONResponse({"detail": _json_safe(errors)}, status_code=422)


async def _read_only(request: Request, exc: Refused) -> JSONResponse:
    """A change or work asked of a project open read-only (the session's view refused it)."""
    return JSONResponse({"detail": str(exc)}, status_code=403)


class SweepRequest(BaseModel):
    """``POST /api/sweep``: values per ``NODE.PARAM`` (every combination is a branch) and the node
    each branch runs up to."""

    model_config = ConfigDict(extra="forbid")
    grid: dict[str, list[Any]] = Field(description='values per NODE.PARAM, e.g. {"train.lr": [1e-5, 1e-4]}')
    target: str | None = Field(None, description="run each branch up to this node (default: the whole graph)")
    metric: str | None = Field(None, max_length=300, description=(
        "NODE.METRIC that ranks the branches (default: a validation metric; a test metric is allowed, and the "
        "results then carry a warning)"))


def install_api(app: FastAPI, hub: Hub, token: str | None = None) -> None:
    install_token_check(app, token)
    app.add_middleware(RequestGuard, check_host=not token)
    restrict_socket_origins(check_host=not token)
    add_api_routes(app, hub, token)


def add_api_routes(app: FastAPI, hub: Hub, token: str | None = None) -> None:
    """The routes of the API on ``hub``'s session, without the request rules in front of them (a
    multi-user server puts one set of routes per project behind its own checks)."""
    session = hub.session
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(Refused, _read_only)

    def guard(request: Request) -> None:
        if not token_ok(request, token):
            raise HTTPException(401, "missing or wrong token: pass ?token=... or 'Authorization: Bearer ...'")

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

    @app.get("/api/validate", tags=["document"], summary="Problems of the open graph")
    def get_validate(request: Request) -> dict[str, Any]:
        guard(request)
        return {"problems": [p.to_json() for p in session.validate()]}

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
            return _json_safe(compare_run_ids(session.runs, session.predictions, session.registry, a, b))
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

    # -- sweeps (nodeflow.sweep): a grid over the open graph, each branch a queued run -----------------
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

    # -- a finished node's details: report tables, confusion-cell galleries ----------------------------
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
