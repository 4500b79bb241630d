from __future__ import annotations

from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from nodeflow.graph import Graph
from nodeflow.node import Registry
from nodeflow.session import Session
from tests import nodepack
from tests.simulation import app_simulation
from tests.ui.server import demo_graph, pack_registry


@pytest.fixture
def registry() -> Registry:
    reg = Registry()
    reg.add_module(nodepack, source="test pack")
    return reg


@dataclass(repr=False)
class Api:
    client: httpx.AsyncClient
    session: Session
    schema: dict[str, Any]
    data: Path
    graph: Graph  # the one it opened with

    def __repr__(self) -> str:  # hypothesis prints a failing example's arguments
        return "Api(the editor's app)"


@pytest.fixture
async def http(workspace: Path, tmp_path: Path):
    """The real app (NiceGUI page, API, request guard) on a fresh session of the test pack, through
    an in-process ASGI client; path params may point into the workspace and ``data``."""
    pytest.importorskip("nicegui")
    graph = demo_graph()
    graph = graph.model_copy(update={"nodes": [n.model_copy(update={"params": {"steps": 2, "delay": 0.0}})
                                               if n.id == "slow" else n for n in graph.nodes]})
    data = tmp_path / "data"
    data.mkdir()
    session = Session(pack_registry(), workspace, graph=graph, device="cpu", allowed_roots=[data])
    try:
        async with _simulated_app(session, graph, data) as api:
            yield api
    finally:
        session.queue.stop()
        session.queue.wait(10)


@asynccontextmanager
async def _simulated_app(session: Session, graph: Graph, data: Path):
    from nicegui import app

    from nodeflow.ui.app import create_app

    async with app_simulation():
        create_app(session)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://127.0.0.1:8080") as client:
            schema = (await client.get("/api/openapi.json")).json()
            routes = {(m, r.path) for r in app.routes if getattr(r, "path", "").startswith("/api/")
                      and getattr(r, "include_in_schema", False) for m in r.methods}
            assert {(m.upper(), p) for p, item in schema["paths"].items() for m in item} == routes
            yield Api(client, session, schema, data, graph)


# -- one kept connection to a server process ---------------------------------------------------------


@contextmanager
def kept_connection(server):
    """Sends ``server.api`` requests over one kept-alive client instead of a new client per request:
    building a client loads the CA bundle (~0.1 s), which the many-request property tests paid on
    every call. No cookies are carried from one request to the next, as before."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        def api(method: str, path: str, **kw):
            client.cookies.clear()
            return client.request(method, path, **kw)

        server.api = api
        try:
            yield server
        finally:
            del server.api
