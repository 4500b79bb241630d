"""Isolation on a shared server, tested as an attacker would: alice sends every operation of the
server's OpenAPI schema (found in the schema, so a new endpoint is covered without a line here) with
her own credentials at bob's project, run, sweep, uploaded folder, overlay, token and share ids.
Every answer is 403 or 404 and bob's state is unchanged; the few operations that take no id act on
alice's own things and show nothing of bob's. In process, through the real app (ASGI)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_asyncio

from tests.reliability.classroom_site import classroom_site, dumps, image_zip, quick_graph, tree

#: operations that name no one else's id: they act on the caller's own things
OWN_ONLY = {("GET", "/api/me"), ("GET", "/api/projects"), ("POST", "/api/projects"), ("GET", "/api/templates"),
            ("GET", "/api/queue"), ("GET", "/api/tokens"), ("POST", "/api/tokens"), ("GET", "/api/openapi.json"),
            ("GET", "/api/assignments")}
#: reads that do work: a viewer may not ask for them either
WORKING_READS = {"/api/p/{project_id}/estimate"}
OVERLAY = "ab" * 32 + ".png"


def operations(schema: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((method.upper(), path) for path, item in schema["paths"].items() for method in item
                  if method in ("get", "put", "post", "delete", "patch"))


def body_for(method: str, path: str, ids: dict[str, Any]) -> dict[str, Any]:
    """A request body that would do harm if it were let through."""
    if path.endswith("/uploads"):
        return {"files": {"files": ("x.zip", image_zip(), "application/zip")}, "params": {"name": "planted"}}
    bodies = {
        "/api/p/{project_id}/graph": {"format": "nodeflow.graph", "version": 1, "name": "pwned", "nodes": [],
                                      "edges": []},
        "/api/p/{project_id}/edit": {"ops": [{"op": "rename", "id": "c1", "title": "pwned"}]},
        "/api/p/{project_id}/run": {"target": None},
        "/api/p/{project_id}/sweep": {"grid": {"c1.value": [7, 8]}, "target": "add"},
        "/api/projects/{project_id}": {"title": "pwned", "archived": True},
        "/api/projects/{project_id}/shares": {"user": "alice"},
        "/api/templates": {"project": ids["project_id"], "title": "pwned"},
        "/api/templates/{template_id}/open": {"project": ids["project_id"]},
        "/api/projects": {"title": "alice's own"},
        "/api/tokens": {"label": "alice's own"},
        "/api/assignments/{assignment_id}/handins": {"project": ids["project_id"], "node": "c1"},
    }
    return {"json": bodies[path]} if path in bodies and method != "GET" else {}


def url_for(path: str, ids: dict[str, Any]) -> str:
    values = {**ids, "name": OVERLAY if "/overlays/" in path else ids["name"]}
    for key, value in values.items():
        path = path.replace("{%s}" % key, str(value))
    assert "{" not in path, f"an id the test does not know: {path}"
    return path


def bobs_state(site, project_id: str) -> str:
    """Everything of bob's an attack could change: the project's record and shares, its graph, runs,
    sweeps and files, bob's tokens, the class templates and the machine's queue."""
    server, bob = site.server, site.users["bob"]
    session = server.session(server.projects.get(bob, project_id))
    files = tree(server.projects.get(bob, project_id).path, skip=("runs.sqlite", "runs.sqlite-wal",
                                                                  "runs.sqlite-shm"))
    return dumps({"project": server.projects.get(bob, project_id), "graph": session.document.graph.model_dump(mode="json"),
                  "version": session.document.version, "runs": [(r["id"], r["status"]) for r in session.runs.list()],
                  "sweep": session.sweeps.get(1)["branches"], "files": {k: v and len(v) for k, v in files.items()},
                  "tokens": server.accounts.tokens("bob"), "templates": server.projects.templates(),
                  "queue": server.queue(site.users["teacher"])})


async def bobs_things(site) -> dict[str, Any]:
    """Bob's project with a graph, a finished run, a sweep, an upload and an overlay; a class template."""
    bob = site.client("bob")
    project = (await bob.post("/api/projects", json={"title": "Bob's secret work"})).json()["id"]
    assert (await bob.put(f"/api/p/{project}/graph", json=quick_graph().model_dump(mode="json"))).status_code == 200
    run = (await bob.post(f"/api/p/{project}/run", json={"target": "desc"})).json()["id"]
    await site.wait_idle("bob", project)
    sweep = (await bob.post(f"/api/p/{project}/sweep", json={"grid": {"c1.value": [3, 4]}, "target": "add"})).json()
    await site.wait_idle("bob", project)
    upload = await bob.post(f"/api/p/{project}/uploads", params={"name": "bobdata"},
                            files={"files": ("pets.zip", image_zip(), "application/zip")})
    assert upload.status_code == 200, upload.text
    session = site.server.open_sessions()[project]
    session.results.overlay_folder.mkdir(parents=True, exist_ok=True)
    (session.results.overlay_folder / OVERLAY).write_bytes(b"\x89PNG bob's overlay")
    teacher = site.client("teacher")
    template = (await teacher.post("/api/templates", json={"project": project, "title": "Week 1"})).json()["id"]
    token = site.server.accounts.tokens("bob")[0].id
    return {"project_id": project, "run_id": run, "sweep_id": sweep["id"], "node_id": "c1", "true": "a",
            "predicted": "b", "name": "bobdata", "template_id": template, "token_id": token, "other": "alice",
            "assignment_id": "none-such", "handin_id": 1}


pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="class", loop_scope="module")
async def bobs(tmp_path_factory):
    """One site with bob's things for the tests of a class that only read them or are refused (each
    compares bob's state with how it was just before its own requests, and leaves it as it found it): the
    site, bob's ids, and the server folder. Per class: NiceGUI has one app, so the site ends before the
    next test starts one of its own."""
    root = tmp_path_factory.mktemp("isolation") / "root"
    async with classroom_site(root) as site:
        yield site, await bobs_things(site), root


async def send(client, method: str, path: str, ids: dict[str, Any]):
    return await client.request(method, url_for(path, ids), **body_for(method, path, ids))


class TestOnBobsThings:
    """Bob's things made once for these three tests."""

    async def test_every_operation_with_alices_credentials_on_bobs_ids_is_403_or_404(self, bobs):
        site, ids, root = bobs
        alice = site.client("alice")
        schema = (await alice.get("/api/openapi.json")).json()
        ops = operations(schema)
        assert len(ops) >= 35 and ("POST", "/api/p/{project_id}/uploads") in ops
        before = bobs_state(site, ids["project_id"])
        outside = tree(root / "users" / "bob")
        for method, path in ops:
            response = await send(alice, method, path, ids)
            if (method, path) in OWN_ONLY:
                assert response.status_code < 400, (method, path, response.text[:300])
                for secret in ("Bob's secret work", ids["project_id"], ids["token_id"], "bobdata"):
                    assert secret not in response.text, (method, path, secret)
            else:
                assert response.status_code in (403, 404), (method, path, response.status_code, response.text[:300])
            assert "Bob's secret work" not in response.text or path == "/api/templates", (method, path)
        await site.wait_idle("bob", ids["project_id"])
        assert bobs_state(site, ids["project_id"]) == before
        assert tree(root / "users" / "bob") == outside  # nothing planted, nothing removed

    async def test_bobs_run_sweep_and_file_names_in_alices_own_project_are_not_there(self, bobs):
        site, ids, root = bobs
        alice = site.client("alice")
        mine = (await alice.post("/api/projects", json={"title": "mine"})).json()["id"]
        schema = (await alice.get("/api/openapi.json")).json()
        before = bobs_state(site, ids["project_id"])
        for method, path in operations(schema):
            if not path.startswith("/api/p/") or path.count("{") < 2:
                continue  # an operation on the project alone: alice's own
            response = await send(alice, method, path, {**ids, "project_id": mine})
            assert response.status_code == 404, (method, path, response.status_code, response.text[:300])
        assert bobs_state(site, ids["project_id"]) == before

    async def test_a_project_shared_read_only_answers_reads_and_refuses_every_change_with_403(self, bobs):
        site, ids, root = bobs
        bob, alice = site.client("bob"), site.client("alice")
        assert (await bob.post(f"/api/projects/{ids['project_id']}/shares", json={"user": "alice"})).status_code == 200
        try:
            schema = (await alice.get("/api/openapi.json")).json()
            before = bobs_state(site, ids["project_id"])
            seen = (await alice.get(f"/api/p/{ids['project_id']}/graph")).json()
            assert [n["id"] for n in seen["nodes"]] == [n.id for n in quick_graph().nodes]  # she sees the graph
            assert [r["id"] for r in (await alice.get(f"/api/p/{ids['project_id']}/runs")).json()] == [3, 2, 1]
            for method, path in operations(schema):
                if not path.startswith("/api/p/"):
                    continue
                response = await send(alice, method, path, ids)
                if method == "GET" and path not in WORKING_READS:
                    assert response.status_code in (200, 404, 409, 422), (method, path, response.status_code)
                else:
                    assert response.status_code == 403, (method, path, response.status_code, response.text[:300])
                    assert "read-only" in response.json()["detail"]
            await site.wait_idle("bob", ids["project_id"])
            assert bobs_state(site, ids["project_id"]) == before
        finally:  # bob's project is his alone again, for the other tests on this site
            unshared = await bob.delete(f"/api/projects/{ids['project_id']}/shares/alice")
            assert unshared.status_code == 200, unshared.text


