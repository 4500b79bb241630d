"""Hidden means hidden: alice, a student, sends every operation of the server's API (found in its
OpenAPI schema, so a new route is covered without a line here) with her own credentials, with path
params naming the hidden test set (its folder, its files, paths climbing to it), and with hostile
text drawn by hypothesis. No answer is a 5xx, and none names a hidden image, its folder or its path.
A graph of hers whose dataset root points at the hidden folder is refused like any path outside her
project. The teacher-only operations are refused to her, and nothing of the assignment changes."""

from __future__ import annotations

import io
import json
import random
import zipfile
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodeflow.assignments import SCORE_FILE
from nodeflow.graph import Graph
from nodeflow.node import Registry
from tests.imagegen import draw
from tests.reliability.classroom_site import classroom_site, tree
from tests.reliability.test_api_fuzz import HOSTILE_TEXT, draw_request, operations

#: a word in every hidden file's name, found nowhere else
MARK = "zqxhidden"


def hidden_zip() -> bytes:
    buffer = io.BytesIO()
    rng = random.Random(3)
    with zipfile.ZipFile(buffer, "w") as archive:
        for label, kind in (("cat", "circle"), ("dog", "stripes")):
            for i in range(6):
                image = io.BytesIO()
                draw(kind, 24, rng).save(image, "PNG")
                archive.writestr(f"{label}/{MARK}_{label}_{i}.png", image.getvalue())
    return buffer.getvalue()


@pytest.fixture(scope="module")
def registry():
    return Registry.discover(plugins=False)


#: one site for the module (its start and the hidden set's dataset doctor cost seconds): every test
#: compares what it may change with the state just before its own requests
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def site(tmp_path_factory, registry):
    async with classroom_site(tmp_path_factory.mktemp("hidden") / "root", registry=registry) as site:
        teacher, alice = site.client("teacher"), site.client("alice")
        deadline = (datetime.now(timezone.utc) + timedelta(days=7)).isoformat()
        made = await teacher.post("/api/assignments", data={"title": "Shapes", "deadline": deadline,
                                                           "handins_per_day": "3"},
                                  files={"test": ("hidden.zip", hidden_zip(), "application/zip")})
        assert made.status_code == 200, made.text
        site.assignment = made.json()
        store = site.mu.assignments
        site.hidden = store.hidden_dir(site.assignment["id"])
        site.files = sorted(p.relative_to(site.hidden).as_posix() for p in site.hidden.rglob("*.png"))
        assert len(site.files) == 12
        site.mine = (await alice.post("/api/projects", json={"title": "mine"})).json()["id"]
        site.theirs = (await site.client("bob").post("/api/projects", json={"title": "theirs"})).json()["id"]
        site.handins = {name: lay_down(store, site.assignment["id"], name, project, site.files)
                        for name, project in (("alice", site.mine), ("bob", site.theirs))}
        site.schema = (await alice.get("/api/openapi.json")).json()
        yield site


def lay_down(store, assignment_id: str, user: str, project: str, files: list[str]) -> int:
    """A scored hand-in, recorded as the server records one (its score laid down, not computed)."""
    entry = store.folder.parent / "laid-down-entry"
    entry.mkdir(exist_ok=True)
    handin = store.record(store.get(assignment_id), user, project, "train", "cd" * 32, Graph(), entry)
    (store.handin_dir(assignment_id, handin.id) / SCORE_FILE).write_text(json.dumps(
        {"files": files, "correct": [i % 3 != 0 for i in range(len(files))], "classes": ["cat", "dog"],
         "confusion": [[4, 2], [2, 4]]}))
    store._set_status(handin.id, "scored")
    return handin.id


def leaks(site, text: str) -> list[str]:
    """What of the hidden set ``text`` names: a file's name, the folder, the assignment's folder."""
    found = [word for word in (MARK, str(site.hidden), str(site.hidden.parent.parent), "data/hidden")
             if word in text]
    return found + [f for f in site.files if f in text]


def hostile_ids(site, name: str) -> list[str]:
    hidden = str(site.hidden)
    near = [hidden, hidden + "/cat", f"../../../assignments/{site.assignment['id']}/data/hidden",
            f"{site.files[0]}", f"hidden/{site.files[0]}", f"{hidden}/{site.files[0]}", "hidden", "data/hidden"]
    own = {"project_id": [site.mine], "assignment_id": [site.assignment["id"]],
           "handin_id": [str(site.handins["alice"]), str(site.handins["bob"])]}
    return own.get(name, []) + near


def everything(site) -> tuple:
    store = site.mu.assignments
    assignment = site.assignment["id"]
    return (json.dumps([a.to_json(0) for a in store.list()], sort_keys=True),
            json.dumps([h.to_json(True) for h in store.handins(assignment)], sort_keys=True),
            {k: v and len(v) for k, v in tree(store.folder / assignment).items()})


async def test_every_operation_with_paths_naming_the_hidden_set_shows_none_of_it(site):
    alice = site.client("alice")
    before = everything(site)
    checked = 0
    for method, path, op in operations(site.schema):
        names = [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]
        for name in names or [None]:
            for value in hostile_ids(site, name) if name else [None]:
                url = path
                for other in names:
                    chosen = value if other == name else hostile_ids(site, other)[0]
                    url = url.replace("{%s}" % other, quote(chosen, safe=""))
                body = {"project": site.mine, "node": value or "train"} if path.endswith("/handins") else None
                response = await alice.request(method, url, json=body) if body is not None and method == "POST" \
                    else await alice.request(method, url)
                checked += 1
                assert response.status_code < 500, (method, url, response.text[:300])
                assert not leaks(site, response.text), (method, url, leaks(site, response.text))
    assert checked > 100
    assert everything(site) == before


