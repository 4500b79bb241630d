"""A class on one server, in headless Chromium through the real server (``serve --users`` with the
real catalogue): the teacher publishes the cats-vs-dogs template (shrunk to 32-pixel images, VGG16
without downloaded weights, one epoch per trainer), and two students, each in a browser context of
their own, sign in, open their copy, upload a zip of generated images, pick it in the dataset node's
folder picker, see the dataset doctor's findings, run the template to its evaluation (whether it learns
is tests/nodes/test_template.py's to show), and see only their own projects, runs and files. The teacher then opens a student's project read-only.

And the websocket attacked: a socket of one user cannot attach to, nor send events for, the page of
another."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import re
import sys
import uuid
import zipfile

import httpx
import pytest
from playwright.sync_api import expect

from nodeflow.templates import template_path
from nodeflow.users import Accounts
from tests.imagegen import make_image_set
from tests.ui.classroom_server import CHEAP
from tests.waiting import wait_for

from .conftest import TINY_TEMPLATE, Server, shot

pytestmark = pytest.mark.browser
VIEWPORT = {"width": 1500, "height": 920}
STUDENTS = ("alice", "bob")
#: the template at its smallest that still learns: what a class runs on its first day without a GPU
SMALL = {**TINY_TEMPLATE, "dataset": {"root": ""}, "dense": {"units": 8}}


@pytest.fixture(scope="module")
def classroom(tmp_path_factory):
    base = tmp_path_factory.mktemp("classroom")
    root = base / "root"
    accounts = Accounts(root, hasher=CHEAP)
    accounts.add("teacher", "teacher-password", admin=True)
    for name in STUDENTS:
        accounts.add(name, f"{name}-password")
    accounts.close()
    images = make_image_set(base / "pets", per_class=10, size=36, vary_size=True, class_names=("cat", "dog"))
    archive = base / "pets.zip"
    files = sorted(p for p in images.rglob("*") if p.is_file())
    with zipfile.ZipFile(archive, "w") as packed:  # as a person zips the folder: pets/train/cat/cat.0001.jpg
        for path in files:
            packed.write(path, f"pets/{path.relative_to(images)}")
    assert len(files) == 20 and sum(p.parent.name == "cat" for p in files) == 10
    server = Server(root, "--builtin", command=(sys.executable, "-m", "tests.ui.classroom_server"))
    server.root, server.archive, server.images = root, archive, images
    yield server
    server.stop()


def signed_in(browser, server, name: str):
    context = browser.new_context(viewport=VIEWPORT)
    tab = context.new_page()
    tab.problems = []
    tab.on("pageerror", lambda e: tab.problems.append(str(e)))
    tab.goto(server.url + "/")
    assert tab.url.startswith(server.url + "/login")  # the sign-in form before anything
    tab.get_by_label("Name").fill(name)
    tab.get_by_label("Password").fill(f"{name}-password")
    tab.get_by_role("button", name="Sign in").click()
    expect(tab.locator(".nf-user")).to_contain_text(name)
    return context, tab


def state(tab, node: str) -> str:
    return tab.locator(f'.vue-flow__node[data-id="{node}"] .nf-badge').get_attribute("data-state")


def publish_small_template(tab, server) -> None:
    """The teacher makes a project, puts the small template in it (as a script would, with the
    page's own sign-in) and publishes it from the editor."""
    tab.locator(".nf-new-title input").fill("Week 1")
    tab.get_by_role("button", name="Create").click()
    tab.wait_for_url(re.compile(r".*/p/[0-9a-f]{24}$"))
    project = tab.url.rsplit("/", 1)[1]
    graph = json.loads(template_path("cats_vs_dogs_finetune").read_text())
    for node in graph["nodes"]:
        node["params"].update(SMALL.get(node["id"], {}))
    graph["name"] = "Cats vs dogs, small"
    assert tab.request.put(f"{server.url}/api/p/{project}/graph", data=graph).status == 200
    tab.wait_for_selector('.vue-flow__node[data-id="evaluate"]')
    tab.get_by_role("button", name="Publish").click()
    dialog = tab.locator(".nf-publish")
    dialog.locator("input").fill("Cats vs dogs, small")
    dialog.get_by_role("button", name="Publish").click()
    expect(tab.get_by_text("Published 'Cats vs dogs, small'")).to_be_visible()


def open_copy_and_upload(tab, server, folder: bool) -> str:
    """From the project list: the class template's copy, then the images uploaded (the zip, or with
    ``folder`` the folder itself) and picked in the dataset node. Returns the project's id."""
    tab.goto(server.url + "/")
    row = tab.locator(".nf-template-row", has_text="Cats vs dogs, small")
    row.get_by_role("button", name="Open my copy").click()
    tab.wait_for_url(re.compile(r".*/p/[0-9a-f]{24}$"))
    tab.wait_for_selector('.vue-flow__node[data-id="evaluate"]')
    tab.locator(".nf-upload-button").click()
    with tab.expect_file_chooser() as chooser:
        tab.get_by_role("button", name="Choose a folder" if folder else "Choose a zip or images").click()
    chooser.value.set_files(str(server.images if folder else server.archive))
    status = tab.locator(".nf-upload-status")
    expect(tab.locator(".nf-upload-progress")).to_be_visible()
    expect(status).to_contain_text("Saved data/pets: 20 images", timeout=60_000)
    expect(status).to_contain_text("in 2 classes: cat 10, dog 10")
    expect(tab.locator(".nf-doctor-status")).to_have_text("The dataset doctor found:", timeout=60_000)
    lines = tab.locator(".nf-doctor-line").all_inner_texts()
    assert lines[0].startswith("class balance: cat 10 (50%), dog 10 (50%)"), lines
    assert "unreadable files: 0" in lines and "groups of exact duplicates: 0" in lines, lines
    tab.locator(".nf-upload").get_by_role("button", name="Close").click()
    # the new folder, picked at once in the dataset node's folder picker
    tab.locator('.vue-flow__node[data-id="dataset"] .nf-title').click()
    tab.locator('.nf-field[data-param="root"] .nf-pick-folder').click()
    picker = tab.locator(".nf-folder-picker")
    picker.locator(".nf-folder", has_text="data").click()
    expect(picker.locator(".nf-folder-title")).to_have_text(re.compile(r"workspace \(.*\) / data$"))
    assert picker.locator(".nf-folder").all_inner_texts() == ["pets"]  # their own upload, no one else's
    picker.locator(".nf-folder", has_text="pets").click()
    picker.get_by_text("Choose this folder").click()
    project = tab.url.rsplit("/", 1)[1]
    # stored relative to the project, whatever folder the server was started from
    tab.wait_for_function("(p) => document.querySelector('.nf-field[data-param=\"root\"] input').value === p",
                          arg="data/pets")
    return project


@pytest.mark.slow
def test_two_students_and_a_teacher(browser, classroom):
    teacher_context, teacher = signed_in(browser, classroom, "teacher")
    contexts, tabs, projects = [teacher_context], {}, {}
    try:
        publish_small_template(teacher, classroom)
        for name in STUDENTS:
            context, tabs[name] = signed_in(browser, classroom, name)
            contexts.append(context)
            projects[name] = open_copy_and_upload(tabs[name], classroom, folder=name == "bob")
        shot(tabs["alice"], "classroom-editor-uploaded")
        for name in STUDENTS:  # alice first: bob's run waits its turn on the one machine
            tabs[name].get_by_role("button", name="Run all").click()
        expect(tabs["bob"].locator('.vue-flow__node[data-id="evaluate"] .nf-badge')).to_have_attribute(
            "data-state", "queued")
        for name in STUDENTS:
            tabs[name].wait_for_selector('.vue-flow__node[data-id="evaluate"] .nf-badge[data-state="done"]',
                                         timeout=240_000)
            assert state(tabs[name], "train_finetuned") == "done"
            tabs[name].locator('.vue-flow__node[data-id="evaluate"] .nf-title').click()
            tabs[name].get_by_role("tab", name="Output").click()
            expect(tabs[name].locator(".nf-output")).to_contain_text("accuracy")  # its test-split figures
        shot(tabs["bob"], "classroom-editor-trained")

        for name, other in (("alice", "bob"), ("bob", "alice")):
            tab = tabs[name]
            tab.goto(classroom.url + "/")
            listed = tab.locator(".nf-mine .nf-project").all_inner_texts()
            assert len(listed) == 1 and "Cats vs dogs, small" in listed[0]  # their own copy only
            assert tab.locator(".nf-shared").inner_text() == "Nothing shared with you."
            assert tab.locator(".nf-everyone").count() == 0  # only an admin sees everyone's
            # another person's project by its address: not there, as a made-up one
            response = tab.goto(f"{classroom.url}/p/{projects[other]}")
            assert response.status == 404 and "no project" in tab.locator("[role=alert]").inner_text()
            runs = tab.request.get(f"{classroom.url}/api/p/{projects[name]}/runs").json()
            assert [r["status"] for r in runs] == ["done"]
            assert tab.request.get(f"{classroom.url}/api/p/{projects[other]}/runs").status == 404
            data = tab.request.get(f"{classroom.url}/api/p/{projects[name]}/data").json()
            assert [d["name"] for d in data] == ["pets"]

        # the teacher opens alice's project read-only: the graph, its states and runs, no controls
        teacher.goto(classroom.url + "/")
        everyone = teacher.locator(".nf-everyone .nf-project")
        assert everyone.count() == 3
        everyone.filter(has_text="alice").get_by_role("link").click()
        teacher.wait_for_selector('.vue-flow__node[data-id="evaluate"] .nf-badge[data-state="done"]')
        expect(teacher.locator(".nf-read-only")).to_have_text("Read-only: alice's project, open to you as an admin")
        for control in ("Run all", "Run selected", "Stop", "Upload data"):
            assert teacher.get_by_role("button", name=control).count() == 0 or \
                not teacher.get_by_role("button", name=control).is_visible()
        teacher.locator('.vue-flow__node[data-id="train"] .nf-title').click()
        epochs = teacher.locator('.nf-field[data-param="epochs"]')
        epochs.locator("input").fill("5")
        epochs.locator("input").press("Tab")
        expect(epochs.locator(".nf-field-error")).to_contain_text("Refused: read-only: alice's project")
        teacher.get_by_role("button", name="Runs").click()
        expect(teacher.locator(".q-table tbody tr")).to_have_count(1)
        shot(teacher, "classroom-teacher-read-only")
        refused = teacher.request.post(f"{classroom.url}/api/p/{projects['alice']}/run", data={})
        assert refused.status == 403 and "read-only" in refused.text()
        for tab in [teacher, *tabs.values()]:
            assert not tab.problems, tab.problems
    finally:
        for context in contexts:
            context.close()


def test_a_zip_dropped_anywhere_on_the_editor_is_uploaded_into_that_tabs_project(browser, classroom):
    context, other = signed_in(browser, classroom, "alice")
    try:
        projects = []
        for title in ("Elsewhere", "Dropped"):  # two tabs, two projects, open at once
            tab = other if not projects else context.new_page()
            tab.goto(classroom.url + "/")
            tab.locator(".nf-new-title input").fill(title)
            tab.get_by_role("button", name="Create").click()
            tab.wait_for_url(re.compile(r".*/p/[0-9a-f]{24}$"))
            tab.wait_for_selector(".vue-flow__pane")
            projects.append(tab.url.rsplit("/", 1)[1])
        tab.problems = []
        tab.on("pageerror", lambda e: tab.problems.append(str(e)))
        packed = list(classroom.archive.read_bytes())
        drop = tab.evaluate_handle("""(bytes) => {
            const data = new DataTransfer();
            data.items.add(new File([new Uint8Array(bytes)], "cats and dogs.zip", {type: "application/zip"}));
            return data; }""", packed)
        tab.locator(".vue-flow__pane").dispatch_event("dragover", {"dataTransfer": drop})
        tab.locator(".vue-flow__pane").dispatch_event("drop", {"dataTransfer": drop})
        expect(tab.locator(".nf-upload-status")).to_contain_text("Saved data/cats and dogs: 20 images", timeout=60_000)
        assert tab.locator(".vue-flow__node").count() == 0  # the canvas took nothing from the drop
        data = [tab.request.get(f"{classroom.url}/api/p/{p}/data").json() for p in projects]
        assert data[0] == [] and [d["name"] for d in data[1]] == ["cats and dogs"]  # this tab's project only
        expect(other.locator(".nf-project-title")).to_have_text("Elsewhere")  # the other tab is its own still
        assert not tab.problems and not other.problems, (tab.problems, other.problems)
    finally:
        context.close()


# -- the websocket ----------------------------------------------------------------------------------------


def page_of(server, name: str, path: str = "/") -> tuple[dict[str, str], str, str]:
    """``name``'s cookie, and the client id and HTML of a page built for them."""
    client = httpx.Client(base_url=server.url, timeout=30)
    client.post("/login", data={"name": name, "password": f"{name}-password", "next": path})
    html = client.get(path).text
    found = re.search(r"client_id['\"]:\s*['\"]([0-9a-f-]{36})", html)
    assert found, html[:2000]
    return dict(client.cookies), found.group(1), html


def click_of(html: str, client_id: str, label: str) -> dict:
    """The event a browser sends when the button showing ``label`` on that page is clicked."""
    found = re.search(r'"(\d+)":\{"tag":"q-btn"(?:(?!"tag").)*?"label":"%s"(?:(?!"tag").)*?"listener_id":"([0-9a-f-]{36})"'
                      % re.escape(label), html)
    assert found, f"no button '{label}' on the page"
    return {"id": int(found.group(1)), "client_id": client_id, "listener_id": found.group(2), "args": []}


@contextlib.asynccontextmanager
async def attached(server, cookies: dict[str, str], client_id: str):
    """A socket.io client signed in with ``cookies``, attached to page ``client_id`` as a browser's is
    (ConnectionError when the server refuses it)."""
    import socketio

    sio = socketio.AsyncClient(reconnection=False)
    # a browser tab keeps its tab id for the page's whole life
    query = f"client_id={client_id}&implicit_handshake=true&tab_id=tab-{client_id}&document_id={uuid.uuid4()}" \
            "&next_message_id=0"
    await sio.connect(f"{server.url}?{query}", socketio_path="/_nicegui_ws/socket.io", transports=["websocket"],
                      headers={"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}, wait_timeout=10)
    try:
        yield sio
    finally:
        await sio.disconnect()


def run_async(coroutine):
    """``asyncio.run`` on a thread of its own: this one keeps Playwright's loop (the browser fixture)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result(timeout=120)


def attaches(server, cookies: dict[str, str], client_id: str) -> bool:
    import socketio

    async def attempt() -> bool:
        try:
            async with attached(server, cookies, client_id):
                return True
        except socketio.exceptions.ConnectionError:
            return False

    return run_async(attempt())


def test_a_socket_cannot_attach_to_or_drive_another_users_page(classroom):
    bob_cookies, bob_home, _ = page_of(classroom, "bob")
    alice_cookies, alice_home, _ = page_of(classroom, "alice")
    assert not attaches(classroom, alice_cookies, bob_home)  # bob's page: refused
    assert attaches(classroom, alice_cookies, alice_home)  # her own: attached
    assert not attaches(classroom, {}, bob_home)  # and without signing in, no socket at all
    bob = httpx.Client(base_url=classroom.url, timeout=30, cookies=bob_cookies)
    project = bob.post("/api/projects", json={"title": "bob's target"}).json()["id"]
    tiny = {"format": "nodeflow.graph", "version": 1, "name": "tiny", "edges": [],
            "nodes": [{"id": "input", "type": "model.input", "params": {"height": 8, "width": 8, "channels": 3}}]}
    assert bob.put(f"/api/p/{project}/graph", json=tiny).status_code == 200
    bob_cookies, editor, html = page_of(classroom, "bob", f"/p/{project}")
    run_all = click_of(html, editor, "Run all")

    async def clicks() -> None:
        async with attached(classroom, bob_cookies, editor) as bobs:  # bob has his editor open
            async with attached(classroom, alice_cookies, alice_home) as alices:
                await alices.call("event", run_all, timeout=20)  # a click on bob's Run all, from alice: dropped
            await bobs.call("event", run_all, timeout=20)  # the same click from bob's own page: it runs

    run_async(clicks())
    assert wait_for(lambda: bob.get(f"/api/p/{project}/runs").json() != [], timeout=30)
    assert len(bob.get(f"/api/p/{project}/runs").json()) == 1  # bob's click only
