"""Trying a model is work on the machine: through a project's read-only view (a viewer's way in) the
predict route answers 403 and runs nothing, while the owner's way in reaches the model lookup; and the
request guard lets a multipart body through to that route only."""

from __future__ import annotations

import io

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image

from nodeflow.access import ReadOnlyView
from nodeflow.session import Session
from nodeflow.ui.api import RequestGuard
from nodeflow.ui.routes import add_api_routes
from nodeflow.ui.state import Hub
from tests.ui.server import demo_graph, pack_registry


@pytest.fixture
def session(tmp_path):
    session = Session(pack_registry(), tmp_path / "workspace", graph=demo_graph(), device="cpu")
    yield session
    session.close()


def client(hub: Hub) -> httpx.AsyncClient:
    api = FastAPI()
    add_api_routes(api, hub)
    return httpx.AsyncClient(transport=httpx.ASGITransport(RequestGuard(api, check_host=False)),
                             base_url="http://127.0.0.1:8080")


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), (10, 200, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_a_viewer_is_refused_and_nothing_starts(session):
    node = session.document.graph.nodes[0].id
    async with client(Hub(ReadOnlyView(session, "alice's project, shared with you"))) as viewer:
        answer = await viewer.post(f"/api/models/{node}/predict", files=[("image", ("a.png", png(), "image/png"))])
    assert answer.status_code == 403, answer.text
    assert "read-only" in answer.json()["detail"]
    assert "_tryer" not in session.__dict__  # no model process was even made


async def test_the_owner_reaches_the_lookup_and_other_routes_still_want_json(session):
    node = session.document.graph.nodes[0].id
    async with client(Hub(session)) as owner:
        answer = await owner.post(f"/api/models/{node}/predict", files=[("image", ("a.png", png(), "image/png"))])
        assert answer.status_code == 404 and "gives no trained model" in answer.json()["detail"]
        form = await owner.post("/api/run", files=[("image", ("a.png", png(), "image/png"))])
        assert form.status_code == 415
        wrong = await owner.post(f"/api/models/{node}/predict", content=b"x", headers={"content-type": "text/plain"})
        assert wrong.status_code == 415 and "multipart/form-data" in wrong.text
