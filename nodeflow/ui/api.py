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
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from nodeflow.access import allows

#: the largest request body the API reads (a 10,000-node graph is about 2 MB)
MAX_BODY_BYTES = 10 * 1024 * 1024
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
#: what an overlay's file name looks like (a SHA-256 hex digest): nothing else is served from that folder
OVERLAY_NAME = re.compile(r"[0-9a-f]{64}\.png")
#: routes whose body is multipart/form-data (pictures to classify), held to MAX_BODY_BYTES like any other
MULTIPART_ROUTES = re.compile(r"/api/models/[^/]+/predict")
#: the ASGI scope key under which a server that serves this API elsewhere than ``/api`` says where
API_BASE = "nodeflow.api_base"


#: what every route calls first with its request: raises the API's 401 when the token is missing or wrong
Guard = Callable[[Request], None]


def token_guard(token: str | None) -> Guard:
    """The :data:`Guard` of an API that needs ``token`` (None: one that lets every request through)."""
    def guard(request: Request) -> None:
        if not token_ok(request, token):
            raise HTTPException(401, "missing or wrong token: pass ?token=... or 'Authorization: Bearer ...'")

    return guard


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
    multipart = content_type == "multipart/form-data" and MULTIPART_ROUTES.fullmatch(scope["path"])
    if (has_body or content_type) and content_type != "application/json" and not multipart:
        return 415, ("415: send the images as multipart/form-data, in the field 'image'" if MULTIPART_ROUTES.fullmatch(
            scope["path"]) else "415: send the body as JSON, with 'Content-Type: application/json'")
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


def json_safe(value: Any, depth: int = 0) -> Any:
    """Echoed input as JSON can carry it: NaN and Infinity as text, bytes as text, nesting cut."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (dict, list, tuple)) and depth >= ECHO_DEPTH:
        return "..."
    if isinstance(value, dict):
        return {str(k): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, depth + 1) for v in value]
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
