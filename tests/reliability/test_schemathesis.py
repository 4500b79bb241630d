"""Schemathesis against both servers' own OpenAPI schemas: every operation the schema lists, called
with requests Schemathesis makes from it (valid ones and ones that break it), answered without a 5xx
(its ``not_a_server_error`` check). The one-person editor as ``nodeflow serve`` runs it; the shared
server as ``nodeflow serve --users`` does, called by a student with her API token, every
``{project_id}`` her own project.

In process: Schemathesis loads the schema and draws and checks each case; the request goes through an
ASGI client on the test's event loop, where NiceGUI's app, its session and its background work live
(``schemathesis.openapi.from_asgi`` would drive the app from a second loop in a thread of its own and
start its lifespan a second time). Each operation is one Hypothesis run of its own in a worker thread,
so every operation gets its examples and one failing operation does not hide another."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error

from tests.reliability.classroom_site import classroom_site, image_zip, quick_graph

BASE = "http://127.0.0.1:8080"
#: examples per operation: enough to reach each one's refusals, small enough for CI (about 60 operations)
EXAMPLES = 25
#: the same examples on every CI run; new ones locally
CASE_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=os.environ.get("CI") == "true",
                         suppress_health_check=list(HealthCheck), print_blob=True)
#: path params that name something there (the demo graph's nodes, the run the fixtures made, the student's
#: uploaded folder), drawn now and then in place of Schemathesis's, so a case gets past the lookup
KNOWN = {"node_id": ["c1", "add", "slow", "desc"], "run_id": ["1"], "name": ["pets"]}
#: path params that once got a 500, tried first on every operation that takes them: digits that
#: ``str.isdigit`` takes and ``int`` cannot read (a sweep id "²" was one)
REGRESSIONS = {"sweep_id": ["²", "①"], "run_id": ["²", "①"]}


def cases(operation) -> st.SearchStrategy[Case]:
    """Valid and schema-breaking requests for ``operation``, path params sometimes ones that exist."""
    made = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))
    known = st.fixed_dictionaries({name: st.none() | st.sampled_from(values) for name, values in KNOWN.items()})
    return st.builds(_with_known, made, known)


def _with_known(case: Case, known: dict[str, str | None]) -> Case:
    for name, value in known.items():
        if value is not None and name in case.path_parameters:
            case.path_parameters[name] = value
    return case


def regressions(operation) -> list[Case]:
    """The cases of ``REGRESSIONS`` for ``operation``: one per value, its other path params "1"."""
    names = re.findall(r"\{(\w+)\}", operation.path)
    return [operation.Case(path_parameters={other: value if other == name else "1" for other in names})
            for name in names for value in REGRESSIONS.get(name, [])]


async def send(client: httpx.AsyncClient, case: Case) -> httpx.Response:
    """``case`` as Schemathesis encodes it for a client (``requests``' arguments), sent by ``client``."""
    kwargs = case.as_transport_kwargs(base_url=BASE)
    prepared = requests.Request(**{k: v for k, v in kwargs.items() if k in (
        "method", "url", "headers", "files", "data", "params", "auth", "cookies", "json")}).prepare()
    headers = {k: v for k, v in prepared.headers.items() if k.lower() != "content-length"}
    body = prepared.body.encode("utf-8") if isinstance(prepared.body, str) else prepared.body
    return await client.request(prepared.method, prepared.url, headers=headers, content=body)


def described(exc: BaseException) -> str:
    """What Hypothesis and Schemathesis say of a failure: the message, the falsifying example and the
    request to reproduce it (notes), for each failure of a group."""
    parts = [str(exc), *getattr(exc, "__notes__", [])]
    if isinstance(exc, BaseExceptionGroup):
        parts += [described(sub) for sub in exc.exceptions]
    return "\n".join(parts)


async def fuzz(client: httpx.AsyncClient, raw_schema: dict[str, Any], fill: Callable[[Case], None],
               after: Callable[[Case], None], first: Callable[[str], bool] = lambda path: False) -> int:
    """Every operation of ``raw_schema`` (``first`` ones first), ``EXAMPLES`` cases each: ``fill``
    completes a case before it is sent, ``after`` runs after each answer (both in the worker thread).
    Fails naming every operation that answered a 5xx; returns how many operations ran."""
    schema = schemathesis.openapi.from_dict(raw_schema)
    operations = sorted((result.ok() for result in schema.get_all_operations()),
                        key=lambda op: (not first(op.path), op.path, op.method))
    assert operations
    loop = asyncio.get_running_loop()
    failures: list[str] = []

    def explore(operation) -> None:
        @CASE_SETTINGS
        @given(case=cases(operation))
        def no_server_error(case: Case) -> None:
            fill(case)
            response = asyncio.run_coroutine_threadsafe(send(client, case), loop).result(timeout=120)
            try:
                case.validate_response(response, checks=[not_a_server_error])
            finally:
                after(case)

        for case in regressions(operation):
            no_server_error = example(case=case)(no_server_error)
        try:
            no_server_error()
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - Schemathesis's failures: a BaseExceptionGroup
            failures.append(f"{operation.label}: {described(exc)}")

    for operation in operations:
        await asyncio.to_thread(explore, operation)
    assert not failures, "\n\n".join(failures)
    return len(operations)


def as_served(headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    """A client of NiceGUI's app that gets what a server sends when a route raises (a 500 answer),
    not the route's exception, so Schemathesis's check judges it."""
    from nicegui import app

    transport = httpx.ASGITransport(app, raise_app_exceptions=False, client=("127.0.0.1", 40000))
    return httpx.AsyncClient(transport=transport, base_url=BASE, headers=headers, timeout=60)


async def test_the_editors_api_answers_no_5xx_to_what_schemathesis_makes_from_its_schema(http):
    """``nodeflow serve``'s API (the ``http`` fixture: the real app on a session of the test pack),
    after one run, so the run, its nodes' tables and the comparison have something to find."""
    session = http.session
    assert (await http.client.post("/api/run", json={"target": "desc"})).status_code == 200
    await asyncio.to_thread(session.queue.wait, 60)

    def after(case: Case) -> None:
        session.queue.wait(30)  # a run the case started ends before the next case
        if len(session.document.graph.nodes) > 20:
            session.document.replace(http.graph)

    async with as_served() as client:
        count = await fuzz(client, http.schema, fill=lambda case: None, after=after)
    assert count == sum(len(item) for item in http.schema["paths"].values())


async def upload_pets(alice: httpx.AsyncClient, project_id: str) -> None:
    response = await alice.post(f"/api/p/{project_id}/uploads", params={"name": "pets"},
                                files=[("files", ("pets.zip", image_zip(per_class=2), "application/zip"))])
    assert response.status_code == 200, response.text


@pytest.fixture
async def student(tmp_path):
    """The shared server with alice (a student, no admin) signed in by her API token, her project
    holding the quick demo graph, run once, and an uploaded folder ``data/pets``."""
    async with classroom_site(tmp_path / "root") as site:
        alice = site.client("alice")
        site.mine = (await alice.post("/api/projects", json={"title": "mine"})).json()["id"]
        await upload_pets(alice, site.mine)
        assert (await alice.put(f"/api/p/{site.mine}/graph", json=quick_graph().model_dump(mode="json"))
                ).status_code == 200
        assert (await alice.post(f"/api/p/{site.mine}/run", json={"target": "desc"})).status_code == 200
        await site.wait_idle("alice", site.mine)
        site.schema = (await alice.get("/api/openapi.json")).json()
        yield site


async def test_the_shared_servers_api_answers_no_5xx_to_a_students_requests_made_from_its_schema(student):
    """``nodeflow serve --users``: the site's routes and the per-project ones, each ``{project_id}``
    alice's own project; the project's routes first, before a case of the site's may archive it."""
    site, loop = student, asyncio.get_running_loop()

    def fill(case: Case) -> None:
        if "project_id" in case.path_parameters:
            case.path_parameters["project_id"] = site.mine

    def after(case: Case) -> None:
        if case.path.endswith(("/run", "/sweep")):
            asyncio.run_coroutine_threadsafe(site.wait_idle("alice", site.mine), loop).result(timeout=120)
        pets = site.server.projects.folder("alice", site.mine) / "data" / "pets"  # a case may have removed it
        if case.path.endswith("/data/{name}") and not pets.is_dir():
            asyncio.run_coroutine_threadsafe(upload_pets(site.client("alice"), site.mine), loop).result(timeout=120)

    async with as_served({"Authorization": f"Bearer {site.tokens['alice']}"}) as client:
        count = await fuzz(client, site.schema, fill=fill, after=after, first=lambda path: path.startswith("/api/p/"))
    assert count == sum(len(item) for item in site.schema["paths"].values())
