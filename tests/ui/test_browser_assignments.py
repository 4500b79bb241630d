"""A class competition in headless Chromium through the real server (``serve --users`` with the real
catalogue): the teacher sets an assignment with a hidden test set, two students train a small network
each in their own project and hand it in, the server scores both on the hidden set, and the
leaderboard page shows both students with their 95% intervals, each student's own row highlighted on
her page only. (The students train and hand in through the API, as a script of theirs would; the
board is what the browser shows.)"""

from __future__ import annotations

import io
import sys
import zipfile

import httpx
import pytest
from playwright.sync_api import expect

from nodeflow.users import Accounts
from tests.imagegen import make_image_set
from tests.nodes.graphs import classifier_graph
from tests.ui.classroom_server import CHEAP
from tests.waiting import wait_for

from .conftest import Server, shot

pytestmark = pytest.mark.browser
VIEWPORT = {"width": 1300, "height": 900}
STUDENTS = ("alice", "bob")


def zipped(folder, prefix: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*.jpg")):
            archive.write(path, prefix + path.relative_to(folder).as_posix())
    return buffer.getvalue()


@pytest.fixture(scope="module")
def competition(tmp_path_factory):
    base = tmp_path_factory.mktemp("competition")
    root = base / "root"
    accounts = Accounts(root, hasher=CHEAP)
    tokens = {}
    for name in ("teacher", *STUDENTS):
        accounts.add(name, f"{name}-password", admin=name == "teacher")
        tokens[name] = accounts.create_token(name, "tests")[1]
    accounts.close()
    server = Server(root, "--builtin", "--in-process", command=(sys.executable, "-m", "tests.ui.classroom_server"))
    server.tokens = tokens
    server.hidden = zipped(make_image_set(base / "hidden", per_class=12, size=32, layout="folder", seed=7,
                                          class_names=("cat", "dog")))
    server.training = zipped(make_image_set(base / "shapes", per_class=16, size=32, class_names=("cat", "dog")),
                             "shapes/")
    yield server
    server.stop()


def call(server, who: str, method: str, path: str, **kw) -> httpx.Response:
    return httpx.request(method, server.url + path, timeout=120,
                         headers={"Authorization": f"Bearer {server.tokens[who]}"}, **kw)


def shapes_project(server, who: str, lr: float) -> str:
    """A new project of ``who`` with the training shapes uploaded and a small classifier, not run yet."""
    project = call(server, who, "POST", "/api/projects", json={"title": f"{who}'s shapes"}).json()["id"]
    upload = call(server, who, "POST", f"/api/p/{project}/uploads", params={"name": "shapes"},
                  files={"files": ("shapes.zip", server.training, "application/zip")})
    assert upload.status_code == 200, upload.text
    graph = classifier_graph("data/shapes", epochs=1, lr=lr).model_dump(mode="json")
    for place, node in enumerate(graph["nodes"]):  # apart on the canvas, each card clickable
        node["position"] = {"x": 260 * (place % 4), "y": 200 * (place // 4)}
    assert call(server, who, "PUT", f"/api/p/{project}/graph", json=graph).status_code == 200
    return project


def train(server, who: str, project: str) -> None:
    assert call(server, who, "POST", f"/api/p/{project}/run", json={"target": "train"}).status_code == 200
    assert wait_for(lambda: all(r["status"] not in ("queued", "running")
                                for r in call(server, who, "GET", f"/api/p/{project}/runs").json()), timeout=400)
    assert call(server, who, "GET", f"/api/p/{project}/runs").json()[0]["status"] == "done"


def set_assignment(server, title: str, per_day: int) -> str:
    """The teacher sets an assignment on the hidden set; its id."""
    made = call(server, "teacher", "POST", "/api/assignments", data={"title": title, "handins_per_day": str(per_day)},
                files={"test": ("hidden.zip", server.hidden, "application/zip")})
    assert made.status_code == 200, made.text
    return made.json()["id"]


@pytest.fixture(scope="module")
def trained(competition) -> dict[str, str]:
    """Each student's shapes project, trained once for the module (a trained model may be handed in to
    any number of assignments): alice's at lr 3e-3, bob's at 1e-3."""
    projects = {}
    for who, lr in zip(STUDENTS, (3e-3, 1e-3)):
        projects[who] = shapes_project(competition, who, lr)
        train(competition, who, projects[who])
    return projects


def hand_in(server, who: str, assignment: str, project: str) -> int:
    handed = call(server, who, "POST", f"/api/assignments/{assignment}/handins",
                  json={"project": project, "node": "train"})
    assert handed.status_code == 200, handed.text
    return handed.json()["id"]


def colours(png: bytes) -> dict[str, int]:
    """How many pixels of the plot are drawn in the own rows' colour (amber) and in the others' (blue)."""
    import numpy as np
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    own = (r > 220) & (g > 140) & (g < 200) & (b < 90)
    others = (b > 150) & (r < 120)
    return {"own": int(own.sum()), "others": int(others.sum())}


def signed_in(browser, server, name: str):
    context = browser.new_context(viewport=VIEWPORT)
    tab = context.new_page()
    tab.goto(server.url + "/")
    tab.get_by_label("Name").fill(name)
    tab.get_by_label("Password").fill(f"{name}-password")
    tab.get_by_role("button", name="Sign in").click()
    expect(tab.locator(".nf-user")).to_contain_text(name)
    return context, tab


def test_two_students_hand_in_and_each_sees_the_board_with_her_own_rows_highlighted(browser, competition, trained):
    server = competition
    assignment = set_assignment(server, "Shapes challenge", 3)
    handins = {who: hand_in(server, who, assignment, trained[who]) for who in STUDENTS}

    def scored() -> bool:
        found = call(server, "teacher", "GET", f"/api/assignments/{assignment}/handins").json()
        return len(found) == 2 and all(h["status"] in ("scored", "failed") for h in found)
    assert wait_for(scored, timeout=400)
    found = call(server, "teacher", "GET", f"/api/assignments/{assignment}/handins").json()
    assert [h["status"] for h in found] == ["scored", "scored"], found

    for who in STUDENTS:
        context, tab = signed_in(browser, server, who)
        tab.goto(f"{server.url}/assignments/{assignment}")
        expect(tab.get_by_role("heading", name="Shapes challenge")).to_be_visible()
        expect(tab.locator(".nf-board-half")).to_contain_text("public half of the hidden test set: 12 images")
        rows = tab.locator(".nf-board-row")
        expect(rows).to_have_count(2)
        expect(rows.filter(has_text="alice")).to_have_count(1)
        expect(rows.filter(has_text="bob")).to_have_count(1)
        mine = tab.locator(".nf-mine")
        expect(mine).to_have_count(1)
        expect(mine).to_contain_text(who)
        expect(mine).to_contain_text("…")  # the interval: low … high
        other = "bob" if who == "alice" else "alice"
        expect(rows.filter(has_text=other)).not_to_have_class("nf-mine")
        canvas = tab.locator(".nf-board-plot canvas").first
        expect(canvas).to_be_visible()
        drawn = colours(canvas.screenshot())
        assert drawn["own"] > 30 and drawn["others"] > 30, drawn  # her interval highlighted, the other's plain
        shot(tab, f"assignment-board-{who}")
        context.close()
    board = call(server, "alice", "GET", f"/api/assignments/{assignment}/leaderboard").json()
    assert {r["user"] for r in board["rows"]} == set(STUDENTS)
    for row in board["rows"]:
        assert row["ci_low"] <= row["accuracy"] <= row["ci_high"] and row["handin"] in handins.values()


def pick_assignment(tab, server, project: str, assignment: str, title: str) -> None:
    """The editor of ``project`` open, its trainer picked and ``title`` chosen in its hand-in box."""
    tab.goto(f"{server.url}/p/{project}")
    tab.locator('.vue-flow__node[data-id="input"] .nf-title').click()
    expect(tab.locator(".nf-inspector-title")).to_be_visible()
    expect(tab.locator(".nf-handin")).to_have_count(0)  # not a trained-model node: nothing to hand in
    tab.locator('.vue-flow__node[data-id="train"] .nf-title').click()
    expect(tab.locator(".nf-handin-button")).to_be_visible()
    tab.locator(".nf-handin-assignment").click()
    tab.get_by_role("option", name=title).click()
    expect(tab.locator(".nf-handin-board")).to_have_attribute("href", f"/assignments/{assignment}")


def test_a_student_hands_in_from_the_editor_and_only_the_teacher_sees_each_confusion_matrix(browser, competition,
                                                                                           trained):
    server = competition
    assignment = set_assignment(server, "Editor hand-in", 1)
    untrained = shapes_project(server, "alice", 3e-3)

    context, tab = signed_in(browser, server, "alice")
    pick_assignment(tab, server, untrained, assignment, "Editor hand-in")
    tab.locator(".nf-handin-button").click()  # not trained yet: refused, nothing recorded
    expect(tab.locator(".nf-handin-refused")).to_contain_text("is not trained: run it, then hand it in")
    assert call(server, "alice", "GET", f"/api/assignments/{assignment}/handins").json() == []

    project = trained["alice"]  # the same graph, trained: handed in from its editor
    pick_assignment(tab, server, project, assignment, "Editor hand-in")
    tab.locator(".nf-handin-button").click()
    expect(tab.locator(".nf-handin-done")).to_contain_text("Handed in to 'Editor hand-in'")
    tab.locator(".nf-handin-button").click()  # one a day: the second is refused
    expect(tab.locator(".nf-handin-refused").last).to_contain_text("the most per day")
    shot(tab, "assignment-hand-in-from-editor")
    assert len(call(server, "alice", "GET", f"/api/assignments/{assignment}/handins").json()) == 1

    def scored() -> bool:
        found = call(server, "teacher", "GET", f"/api/assignments/{assignment}/handins").json()
        return len(found) == 1 and found[0]["status"] in ("scored", "failed")
    assert wait_for(scored, timeout=400)

    tab.goto(f"{server.url}/assignments/{assignment}")  # the student's board: no one's matrix, no graph
    expect(tab.locator(".nf-board-row")).to_have_count(1)
    expect(tab.locator(".nf-teacher-handins")).to_have_count(0)
    assert "onfusion" not in tab.content() and "train.trainer" not in tab.content()
    context.close()

    context, tab = signed_in(browser, server, "teacher")
    tab.goto(f"{server.url}/p/{project}")  # alice's project, read-only to the teacher: no hand-in
    tab.locator('.vue-flow__node[data-id="train"] .nf-title').click()
    expect(tab.locator(".nf-inspector-title")).to_be_visible()
    expect(tab.locator(".nf-read-only")).to_be_visible()
    expect(tab.locator(".nf-handin")).to_have_count(0)
    tab.goto(f"{server.url}/assignments/{assignment}")
    entry = tab.locator(".nf-teacher-handin").filter(has_text="alice")
    expect(entry).to_contain_text("scored")
    expect(entry).to_contain_text("public")
    expect(entry).to_contain_text("private")
    entry.click()
    matrix = entry.locator(".nf-confusion")
    expect(matrix).to_be_visible()
    expect(matrix).to_contain_text("cat")
    expect(matrix).to_contain_text("dog")
    cells = matrix.locator(".nf-confusion-cell")
    expect(cells).to_have_count(4)
    assert sum(int(t) for t in cells.all_inner_texts()) == 24  # every hidden image, once
    expect(entry.locator(".nf-handin-graph")).to_contain_text("train.trainer")
    shot(tab, "assignment-teacher-handins")
    context.close()
