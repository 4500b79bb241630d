"""The editor's HTTP API routes, one module per resource, all on one hub's session.

Each resource is a function ``name_routes(app, hub, guard)`` that adds its routes to ``app`` (every
route calls ``guard(request)`` first, then reads ``hub.session``); :data:`ROUTE_GROUPS` lists them
and :func:`add_api_routes` adds them all. A new resource is a module here with one such function,
and one line in :data:`ROUTE_GROUPS`. The request rules in front of the routes (token, origin,
body size) are :mod:`nodeflow.ui.api`'s.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from nodeflow.access import Refused

from ..api import RequestGuard, install_token_check, json_safe, restrict_socket_origins, token_guard
from ..state import Hub
from .catalogue import catalogue_routes
from .document import document_routes
from .models import model_routes
from .results import result_routes
from .runs import run_routes
from .sweeps import sweep_routes

#: every resource of the API, in the order its routes are added (the first route that matches a path
#: answers it)
ROUTE_GROUPS = (document_routes, run_routes, catalogue_routes, sweep_routes, result_routes, model_routes)


def install_api(app: FastAPI, hub: Hub, token: str | None = None) -> None:
    install_token_check(app, token)
    app.add_middleware(RequestGuard, check_host=not token)
    restrict_socket_origins(check_host=not token)
    add_api_routes(app, hub, token)


def add_api_routes(app: FastAPI, hub: Hub, token: str | None = None) -> None:
    """The routes of the API on ``hub``'s session, without the request rules in front of them (a
    multi-user server puts one set of routes per project behind its own checks)."""
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(Refused, _read_only)
    guard = token_guard(token)
    for add_routes in ROUTE_GROUPS:
        add_routes(app, hub, guard)


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422, made safe to serialise when the body held NaN or Infinity."""
    errors = [{k: v for k, v in error.items() if k in ("type", "loc", "msg", "input")} for error in exc.errors()]
    return JSONResponse({"detail": json_safe(errors)}, status_code=422)


async def _read_only(request: Request, exc: Refused) -> JSONResponse:
    """A change or work asked of a project open read-only (the session's view refused it)."""
    return JSONResponse({"detail": str(exc)}, status_code=403)
