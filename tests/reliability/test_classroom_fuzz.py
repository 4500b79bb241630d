"""Every operation of the shared server's API (the site's and a project's, from its OpenAPI schema),
called by alice with ids of hers, of bob's and made up, and with bodies made from the schema and then
poisoned: never a 5xx, always a status the schema documents, and a refusal leaves everything as it
was (accounts, projects, shares, tokens, templates, every file). And uploads with any file names and
folder names: taken into the project's data folder or refused, never written anywhere else."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.classroom_site import classroom_site, image_bytes, quick_graph, tree
from tests.reliability.test_api_fuzz import HOSTILE_TEXT, draw_request, operations, wire

IDS = ["1", "999", "c1", "bob", "alice", "ab" * 32 + ".png", "000000000000000000000000"]


def everything(site) -> tuple:
    """What a refused request must leave as it was: every row of the accounts' database but the
    tokens' last use, and every file of every user (the run stores' journals aside)."""
    db = site.server.accounts.db
    rows = tuple(tuple(map(tuple, db.query(f"SELECT * FROM {table} ORDER BY 1, 2")))
                 for table in ("users", "projects", "shares", "class_templates"))
    tokens = tuple(tuple(r)[:4] for r in db.query("SELECT id, user, label, digest FROM tokens ORDER BY id"))
    files = tree(site.server.root / "users", skip=("runs.sqlite", "runs.sqlite-wal", "runs.sqlite-shm", "autosave",
                                                    "cache", "jobs"))
    graphs = {pid: s.document.graph.model_dump(mode="json") for pid, s in site.server.open_sessions().items()}
    return rows, tokens, {k: v and len(v) for k, v in files.items()}, json.dumps(graphs, sort_keys=True)


@pytest.fixture
async def site(tmp_path):
    """Alice's and bob's projects, each with the demo graph; one site for all of a test's examples."""
    async with classroom_site(tmp_path / "root") as site:
        alice, bob = site.client("alice"), site.client("bob")
        site.mine = (await alice.post("/api/projects", json={"title": "mine"})).json()["id"]
        site.theirs = (await bob.post("/api/projects", json={"title": "theirs"})).json()["id"]
        for who, project in ((alice, site.mine), (bob, site.theirs)):
            await who.put(f"/api/p/{project}/graph", json=quick_graph().model_dump(mode="json"))
        site.schema = (await alice.get("/api/openapi.json")).json()
        yield site


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
async def test_every_operation_refuses_hostile_input_with_a_documented_4xx_and_changes_nothing(site, data):
    ops = [o for o in operations(site.schema) if not o[1].endswith("/uploads")]  # multipart: the next test
    request = draw_request(data, site.schema, ops,
                           lambda name: [site.mine, site.theirs, *IDS] if name == "project_id" else IDS)
    before = everything(site)
    response = await request.send(site.client("alice"))
    if response.status_code >= 400:
        assert everything(site) == before, (request.method, request.url, response.status_code)


NAMES = st.one_of(HOSTILE_TEXT, st.sampled_from(["pets", "../x", "/abs", ".hidden", "a" * 70, "c:evil", "ok name"]))
FILE_NAMES = st.one_of(HOSTILE_TEXT, st.sampled_from(["cat/1.png", "../../x.png", "/etc/x.png", "a\\..\\b.png",
                                                      "C:/x.png", "x.zip", ".DS_Store", "cat/.png", "cat/1.PNG"]))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=NAMES, files=st.lists(st.tuples(FILE_NAMES, st.sampled_from([b"", b"not an image", image_bytes()])),
                                  min_size=1, max_size=4), project=st.sampled_from(["mine", "theirs"]))
async def test_any_upload_is_taken_or_refused_and_nothing_lands_outside_the_data_folder(site, name, files,
                                                                                        project):
    target = getattr(site, project)
    before = everything(site)
    response = await site.client("alice").post(
        f"/api/p/{target}/uploads?" + urlencode({"name": wire(name)}),
        files=[("files", (wire(f).decode("utf-8", "replace"), data, "image/png")) for f, data in files])
    assert response.status_code < 500, response.text[:300]
    if response.status_code != 200:
        assert everything(site) == before, response.text[:300]
        return
    assert project == "mine"
    rows, tokens, after_files, graphs = everything(site)
    added = set(after_files) - set(before[2])
    data = f"alice/projects/{site.mine}/data/{response.json()['folder']}"
    assert added and all(path.startswith(data) for path in added), added