async def test_the_student_reads_the_board_and_her_own_hand_ins_and_nothing_of_the_teachers(site):
    alice = site.client("alice")
    base = f"/api/assignments/{site.assignment['id']}"
    board = (await alice.get(base + "/leaderboard")).json()
    assert {r["user"] for r in board["rows"]} == {"alice", "bob"}
    assert [r["user"] for r in board["rows"] if r["mine"]] == ["alice"]
    assert set(board["rows"][0]) >= {"user", "accuracy", "ci_low", "ci_high", "handed_in_at", "tied_with_best"}
    assert [h["user"] for h in (await alice.get(base + "/handins")).json()] == ["alice"]
    mine = (await alice.get(f"{base}/handins/{site.handins['alice']}")).json()
    assert "confusion" not in mine and "graph" not in mine
    assert (await alice.get(f"{base}/handins/{site.handins['bob']}")).status_code == 404
    for method, url in (("GET", base + "/grades.csv"), ("POST", base + "/close"), ("DELETE", base),
                        ("POST", "/api/assignments")):
        response = await alice.request(method, url)
        assert response.status_code == 403, (method, url, response.status_code)
    teacher = site.client("teacher")
    detail = (await teacher.get(f"{base}/handins/{site.handins['bob']}")).json()
    assert detail["confusion"]["matrix"] == [[4, 2], [2, 4]] and detail["graph"] is not None
    grades = (await teacher.get(base + "/grades.csv")).text.splitlines()
    assert [line.split(",")[0] for line in grades] == ["user", "alice", "bob"]


async def test_a_dataset_root_at_the_hidden_folder_is_refused_as_outside_the_project(site):
    alice = site.client("alice")
    for root in (str(site.hidden), f"../../../../assignments/{site.assignment['id']}/data/hidden"):
        graph = {"format": "nodeflow.graph", "version": 1, "edges": [],
                 "nodes": [{"id": "data", "type": "data.image_folder", "params": {"root": root}}]}
        put = await alice.put(f"/api/p/{site.mine}/graph", json=graph)
        if put.status_code == 200:
            run = await alice.post(f"/api/p/{site.mine}/run", json={"target": "data"})
            assert run.status_code >= 400 or True
            await site.wait_idle("alice", site.mine)
            runs = (await alice.get(f"/api/p/{site.mine}/runs")).json()
            assert runs and runs[0]["status"] != "done", runs[0]
            status = (await alice.get(f"/api/p/{site.mine}/status")).text
            assert MARK not in status
        else:
            assert put.status_code in (400, 403, 409, 422), put.text
            assert "outside" in put.text or "not allowed" in put.text, put.text
            # the refusal repeats what she typed and nothing else: the same words as for a folder that is
            # not there, so it does not even tell her the hidden folder exists
            made_up = root.replace(site.assignment["id"], "000000000000")
            other = await alice.put(f"/api/p/{site.mine}/graph", json={**graph, "nodes": [
                {"id": "data", "type": "data.image_folder", "params": {"root": made_up}}]})
            assert other.status_code == put.status_code
            assert _without_digests(other.text.replace(made_up, "ROOT")) == \
                _without_digests(put.text.replace(root, "ROOT"))
        assert not leaks(site, put.text.replace(root, ""))


async def test_a_test_set_the_upload_rules_refuse_makes_no_assignment(site):
    teacher = site.client("teacher")
    before = len(site.mu.assignments.list())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../../escape/cat/1.png", b"not an image")
    refused = await teacher.post("/api/assignments", data={"title": "Escape"},
                                 files={"test": ("x.zip", buffer.getvalue(), "application/zip")})
    assert refused.status_code == 422, refused.text
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("cat/1.png", b"\0" * 5_000_000)
    refused = await teacher.post("/api/assignments", data={"title": "Bomb"},
                                 files={"test": ("x.zip", bomb.getvalue(), "application/zip")})
    assert refused.status_code in (413, 422), refused.text
    one = await teacher.post("/api/assignments", data={"title": "One class"},
                             files={"test": ("x.zip", one_class_zip(), "application/zip")})
    assert one.status_code == 422 and "two class sub-folders" in one.text, one.text
    late = await teacher.post("/api/assignments", data={"title": "Bad", "deadline": "next tuesday"},
                              files={"test": ("x.zip", hidden_zip(), "application/zip")})
    assert late.status_code == 422 and "ISO 8601" in late.text
    assert len(site.mu.assignments.list()) == before
    assert sorted(p.name for p in site.mu.assignments.folder.iterdir() if p.is_dir()) == \
        sorted([site.assignment["id"]])


def _without_digests(text: str) -> str:
    import re

    return re.sub(r"[0-9a-f]{16,}", "H", text)


def one_class_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(3):
            image = io.BytesIO()
            draw("circle", 24, random.Random(i)).save(image, "PNG")
            archive.writestr(f"cat/{i}.png", image.getvalue())
    return buffer.getvalue()


ASSIGNMENT_OPS = None


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
async def test_any_request_of_a_student_is_answered_below_500_and_never_shows_the_hidden_set(site, data):
    ops = [o for o in operations(site.schema) if o[1] != "/api/p/{project_id}/uploads"
           and o[1] != "/api/assignments" or o[0] == "GET"]
    request = draw_request(data, site.schema, ops, lambda name: hostile_ids(site, name))
    before = everything(site)
    response = await request.send(site.client("alice"))
    assert not leaks(site, response.text), (request.method, request.url)
    assert everything(site) == before or request.url.endswith("/handins")
