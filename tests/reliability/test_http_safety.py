"""The holes a probe of the editor's HTTP API found, each closed and pinned through the real server:
paths confined at every change and at run time, cross-site requests refused, bad bodies answered
with 4xx naming the field, size limits, damaged cache entries recomputed, and answers that say what
is wrong."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodeflow.edits import MAX_OPS
from nodeflow.session import Session
from nodeflow.ui.api import MAX_BODY_BYTES
from tests.reliability.conftest import kept_connection
from tests.ui.conftest import Server
from tests.ui.server import demo_graph, pack_registry

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    base = tmp_path_factory.mktemp("safety")
    data, secret = base / "data", base / "secret"
    for folder in (data / "inside", secret):
        folder.mkdir(parents=True)
    for name in ("a", "b", "c"):
        (secret / name).write_text("secret")
    (data / "inside" / "only").write_text("fine")
    return base, data, secret


@pytest.fixture(scope="module")
def server(layout):
    base, data, _ = layout
    server = Server(base / "workspace", "--allow-root", str(data))
    try:
        with kept_connection(server):
            yield server
    finally:
        server.stop()


@pytest.fixture
def api(server):
    """The server with the demo graph restored and no run going."""
    server.api("POST", "/api/stop")
    deadline = time.time() + 10
    while server.api("GET", "/api/status").json()["running"] and time.time() < deadline:
        time.sleep(0.05)
    assert server.api("PUT", "/api/graph", json=demo_graph().model_dump(mode="json")).status_code == 200
    return server


def graph_now(server) -> dict:
    return server.api("GET", "/api/graph").json()


def wait_idle(server, timeout: float = 20) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = server.api("GET", "/api/status").json()
        if not status["running"]:
            return status
        time.sleep(0.05)
    raise AssertionError("the run did not finish")


def doc(*nodes: dict, edges: list | None = None) -> dict:
    return {"format": "nodeflow.graph", "version": 1, "name": "t", "nodes": list(nodes), "edges": edges or []}


# -- 1. confinement cannot be side-stepped by changing a node's type ----------------------------


def test_a_path_smuggled_in_under_another_type_is_refused_when_the_type_changes(api):
    # accepted: a constant has no path params, so 'root' is just an unknown (invalid) param
    smuggled = doc({"id": "export", "type": "test.constant", "params": {"root": "/etc"}})
    assert api.api("PUT", "/api/graph", json=smuggled).status_code == 200
    before = graph_now(api)
    swap = {"ops": [{"op": "remove_node", "id": "export"},
                    {"op": "add_node", "id": "export", "type": "test.read_folder", "params": {"root": "/etc"}}]}
    response = api.api("POST", "/api/edit", json=swap)
    assert response.status_code == 422
    assert "export.root" in response.text and "outside the folders this editor may use" in response.text
    assert graph_now(api) == before
    response = api.api("PUT", "/api/graph", json=doc({"id": "r", "type": "test.read_folder", "params": {"root": "/etc"}}))
    assert response.status_code == 422 and "r.root" in response.text


# -- 2. checked at edit time, enforced at run time ------------------------------------------------


def test_a_folder_swapped_for_a_symlink_after_the_check_is_refused_at_run_time(api, layout):
    _, data, secret = layout
    victim = data / "swap"
    victim.mkdir(exist_ok=True)
    (victim / "x").write_text("fine")
    graph = doc({"id": "r", "type": "test.read_folder", "params": {"root": str(victim)}})
    assert api.api("PUT", "/api/graph", json=graph).status_code == 200
    (victim / "x").unlink()
    victim.rmdir()
    victim.symlink_to(secret)  # now points outside the allowed folders
    try:
        assert api.api("POST", "/api/run", json={"target": "r"}).status_code == 200
        status = wait_idle(api)
        node = status["nodes"]["r"]
        assert node["state"] == "failed", status
        assert "outside the folders this editor may use" in node["error"] and "root" in node["error"]
        assert node["metrics"].get("files") != 3  # the three secret files were never listed
    finally:
        victim.unlink()


# -- 3. cross-site requests ------------------------------------------------------------------------


def test_cross_site_posts_are_refused_and_start_nothing(api):
    evil = "http://127.0.0.1:9999"
    for headers, body in [({"Origin": evil, "Content-Type": "text/plain"}, b"{}"),
                          ({"Origin": evil, **JSON}, b"{}"),
                          ({"Referer": evil + "/page.html", **JSON}, b"{}"),
                          ({"Origin": "null", **JSON}, b"{}")]:
        response = api.api("POST", "/api/run", headers=headers, content=body)
        assert response.status_code == 403 and "cross-site request refused" in response.text
    response = api.api("POST", "/api/run", headers={"Content-Type": "text/plain"}, content=b"{}")
    assert response.status_code == 415 and "application/json" in response.text
    response = api.api("PUT", "/api/graph", headers={"Content-Type": "application/x-www-form-urlencoded"},
                       content=b"a=1")
    assert response.status_code == 415
    assert not api.api("GET", "/api/status").json()["running"]
    # the editor's own page and a script without an Origin header are served
    own = api.url
    assert api.api("POST", "/api/stop", headers={"Origin": own}).status_code == 200
    assert api.api("POST", "/api/stop").status_code == 200


def test_cross_site_reads_are_refused_too_as_some_of_them_do_work(api):
    """An <img> on a page elsewhere makes the browser send a GET without an Origin: its Referer and
    Sec-Fetch-Site still say where it comes from. A script sends neither and is served."""
    evil = "http://127.0.0.1:9999"
    for path in ("/api/estimate", "/api/graph", "/api/errors/desc/cells/a/b"):
        for headers in ({"Referer": evil + "/page.html"}, {"Sec-Fetch-Site": "same-site"},
                        {"Sec-Fetch-Site": "cross-site"}, {"Origin": evil}):
            response = api.api("GET", path, headers=headers)
            assert response.status_code == 403 and "cross-site request refused" in response.text, (path, headers)
    own = {"Origin": api.url, "Referer": api.url + "/", "Sec-Fetch-Site": "same-origin"}
    assert api.api("GET", "/api/graph", headers=own).status_code == 200
    assert api.api("GET", "/api/graph", headers={"Sec-Fetch-Site": "none"}).status_code == 200  # typed in
    assert api.api("GET", "/api/graph").status_code == 200


def test_a_foreign_host_name_is_refused_so_dns_rebinding_gets_nothing(api):
    response = api.api("GET", "/api/graph", headers={"Host": f"evil.example:{api.port}"})
    assert response.status_code == 403
    assert api.api("GET", "/api/graph", headers={"Host": f"localhost:{api.port}"}).status_code == 200


def test_the_websocket_accepts_only_the_editors_own_origin(api):
    url = api.url + "/_nicegui_ws/socket.io/?EIO=4&transport=polling"
    refused = httpx.get(url, headers={"Origin": "http://127.0.0.1:9999"}, timeout=10)
    assert refused.status_code == 400 and "not an accepted origin" in refused.text
    assert "access-control-allow-origin" not in refused.headers
    accepted = httpx.get(url, headers={"Origin": api.url}, timeout=10)
    assert accepted.status_code == 200 and '"sid"' in accepted.text


# -- 4. bad requests answer 422 naming the field --------------------------------------------------


def test_a_nul_byte_in_a_path_is_a_422_naming_the_param(api):
    response = api.api("PUT", "/api/graph", json=doc({"id": "r", "type": "test.read_folder",
                                                      "params": {"root": "inside\x00/etc"}}))
    assert response.status_code == 422 and "r.root" in response.text and "NUL" in response.text
    response = api.api("POST", "/api/edit", json={"ops": [{"op": "set_params", "id": "c1", "params": {}},
                                                          {"op": "add_node", "type": "test.read_folder", "id": "r",
                                                           "params": {"weights": "a\x00b"}}]})
    assert response.status_code == 422 and "r.weights" in response.text


@pytest.mark.parametrize("body, field", [
    (["x"], "body"),
    ({"ops": ["ab"]}, "ops.0"),
    ({"ops": [["a"]]}, "ops.0"),
    ({"ops": [{"op": "set_params", "node": "c1", "params": {}}]}, "ops.0.set_params.id"),
    ({"ops": [{"op": "set_params", "id": "c1", "params": {}, "node": "c1"}]}, "ops.0.set_params.node"),
    ({"ops": [{"op": "explode", "id": "c1"}]}, "ops.0"),
    ({"ops": [{"op": "move", "id": "c1", "x": "left", "y": 0}]}, "ops.0.move.x"),
    ({"ops": [{"id": "c1"}]}, "ops.0"),
    ({"ops": "move"}, "ops"),
    ({}, "ops"),
])
def test_malformed_edits_are_422_naming_the_field_and_change_nothing(api, body, field):
    before = graph_now(api)
    response = api.api("POST", "/api/edit", json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    places = [".".join(str(p) for p in item["loc"][1:]) or "body" for item in detail]
    assert any(place.startswith(field) for place in places), places
    assert "_apply_" not in response.text and "keyword argument" not in response.text
    assert graph_now(api) == before


# -- 5. size limits --------------------------------------------------------------------------------


def test_a_body_over_the_limit_is_413_before_it_is_read(api):
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        sock.sendall((f"POST /api/edit HTTP/1.1\r\nHost: 127.0.0.1:{api.port}\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {MAX_BODY_BYTES + 1}\r\n\r\n").encode() + b'{"ops": [')
        reply = b""
        while b"MB" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        reply = reply.decode()
    assert reply.startswith("HTTP/1.1 413") and "at most 10 MB" in reply


def test_a_chunked_body_over_the_limit_is_refused_too(api):
    before = graph_now(api)
    chunk = b'{"op": "move", "id": "c1", "x": 1, "y": 2},' * 10_000

    def body():
        yield b'{"ops": ['
        for _ in range(MAX_BODY_BYTES // len(chunk) + 2):
            yield chunk
        yield b'{"op": "move", "id": "c1", "x": 1, "y": 2}]}'

    try:
        response = httpx.post(api.url + "/api/edit", content=body(), headers=JSON, timeout=60)
        assert response.status_code == 413
    except httpx.HTTPError:
        pass  # the server may close the connection while the client is still sending
    assert graph_now(api) == before


def test_ops_per_edit_are_capped(api):
    before = graph_now(api)
    move = {"op": "move", "id": "c1", "x": 5, "y": 5}
    response = api.api("POST", "/api/edit", json={"ops": [move] * (MAX_OPS + 1)})
    assert response.status_code == 422 and f"at most {MAX_OPS}" in response.text
    assert graph_now(api) == before
    started = time.perf_counter()
    assert api.api("POST", "/api/edit", json={"ops": [move] * MAX_OPS}).status_code == 200
    assert time.perf_counter() - started < 10


def test_a_ten_thousand_node_graph_is_taken_quickly(api):
    nodes = [{"id": f"n{i}", "type": "test.add" if i else "test.constant"} for i in range(10_000)]
    edges = [{"source": f"n{i - 1}", "source_port": "value", "target": f"n{i}", "target_port": "a"}
             for i in range(1, 10_000)]
    started = time.perf_counter()
    response = api.api("PUT", "/api/graph", json=doc(*nodes, edges=edges))
    seconds = time.perf_counter() - started
    assert response.status_code == 200 and response.json()["problems"] == []
    assert seconds < 10, seconds  # was 18.8 s
    assert api.api("GET", "/api/status").status_code == 200


def test_deeply_nested_json_is_a_4xx(api):
    for text in ("[" * 100_000, '{"a":' * 50_000):
        response = api.api("PUT", "/api/graph", headers=JSON, content=text.encode())
        assert 400 <= response.status_code < 500


# -- 7. a damaged cache entry is recomputed -------------------------------------------------------


def test_a_damaged_cache_entry_is_recomputed_and_the_log_says_so(tmp_path):
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    fast = {"ops": [{"op": "set_params", "id": "slow", "params": {"steps": 2, "delay": 0.0}}]}
    first = Session(pack_registry(), workspace, graph=demo_graph())  # what the server opens with
    try:
        first.document.edit("set_params", id="slow", params={"steps": 2, "delay": 0.0})
        first.queue.run(target="add")
        assert first.queue.wait(60).ok and first.snapshot()["nodes"]["add"]["state"] == "done"
    finally:
        first.close()
    entries = list((workspace / "cache").glob("*/*/value/value.json"))
    assert len(entries) == 3  # c1, c2, add
    for entry in entries:
        entry.write_text(entry.read_text()[:2])  # truncated
    second = Server(workspace)  # a new process: the values must come from disk
    try:
        assert second.api("POST", "/api/edit", json=fast).status_code == 200
        plan = second.api("POST", "/api/run", json={"target": "slow"}).json()["plan"]
        assert plan == {"c1": "cached", "c2": "cached", "add": "cached", "slow": "run"}
        status = wait_idle(second)
        assert status["nodes"]["slow"]["state"] == "done", status
        assert status["nodes"]["add"]["state"] == "done", status
        assert status["error"] is None
        assert list((workspace / "cache").glob("*/*.damaged-*"))
        page_log = second.log.read_text()
        assert "Traceback" not in page_log
    finally:
        second.stop()


# -- 8. answers that say what is wrong --------------------------------------------------------------


def test_running_an_invalid_graph_answers_the_problems(api):
    broken = doc({"id": "classifier", "type": "test.add"})  # its input 'a' is not connected
    assert api.api("PUT", "/api/graph", json=broken).status_code == 200
    response = api.api("POST", "/api/run", json={"target": "classifier"})
    assert response.status_code == 422
    problems = response.json()["detail"]["problems"]
    assert problems[0]["node"] == "classifier" and problems[0]["port"] == "a"
    response = api.api("POST", "/api/run", json={"target": "nobody"})
    assert response.status_code == 404 and "no node with id 'nobody'" in response.text
    response = api.api("POST", "/api/run", json={"target": 5})
    assert response.status_code == 422


def test_infinity_and_nan_are_refused_not_read_back_as_null(api):
    for value in ("Infinity", "NaN", "-Infinity"):
        text = json.dumps(doc({"id": "c", "type": "test.constant"})).replace('"type": "test.constant"',
                                                                          f'"type": "test.constant", "params": {{"value": {value}}}')
        response = api.api("PUT", "/api/graph", headers=JSON, content=text.encode())
        assert response.status_code == 422 and "c" in response.text and "finite number" in response.text
        edit = ('{"ops": [{"op": "set_params", "id": "c1", "params": {"value": %s}}]}' % value).encode()
        response = api.api("POST", "/api/edit", headers=JSON, content=edit)
        assert response.status_code == 422 and "finite number" in response.text


def test_params_keep_their_json_types(api):
    for bad in (True, "3"):
        response = api.api("POST", "/api/edit", json={"ops": [{"op": "set_params", "id": "c1", "params": {"value": bad}}]})
        assert response.status_code == 422 and "c1: value" in response.text
    # an integer still fills a float param
    assert api.api("POST", "/api/edit", json={"ops": [{"op": "set_params", "id": "c1",
                                                       "params": {"value": 3}}]}).status_code == 200


# -- fuzzing: any JSON, any op ------------------------------------------------------------------------

JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
                       lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                       max_leaves=12)
IDS = st.sampled_from(["c1", "c2", "add", "slow", "desc", "nobody", "1x", ""])
OP = st.fixed_dictionaries(
    {"op": st.sampled_from(["add_node", "remove_node", "set_params", "move", "rename", "connect", "disconnect",
                            "disable", "group", "ungroup", "set_group", "explode"]) | JSONISH},
    optional={"id": IDS | st.just("group") | JSONISH,  # "group": the id a group op gives when none is named
              "type": st.sampled_from(["test.constant", "test.read_folder", "nope"]) | JSONISH,
              "params": st.fixed_dictionaries({}, optional={"value": JSONISH, "root": st.sampled_from(
                  ["/etc", "..", "x\x00y"]) | JSONISH}) | JSONISH,
              "x": JSONISH, "y": JSONISH, "title": JSONISH, "source": IDS, "target": IDS,
              "source_port": st.sampled_from(["value", "a", "zz"]), "target_port": st.sampled_from(["a", "b", "zz"]),
              "replace": JSONISH, "node": JSONISH, "members": st.lists(IDS, max_size=3) | JSONISH,
              "collapsed": JSONISH, "disabled": JSONISH, "position": JSONISH})
BODY = st.fixed_dictionaries({"ops": st.lists(OP | JSONISH, max_size=4) | JSONISH}) | st.lists(OP, max_size=3) | JSONISH


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(BODY)
def test_edits_of_any_shape_never_break_the_server_and_refusals_change_nothing(server, body):
    before = server.api("GET", "/api/graph")
    response = server.api("POST", "/api/edit", headers=JSON,
                          content=json.dumps(body, allow_nan=True).encode())
    assert response.status_code < 500, response.text
    assert response.status_code in (200, 422), response.text
    after = server.api("GET", "/api/graph")
    if response.status_code != 200:
        assert after.json() == before.json()
        assert after.headers["X-Nodeflow-Version"] == before.headers["X-Nodeflow-Version"]
    graph = after.json()
    if len(graph["nodes"]) > 30:  # keep the document small between examples
        server.api("PUT", "/api/graph", json=demo_graph().model_dump(mode="json"))


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(["/api/edit", "/api/graph", "/api/run"]), JSONISH)
def test_any_json_body_on_any_route_is_never_a_5xx(server, path, body):
    method = "PUT" if path == "/api/graph" else "POST"
    server.api("POST", "/api/stop")
    response = server.api(method, path, headers=JSON, content=json.dumps(body, allow_nan=True).encode())
    assert response.status_code < 500, response.text
    server.api("POST", "/api/stop")


def test_nothing_was_written_outside_the_allowed_folders(layout):
    _, _, secret = layout
    assert sorted(p.name for p in secret.iterdir()) == ["a", "b", "c"]
    assert not Path("/etc/model.safetensors").exists()


def test_with_a_token_the_host_is_not_checked_but_the_origin_still_is(tmp_path):
    server = Server(tmp_path / "workspace", "--token", "t0ken")
    try:
        auth = {"Authorization": "Bearer t0ken"}
        # a machine name that resolves to this host is fine when every request needs the token
        assert server.api("GET", "/api/status", headers={**auth, "Host": f"myhost:{server.port}"}).status_code == 200
        assert server.api("GET", "/api/status", headers={"Host": f"myhost:{server.port}"}).status_code == 401
        response = server.api("POST", "/api/stop", headers={**auth, "Origin": "http://elsewhere.example"})
        assert response.status_code == 403
    finally:
        server.stop()
