"""Who may use a running editor: loopback by default, a token everywhere else; paths from the
API stay inside the allowed folders; user-controlled strings are shown as text, never as HTML."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodeflow.ui.api import access_token
from tests.reliability.conftest import kept_connection
from tests.ui.conftest import Server, browser  # noqa: F401  (fixture)
from tests.ui.server import demo_graph

TOKEN = "s3cret-token-for-tests"


@pytest.mark.parametrize("host, wanted", [("127.0.0.1", None), ("localhost", None), ("::1", None),
                                          ("127.0.0.2", None)])
def test_loopback_needs_no_token(host, wanted):
    assert access_token(host, None) == (wanted, False)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::", "myhost.example"])
def test_any_other_address_gets_a_generated_token(host):
    token, generated = access_token(host, None)
    assert generated and len(token) >= 24
    assert access_token(host, "mine") == ("mine", False)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    base = tmp_path_factory.mktemp("guarded")
    (base / "data").mkdir()
    server = Server(base / "workspace", "--token", TOKEN, "--allow-root", str(base / "data"))
    try:
        with kept_connection(server):  # the property test's 300 requests: one client, not 300
            yield server
    finally:
        server.stop()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize("method, path", [("GET", "/"), ("GET", "/api/status"), ("GET", "/api/graph"),
                                          ("PUT", "/api/graph"), ("POST", "/api/run"), ("POST", "/api/stop"),
                                          ("GET", "/api/nodes")])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {TOKEN}x"}])
def test_missing_or_wrong_token_is_401(guarded, method, path, headers):
    assert guarded.api(method, path, headers=headers).status_code == 401


def test_the_right_token_opens_api_and_page(guarded):
    assert guarded.api("GET", "/api/status", headers=AUTH).status_code == 200
    assert guarded.api("GET", f"/api/status?token={TOKEN}").status_code == 200
    with httpx.Client(base_url=guarded.url) as client:
        page = client.get(f"/?token={TOKEN}")
        assert page.status_code == 200 and "nodeflow" in page.text
        assert client.get("/").status_code == 200  # the cookie the page set


def test_paths_from_the_api_are_confined(guarded, tmp_path):
    graph = {"format": "nodeflow.graph", "version": 1, "name": "paths",
             "nodes": [{"id": "r", "type": "test.read_folder", "params": {"root": "/etc"}}], "edges": []}
    response = guarded.api("PUT", "/api/graph", json=graph, headers=AUTH)
    assert response.status_code == 422
    assert "r.root" in response.text and "outside the folders this editor may use" in response.text
    edit = {"ops": [{"op": "set_params", "id": "c1", "params": {"value": 3}},
                    {"op": "add_node", "type": "test.read_folder", "id": "r2", "params": {"root": "../../.."}}]}
    response = guarded.api("POST", "/api/edit", json=edit, headers=AUTH)
    assert response.status_code == 422 and "r2.root" in response.text
    assert guarded.api("GET", "/api/graph", headers=AUTH).json()["nodes"][0]["params"] != {"value": 3}


JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=6),
                       lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                       max_leaves=12)
NODE = st.fixed_dictionaries({"id": st.sampled_from(["a", "b", "1x"]) | JSONISH,
                              "type": st.sampled_from(["test.constant", "test.add", "nope"]) | JSONISH},
                             optional={"params": JSONISH, "position": JSONISH})
DOC = st.fixed_dictionaries({"format": st.just("nodeflow.graph") | JSONISH, "version": st.just(1) | JSONISH},
                            optional={"nodes": st.lists(NODE, max_size=4) | JSONISH,
                                      "edges": st.lists(JSONISH, max_size=3) | JSONISH})


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(DOC | JSONISH)
def test_put_graph_never_breaks_the_server(guarded, doc):
    response = guarded.api("PUT", "/api/graph", json=doc, headers=AUTH)
    assert response.status_code in (200, 422), response.text


def test_user_strings_are_shown_as_text_not_html(browser, tmp_path):  # noqa: F811
    server = Server(tmp_path / "workspace")
    try:
        graph = demo_graph().model_dump(mode="json")
        payload = '<img src=x onerror="window.__pwned=1"><b>bold</b>'
        graph["nodes"][0]["title"] = payload
        graph["nodes"][1]["params"] = {"value": 1}
        assert server.api("PUT", "/api/graph", json=graph).status_code == 200
        tab = browser.new_page()
        tab.goto(server.url + "/")
        tab.wait_for_selector(".vue-flow__node[data-id=c1]")
        node = tab.locator(".vue-flow__node[data-id=c1]")
        assert payload in node.inner_text()
        assert node.locator("img").count() == 0 and node.locator("b").count() == 0
        assert tab.evaluate("window.__pwned") is None
        tab.close()
    finally:
        server.stop()
