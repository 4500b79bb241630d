"""What a schema fuzzer and a hand attack on the HTTP API found, each pinned: text that is not
valid Unicode, a chunked body over the limit, repeated Origin headers, OPTIONS and 405 answers, the
statuses the schema documents, and validation that sees a folder swapped for a link."""

from __future__ import annotations

import pytest

from nodeflow.ui.api import MAX_BODY_BYTES

JSON = {"Content-Type": "application/json"}
S = "\\ud800"  # a lone surrogate, as JSON spells it

SHAPES = [
    ("/api/edit", '{"ops": [{"op": "%s"}]}' % S, "body.ops.0.op"),
    ("/api/edit", '{"ops": [{"op": "add_node", "type": "%s"}]}' % S, "body.ops.0.type"),
    ("/api/edit", '{"ops": [{"op": "add_node", "type": "test.constant", "id": "a%s"}]}' % S, "body.ops.0.id"),
    ("/api/edit", '{"ops": [{"op": "rename", "id": "c1", "title": "%s"}]}' % S, "body.ops.0.title"),
    ("/api/edit", '{"ops": [{"op": "remove_node", "id": "%s"}]}' % S, "body.ops.0.id"),
    ("/api/edit", '{"ops": [{"op": "set_params", "id": "c1", "params": {"%s": 1}}]}' % S, "body.ops.0.params"),
    ("/api/edit", '{"ops": [{"op": "add_node", "type": "test.read_folder", "params": {"root": "x%s"}}]}' % S,
     "body.ops.0.params.root"),
    ("/api/edit", '{"ops": [{"op": "connect", "source": "%s", "source_port": "value", "target": "add", '
                  '"target_port": "a"}]}' % S, "body.ops.0.source"),
    ("/api/run", '{"target": "%s"}' % S, "body.target"),
    ("/api/sweep", '{"grid": {"%s.value": [1, 2]}}' % S, "body.grid"),
    ("/api/sweep", '{"grid": {"c1.value": [1, 2]}, "target": "%s"}' % S, "body.target"),
    ("/api/sweep", '{"grid": {"c1.value": ["%s"]}}' % S, "body.grid.c1.value.0"),
]


@pytest.mark.parametrize("path, body, field", SHAPES)
async def test_text_that_is_not_unicode_is_a_422_naming_the_field_and_changes_nothing(http, path, body, field):
    before = http.session.document.graph
    for content in (body.encode(), body.replace(S, "\ud800").encode("utf-8", "surrogatepass")):  # escaped, raw
        response = await http.client.post(path, content=content, headers=JSON)
        assert response.status_code == 422, response.text
        detail = response.json()["detail"][0]
        assert ".".join(str(p) for p in detail["loc"]) == field and "not valid Unicode" in detail["msg"]
    assert http.session.document.graph == before and http.session.runs.list() == []


async def test_a_pair_of_escapes_that_makes_one_character_is_unicode(http):
    response = await http.client.post("/api/edit", headers=JSON,
                                      content=b'{"ops": [{"op": "rename", "id": "c1", "title": "\\ud83d\\ude00"}]}')
    assert response.status_code == 200
    assert http.session.document.graph.node("c1").title == "\U0001F600"


async def test_a_chunked_body_over_the_limit_is_413(http):
    before = http.session.document.graph
    chunk = b" " * (1024 * 1024)

    async def body():
        yield b'{"ops": ['
        for _ in range(MAX_BODY_BYTES // len(chunk) + 1):
            yield chunk
        yield b"]}"

    response = await http.client.post("/api/edit", content=body(), headers=JSON)
    assert response.status_code == 413 and "at most 10 MB" in response.text
    assert http.session.document.graph == before


async def test_a_request_with_two_origins_is_refused_even_when_the_last_is_ours(http):
    ours = "http://127.0.0.1:8080"
    for origins in (["http://evil.example", ours], [ours, ours]):
        response = await http.client.post("/api/stop", headers=[("Origin", o) for o in origins])
        assert response.status_code == 400 and "'origin' is given more than once" in response.text
    assert (await http.client.post("/api/stop", headers={"Origin": ours})).status_code == 200


async def test_options_and_405_name_every_method_of_the_path(http):
    response = await http.client.options("/api/graph")
    assert response.status_code == 204 and response.headers["allow"] == "GET, OPTIONS, PUT"
    response = await http.client.delete("/api/graph")
    assert response.status_code == 405 and response.headers["allow"] == "GET, OPTIONS, PUT"
    assert (await http.client.options("/api/runs/3/cancel")).headers["allow"] == "OPTIONS, POST"
    assert (await http.client.options("/api/nothing-here")).status_code == 404


async def test_the_schema_documents_the_refusals_every_endpoint_can_give(http):
    paths = http.schema["paths"]
    for path, item in paths.items():
        for method, operation in item.items():
            assert {"400", "401", "403", "413", "422"} <= set(operation["responses"]), (method, path)
            if "{" in path:
                assert "404" in operation["responses"], (method, path)
    assert "415" in paths["/api/edit"]["post"]["responses"]
    response = await http.client.get("/api/runs/999")  # what the schema says is what it answers
    assert response.status_code == 404 and "404" in paths["/api/runs/{run_id}"]["get"]["responses"]


async def test_validate_says_what_the_run_will_say_about_a_folder_swapped_for_a_link(http, tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    folder = http.data / "images"
    folder.mkdir()
    edit = {"ops": [{"op": "add_node", "type": "test.read_folder", "id": "r", "params": {"root": str(folder)}}]}
    assert (await http.client.post("/api/edit", json=edit)).status_code == 200
    assert not [p for p in (await http.client.get("/api/validate")).json()["problems"] if p["node"] == "r"]
    folder.rmdir()
    folder.symlink_to(secret)
    problems = [p for p in (await http.client.get("/api/validate")).json()["problems"] if p["node"] == "r"]
    assert [p["param"] for p in problems] == ["root"] and "outside the folders" in problems[0]["message"]
    assert (await http.client.post("/api/run", json={"target": "r"})).status_code == 200
    http.session.queue.wait(30)
    run = http.session.runs.list()[0]
    assert run["status"] == "failed" and "outside the folders" in run["nodes"]["r"]["error"]
