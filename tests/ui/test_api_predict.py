"""``POST /api/models/{node}/predict`` on a real editor server whose trainer has run: ranked classes
and an overlay for good pictures (grey and RGBA converted), a clear 4xx for everything else with
nothing written in the workspace, the stale answer after an edit, 409 before a node has trained,
and arbitrary bytes and names (hypothesis) answered without a 5xx."""

from __future__ import annotations

import io

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from nodeflow.graph import Graph
from tests.ui.predict_server import CLASSES, start



@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start(tmp_path_factory.mktemp("predict-api"))
    try:
        # one kept client for the module's requests: building one per request loads the CA bundle each time
        with httpx.Client(base_url=server.url, timeout=300) as server.client:
            yield server
    finally:
        server.stop()


def png(size=(40, 40), mode="RGB", colour=None) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour if colour is not None else (200, 30, 30) if mode == "RGB" else 128).save(
        buffer, format="PNG")
    return buffer.getvalue()


def predict(server, files, **params):
    server.client.cookies.clear()
    return server.client.post("/api/models/train/predict", files=files, params=params)


def workspace_files(server) -> dict[str, int]:
    return {str(p.relative_to(server.workspace)): p.stat().st_size for p in server.workspace.rglob("*")
            if p.is_file() and not p.name.startswith("runs.sqlite")}


def test_one_picture_gets_ranked_classes_and_an_overlay(server):
    answer = predict(server, [("image", ("red.png", png(), "image/png"))], overlay="true")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["node"] == "train" and body["stale"] is False and body["image"] == "red.png"
    labels = [c["label"] for c in body["classes"]]
    probabilities = [c["probability"] for c in body["classes"]]
    assert sorted(labels) == list(CLASSES) and probabilities == sorted(probabilities, reverse=True)
    assert abs(sum(probabilities) - 1) < 1e-5 and body["results"][0]["classes"] == body["classes"]
    overlay = httpx.get(server.url + body["overlay_url"], timeout=30)
    assert overlay.status_code == 200 and overlay.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(overlay.content)).size[0] >= 32
    again = predict(server, [("image", ("red.png", png(), "image/png"))], top=1).json()
    assert again["loaded"] is False and len(again["classes"]) == 1 and "overlay_url" not in again
    assert again["classes"][0] == body["classes"][0]


def test_several_pictures_grey_and_rgba_are_answered_in_order(server):
    files = [("image", ("grey.png", png(mode="L"), "image/png")), ("image", ("alpha.png", png(mode="RGBA",
             colour=(0, 0, 255, 90)), "image/png")), ("image", ("wide.png", png((300, 20)), "image/png"))]
    answer = predict(server, files, overlay="true")
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["image"] for r in results] == ["grey.png", "alpha.png", "wide.png"]
    assert all(len(r["classes"]) == 2 and r["overlay_url"] for r in results)
    assert "classes" not in answer.json()  # several: only in results


def bomb() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(buffer, format="PNG")  # 144 Mpx in a few kB
    return buffer.getvalue()


@pytest.mark.parametrize("files, status, words", [
    ([("image", ("notes.txt", b"just some text", "text/plain"))], 422, "'notes.txt' is not an image"),
    ([("image", ("empty.png", b"", "image/png"))], 422, "empty"),
    ([("image", ("dot.png", png((1, 1)), "image/png"))], 422, "at least 8 pixels"),
    ([("image", ("bomb.png", bomb(), "image/png"))], 413, "pixels"),
    ([("image", (f"{i}.png", png(), "image/png")) for i in range(17)], 413, "at most 16"),
    ([("image", ("cut.png", png((64, 64))[:60], "image/png"))], 422, "cut.png"),
])
def test_what_is_not_a_picture_to_classify_is_refused_and_nothing_is_written(server, files, status, words):
    before = workspace_files(server)
    answer = predict(server, files)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["detail"]
    assert workspace_files(server) == before


def test_a_body_that_is_not_a_form_is_refused(server):
    url = server.url + "/api/models/train/predict"
    assert httpx.post(url, content=b"\x89PNG", headers={"content-type": "image/png"}).status_code == 415
    assert httpx.post(url, json={"image": "x"}).status_code == 422
    no_field = httpx.post(url, files=[("picture", ("a.png", png(), "image/png"))])
    assert no_field.status_code == 422
    assert httpx.post(server.url + "/api/models/nope/predict", files=[("image", ("a.png", png(), "image/png"))]
                      ).status_code == 404
    assert httpx.post(server.url + "/api/models/eval/predict", files=[("image", ("a.png", png(), "image/png"))]
                      ).status_code == 404
    for name in ("0" * 64 + ".png", "..%2Fgraph.json", "x"):
        assert httpx.get(f"{server.url}/api/models/train/overlays/{name}").status_code == 404


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=2048) | st.sampled_from([png(), png((2, 2)), png(mode="LA"), png()[:40]]),
       name=st.text(max_size=300), count=st.integers(1, 3), overlay=st.booleans())
def test_arbitrary_bytes_and_names_never_get_a_5xx_nor_write_anything(server, data, name, count, overlay):
    before = workspace_files(server)
    files = [("image", (name, data, "application/octet-stream"))] * count
    answer = predict(server, files, overlay=str(overlay).lower())
    assert answer.status_code < 500, answer.text
    assert answer.status_code in (200, 413, 422), answer.text
    if answer.status_code == 200:
        assert len(answer.json()["results"]) == count
    assert workspace_files(server) == before


def test_a_changed_node_answers_with_its_last_model_and_a_new_one_must_run_first(server):
    edit = server.api("POST", "/api/edit", json={"ops": [{"op": "set_params", "id": "train", "params": {"lr": 0.01}}]})
    assert edit.status_code == 200, edit.text
    try:
        answer = predict(server, [("image", ("red.png", png(), "image/png"))])
        assert answer.status_code == 200, answer.text
        assert answer.json()["stale"] is True and "run train again" in answer.json()["note"]
        graph = Graph.from_data(server.api("GET", "/api/graph").json())
        assert graph.node("train").params["lr"] == 0.01
        added = server.api("POST", "/api/edit", json={"ops": [
            {"op": "add_node", "id": "train2", "type": "train.trainer", "params": {"epochs": 1}}]})
        assert added.status_code == 200, added.text
        fresh = httpx.post(server.url + "/api/models/train2/predict", files=[("image", ("a.png", png(), "image/png"))])
        assert fresh.status_code == 409 and "run train2 first" in fresh.json()["detail"]
    finally:
        server.api("POST", "/api/edit", json={"ops": [{"op": "set_params", "id": "train", "params": {"lr": 3e-3}}]})