@pytest.mark.parametrize("who", ["teacher"])
async def test_an_admin_reads_every_project_and_changes_none(tmp_path, who):
    async with classroom_site(tmp_path / "root") as site:
        ids = await bobs_things(site)
        teacher = site.client(who)
        listed = (await teacher.get("/api/projects")).json()
        assert ids["project_id"] in [p["id"] for p in listed["everyone"]]
        before = bobs_state(site, ids["project_id"])
        assert (await teacher.get(f"/api/p/{ids['project_id']}/runs/{ids['run_id']}")).status_code == 200
        for method, path in [("POST", "/api/p/{project_id}/run"), ("PUT", "/api/p/{project_id}/graph"),
                             ("DELETE", "/api/p/{project_id}/data/{name}"), ("POST", "/api/p/{project_id}/uploads"),
                             ("PATCH", "/api/projects/{project_id}")]:
            response = await send(teacher, method, path, ids)
            assert response.status_code == 403, (method, path, response.status_code, response.text)
        assert bobs_state(site, ids["project_id"]) == before
        # but the machine's queue is the admin's to keep: cancelling any run is allowed
        gate = tmp_path / "never"
        bob = site.client("bob")
        gated = {"format": "nodeflow.graph", "version": 1, "name": "gated", "edges": [],
                 "nodes": [{"id": "gate", "type": "test.gate", "params": {"until": str(gate)}}]}
        assert (await bob.put(f"/api/p/{ids['project_id']}/graph", json=gated)).status_code == 200
        run = (await bob.post(f"/api/p/{ids['project_id']}/run", json={})).json()["id"]
        queue = (await teacher.get("/api/queue")).json()
        assert [(e["user"], e["runs"], e["status"]) for e in queue] == [("bob", [run], "running")]
        cancelled = await teacher.post(f"/api/queue/{ids['project_id']}/{run}/cancel")
        assert cancelled.json()["status"] == "cancelling"
        await site.wait_idle("bob", ids["project_id"])
        assert json.loads(dumps((await bob.get(f"/api/p/{ids['project_id']}/runs/{run}")).json()["status"])) \
            == "cancelled"


async def test_a_project_past_the_persons_open_projects_answers_429_naming_the_limit_and_others_go_on(tmp_path):
    async with classroom_site(tmp_path / "root", max_open_projects=1) as site:
        alice, bob = site.client("alice"), site.client("bob")
        first = (await alice.post("/api/projects", json={"title": "one"})).json()["id"]
        second = (await alice.post("/api/projects", json={"title": "two"})).json()["id"]
        assert (await alice.get(f"/api/p/{first}/status")).status_code == 200
        site.server.hold(first)  # a page shows it: it cannot be closed to make room
        refused = await alice.get(f"/api/p/{second}/status")
        assert refused.status_code == 429 and "--max-open-projects" in refused.json()["detail"]
        theirs = (await bob.post("/api/projects", json={"title": "bob's"})).json()["id"]
        assert (await bob.get(f"/api/p/{theirs}/status")).status_code == 200  # the limit is per person
        site.server.let_go(first)
