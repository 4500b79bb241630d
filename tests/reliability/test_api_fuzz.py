"""Every operation of the editor's HTTP API, found in its own OpenAPI schema (so a new endpoint is
fuzzed without a line here), called with bodies made from its schema and then poisoned: lone
surrogates, NUL bytes, huge numbers, deep nesting, raw bytes that are not UTF-8. Whatever comes in,
the answer is never a 5xx, its status is one the schema documents for that operation, and a refusal
leaves the graph, the run history and the cache as they were.

In process, through the real NiceGUI app with the API installed (an ASGI transport), so a few
hundred requests take seconds."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodeflow.session import Session

METHODS = ("get", "put", "post", "delete", "patch")
SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
HOSTILE_TEXT = st.one_of(
    st.text(st.characters(codec=None), max_size=12),  # lone surrogates and NUL among any code point
    st.tuples(st.text(max_size=4), SURROGATES, st.text(max_size=4)).map("".join),
    st.sampled_from(["\x00", "a\x00b", "../../etc", "\ud800", "\udfff", "c1\ud800", "x" * 5000]))
HUGE = st.sampled_from([10 ** 30, -(10 ** 30), 2 ** 63, 1e308, -1e308, 5e-324, 10 ** 4000])
SCALARS = st.none() | st.booleans() | st.integers() | HUGE | st.floats(allow_nan=False) | HOSTILE_TEXT
HOSTILE = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(HOSTILE_TEXT, inner, max_size=3), max_leaves=10)
#: arrays nested deeper than any parser should recurse (as raw text)
DEEP = st.integers(50, 20_000).flatmap(lambda n: st.sampled_from([
    "[" * n + "]" * n, '{"a":' * n + "1" + "}" * n, '{"ops": ' + "[" * n + "]" * n + "}"]))


def from_schema(schema: dict[str, Any], components: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values that fit a (FastAPI-made) JSON schema, strings drawn from every code point, lone
    surrogates and NUL included; what the schema leaves open is hostile."""
    if "$ref" in schema:
        return st.deferred(lambda: from_schema(components[schema["$ref"].rsplit("/", 1)[-1]], components))
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        return st.one_of([from_schema(option, components) for option in options])
    kind = schema.get("type")
    if kind == "object":
        properties = {name: from_schema(sub, components) for name, sub in schema.get("properties", {}).items()}
        required = set(schema.get("required", []))
        fixed = st.fixed_dictionaries({k: v for k, v in properties.items() if k in required},
                                      optional={k: v for k, v in properties.items() if k not in required})
        if properties or schema.get("additionalProperties") is False:
            return fixed
        return st.dictionaries(HOSTILE_TEXT, HOSTILE, max_size=3)
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {}), components), max_size=3)
    if kind == "string":
        return HOSTILE_TEXT
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum")) | HUGE
    if kind == "number":
        return st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False) | HUGE
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return HOSTILE


def poisoned(value: Any) -> st.SearchStrategy[Any]:
    """``value`` with one of its leaves (or the whole) replaced by something hostile."""
    paths: list[tuple[Any, ...]] = [()]
    stack = [((), value)]
    while stack:
        where, item = stack.pop()
        children = item.items() if isinstance(item, dict) else enumerate(item) if isinstance(item, list) else ()
        for key, child in children:
            paths.append((*where, key))
            stack.append(((*where, key), child))

    def replace(target: tuple[Any, ...], new: Any) -> Any:
        if not target:
            return new
        copy = json.loads(json.dumps(value))
        holder = copy
        for key in target[:-1]:
            holder = holder[key]
        holder[target[-1]] = new
        return copy

    return st.tuples(st.sampled_from(paths), HOSTILE).map(lambda pair: replace(*pair))


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, item in schema["paths"].items()
            for method, op in item.items() if method in METHODS]


def body_schema(schema: dict[str, Any], op: dict[str, Any]) -> dict[str, Any] | None:
    content = op.get("requestBody", {}).get("content", {}).get("application/json")
    if content is None:
        return None
    return content["schema"]


def encoded(body: Any, raw: bool) -> bytes:
    """JSON text: surrogates as ``\\udXXX`` escapes, or (``raw``) as the bytes a careless encoder writes."""
    text = json.dumps(body, ensure_ascii=not raw, allow_nan=True)
    return text.encode("utf-8", "surrogatepass")


def state(session: Session) -> tuple:
    cache = session.workspace / "cache"
    files = sorted(str(p.relative_to(cache)) for p in cache.rglob("*")) if cache.exists() else []
    return session.document.graph.model_dump(mode="json"), session.document.version, session.runs.list(limit=10_000), files


def wire(text: str) -> bytes:
    """Text as bytes on the wire, lone surrogates included (as a careless client encodes them)."""
    return text.encode("utf-8", "surrogatepass")


@dataclass(frozen=True)
class Request:
    """One call of an operation, drawn to be hostile."""
    method: str
    url: str
    content: bytes | None
    op: dict[str, Any]

    async def send(self, client):
        """Sent by ``client``; the answer is never a 5xx and always a status the schema documents."""
        response = await client.request(self.method, self.url, content=self.content,
                                        headers={"Content-Type": "application/json"} if self.content is not None
                                        else {})
        assert response.status_code < 500, (self.method, self.url, response.text[:500])
        assert str(response.status_code) in self.op["responses"], (
            self.method, self.url, response.status_code, response.text[:300], sorted(self.op["responses"]))
        return response


def draw_request(data, schema: dict[str, Any], ops: list[tuple[str, str, dict[str, Any]]],
                 ids: Callable[[str], list[str]]) -> Request:
    """One of ``ops`` with each path param one of ``ids(its name)`` or hostile text, query params
    made from their schemas or any scalar, and a body made from its schema, poisoned, hostile or none."""
    components = schema.get("components", {}).get("schemas", {})
    method, path, op = data.draw(st.sampled_from(ops), label="operation")
    url, query = path, {}
    for param in op.get("parameters", []):
        if param["in"] == "path":
            value = data.draw((st.sampled_from(ids(param["name"])) | HOSTILE_TEXT).filter(
                lambda v: v not in ("", ".", "..")), label=param["name"])  # a client resolves dot segments
            url = url.replace("{%s}" % param["name"], quote(wire(value), safe=""))
        elif param["in"] == "query" and data.draw(st.booleans(), label=f"send {param['name']}"):
            value = data.draw(from_schema(param["schema"], components) | SCALARS, label=param["name"])
            query[param["name"]] = wire(value if isinstance(value, str) else json.dumps(value))
    if query:
        url += "?" + urlencode(query)
    content = None
    expected = body_schema(schema, op)
    if expected is not None or data.draw(st.booleans(), label="a body anyway"):
        valid = from_schema(expected, components) if expected is not None else st.just({})
        body = data.draw(st.one_of(valid, valid.flatmap(poisoned), HOSTILE), label="body")
        content = data.draw(st.one_of(st.builds(encoded, st.just(body), st.booleans()),
                                      DEEP.map(str.encode)), label="bytes")
    return Request(method, url, content, op)


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
async def test_every_operation_refuses_hostile_input_with_a_documented_4xx_and_changes_nothing(http, data):
    session = http.session
    request = draw_request(data, http.schema, operations(http.schema), lambda name: ["c1", "desc", "1", "999"])
    before = state(session)
    response = await request.send(http.client)
    if response.status_code >= 400:
        assert state(session) == before, (request.method, request.url, response.status_code)
    session.queue.wait(30)  # a run or a sweep this started ends before the next example compares
    if len(session.document.graph.nodes) > 20:
        session.document.replace(http.graph)
