"""The README's "Automate it" example, run as written against a live editor, and the published
OpenAPI schema that types every edit op."""

from __future__ import annotations

import contextlib
import io
import re

import pytest

from tests.ui.conftest import ROOT, Server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("automate") / "workspace")
    yield server
    server.stop()


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Automate it", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_against_a_live_editor(server):
    code = readme_example().replace("http://127.0.0.1:8080", server.url)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    assert out.getvalue().strip() == "{'c1': 'run'} done"
    graph = server.api("GET", "/api/graph").json()
    c1 = next(n for n in graph["nodes"] if n["id"] == "c1")
    assert c1["title"] == "Set by a script" and c1["position"] == {"x": 0.0, "y": 0.0}


def test_the_openapi_schema_types_every_edit_op(server):
    schema = server.api("GET", "/api/openapi.json").json()
    assert {"/api/graph", "/api/edit", "/api/run", "/api/stop", "/api/status", "/api/nodes"} <= set(schema["paths"])
    assert not any(path.startswith("/_nicegui") for path in schema["paths"])
    body = schema["paths"]["/api/edit"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("/EditRequest")
    components = schema["components"]["schemas"]
    ops = components["EditRequest"]["properties"]["ops"]
    assert ops["maxItems"] == 10_000
    union = ops["items"]
    assert union["discriminator"]["propertyName"] == "op"
    assert set(union["discriminator"]["mapping"]) == {"add_node", "remove_node", "set_params", "move", "rename",
                                                      "connect", "disconnect", "disable", "group", "ungroup",
                                                      "set_group"}
    assert components["Group"]["required"] == ["op", "members"]
    assert components["SetParams"]["required"] == ["op", "id", "params"]
    assert components["SetParams"]["additionalProperties"] is False
    assert set(components["Connect"]["required"]) == {"op", "source", "source_port", "target", "target_port"}
    run = schema["paths"]["/api/run"]["post"]
    assert "422" in run["responses"] and "404" in run["responses"]  # a second run is queued, not refused


def test_wrong_arguments_are_answered_in_the_schemas_terms(server):
    response = server.api("POST", "/api/edit", json={"ops": [{"op": "set_params", "node": "c1", "params": {}}]})
    assert response.status_code == 422
    errors = {".".join(map(str, e["loc"])): e["msg"] for e in response.json()["detail"]}
    assert errors == {"body.ops.0.set_params.id": "Field required",
                      "body.ops.0.set_params.node": "Extra inputs are not permitted"}
