"""The right to an open page ends at once, on the real server (``serve --users``, the test pack) in
headless Chromium and through raw sockets: signing out (in another tab, or a ``POST /logout`` with the
same cookie), the account removed by ``nodeflow users remove`` in another process, or the project
no longer shared. The page is sent to the sign-in page (or the project list), its socket is cut
within a second, and a click it sends after that runs nothing and writes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
import time
import uuid

import httpx
import pytest
from playwright.sync_api import expect

from nodeflow.users import Accounts
from tests.ui.classroom_server import CHEAP

from .conftest import Server
from .test_browser_classroom import attaches, click_of, page_of, run_async

pytestmark = pytest.mark.browser
NAMES = ("alice", "dora", "erin", "owner", "viewer")
TINY = {"format": "nodeflow.graph", "version": 1, "name": "tiny", "edges": [],
        "nodes": [{"id": "c", "type": "test.constant", "params": {"value": 3}, "position": {"x": 0, "y": 0}}]}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("revocation") / "root"
    accounts = Accounts(root, hasher=CHEAP)
    for name in NAMES:
        accounts.add(name, f"{name}-password")
    server = Server(root, "--in-process", command=(sys.executable, "-m", "tests.ui.classroom_server"))
    server.root, server.accounts = root, accounts
    yield server
    server.stop()
    accounts.close()


def project_of(site, name: str) -> str:
    """A new project of ``name``'s holding the tiny graph as a saved file (nothing unsaved, so
    nothing of the project is written unless someone does something)."""
    with httpx.Client(base_url=site.url, timeout=30) as client:
        client.post("/login", data={"name": name, "password": f"{name}-password"})
        project = client.post("/api/projects", json={"title": "work"}).json()["id"]
    (site.root / "users" / name / "projects" / project / "graphs" / "tiny.json").write_text(json.dumps(TINY))
    return project


async def users_command(site, *args: str, password: str | None = None) -> str:
    """``nodeflow users ...`` in a process of its own, as an admin runs it beside the server."""
    command = [sys.executable, "-c", "import sys; from nodeflow.cli import main; sys.exit(main())", "users", *args,
               "--workspace", str(site.root)]
    done = await asyncio.to_thread(subprocess.run, command, input=password, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def runs_of(site, name: str, project: str) -> list[dict]:
    _, token = site.accounts.create_token(name, f"check {time.monotonic()}")
    return httpx.get(f"{site.url}/api/p/{project}/runs", headers={"Authorization": f"Bearer {token}"}).json()


def signed_in_tab(browser, site, name: str, path: str):
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    tab = context.new_page()
    tab.goto(site.url + path)
    tab.get_by_label("Name").fill(name)
    tab.get_by_label("Password").fill(f"{name}-password")
    tab.get_by_role("button", name="Sign in").click()
    tab.wait_for_url(site.url + path, wait_until="commit")
    tab.wait_for_function("window.did_handshake === true")  # its socket is there to be cut
    return context, tab


def with_cookies(cookies: dict[str, str]) -> dict[str, str]:
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}


async def connect(socket, site, headers: dict[str, str], client_id: str) -> None:
    """Attach ``socket`` to page ``client_id`` as the page's script does, signed in by ``headers``."""
    query = f"client_id={client_id}&implicit_handshake=true&tab_id=tab-{client_id}&document_id={uuid.uuid4()}" \
            "&next_message_id=0"
    await socket.connect(f"{site.url}?{query}", socketio_path="/_nicegui_ws/socket.io", transports=["websocket"],
                         headers=headers, wait_timeout=10)


@contextlib.asynccontextmanager
async def attached(site, headers: dict[str, str], client_id: str):
    """A socket.io client attached to page ``client_id``, on an HTTP session of its own (closed
    here: the server, not the client, ends these sockets)."""
    import aiohttp
    import socketio

    async with aiohttp.ClientSession() as http:
        socket = socketio.AsyncClient(reconnection=False, http_session=http)
        await connect(socket, site, headers, client_id)
        try:
            yield socket
        finally:
            await socket.disconnect()


async def refusal(site, headers: dict[str, str], client_id: str) -> str | None:
    """What the server says to a socket that comes for page ``client_id`` (None: it attached)."""
    import aiohttp
    import socketio

    said: list = []
    async with aiohttp.ClientSession() as http:
        socket = socketio.AsyncClient(reconnection=False, http_session=http)
        socket.on("connect_error", lambda data: said.append(data))
        try:
            await connect(socket, site, headers, client_id)
        except socketio.exceptions.ConnectionError:
            return said[0]["message"] if said else "refused before socket.io"
        await socket.disconnect()
        return None


async def cut_off(site, headers: dict[str, str], editor: str, click: dict, revoke) -> tuple[float, list[str]]:
    """Attach to ``editor`` as its browser would, click once (it runs), ``revoke()`` and click
    again at once. Returns the seconds from the revocation to the socket being cut, and where the
    page was sent."""
    async with attached(site, headers, editor) as socket:
        cut, sent, when = asyncio.Event(), [], []
        socket.on("disconnect", lambda *reason: (when.append(time.monotonic()), cut.set()))
        socket.on("open", lambda message: sent.append(message["path"]))
        await socket.call("event", click, timeout=20)
        await revoke()
        revoked = time.monotonic()
        with contextlib.suppress(Exception):  # refused, or the socket is cut already
            await socket.emit("event", click)
        await asyncio.wait_for(cut.wait(), 10)
        return when[0] - revoked, sent


def test_signing_out_cuts_the_open_socket_within_a_second_and_its_next_click_runs_nothing(site):
    project = project_of(site, "alice")
    cookies, editor, html = page_of(site, "alice", f"/p/{project}")
    run_all = click_of(html, editor, "Run all")

    async def sign_out() -> None:
        async with httpx.AsyncClient(base_url=site.url, cookies=cookies) as client:
            assert (await client.post("/logout")).status_code == 303

    seconds, sent = run_async(cut_off(site, with_cookies(cookies), editor, run_all, sign_out))
    assert seconds < 1.0
    assert sent == [f"/login?next=%2Fp%2F{project}"]
    assert len(runs_of(site, "alice", project)) == 1  # the click before signing out only
    assert not attaches(site, cookies, editor)


def test_signing_out_in_another_tab_sends_the_editor_to_the_sign_in_form(browser, site):
    project = project_of(site, "alice")
    context, editor = signed_in_tab(browser, site, "alice", f"/p/{project}")
    try:
        editor.wait_for_selector('.vue-flow__node[data-id="c"]')
        other = context.new_page()
        other.goto(site.url + "/")
        other.locator(".nf-sign-out").click()
        other.wait_for_url(re.compile(r".*/login(\?next=%2F)?$"), wait_until="commit")  # the form, or the watcher
        expect(editor).to_have_url(f"{site.url}/login?next=%2Fp%2F{project}", timeout=3000)
        editor.get_by_role("button", name="Sign in").wait_for()
        assert runs_of(site, "alice", project) == []
    finally:
        context.close()


def test_a_user_removed_by_another_process_loses_the_open_page_and_nothing_is_written_for_them(browser, site):
    project = project_of(site, "dora")
    context, tab = signed_in_tab(browser, site, "dora", f"/p/{project}")
    try:
        tab.wait_for_selector('.vue-flow__node[data-id="c"]')
        cookies, editor, html = page_of(site, "dora", f"/p/{project}")
        run_all = click_of(html, editor, "Run all")
        folder = site.root / "users" / "dora"

        async def remove() -> None:
            assert "removed dora" in await users_command(site, "remove", "dora")
            assert not folder.exists()  # moved aside, with the run the first click made

        seconds, sent = run_async(cut_off(site, with_cookies(cookies), editor, run_all, remove))
        assert seconds < 1.0 and sent == [f"/login?next=%2Fp%2F{project}"]
        expect(tab).to_have_url(f"{site.url}/login?next=%2Fp%2F{project}", timeout=3000)
        assert not folder.exists(), sorted(str(p) for p in folder.rglob("*"))
        assert len(list((site.root / "removed").glob("dora-*/projects/*/runs.sqlite"))) == 1
    finally:
        context.close()


def test_a_new_password_set_by_another_process_cuts_the_open_socket(site):
    project = project_of(site, "erin")
    cookies, editor, html = page_of(site, "erin", f"/p/{project}")
    run_all = click_of(html, editor, "Run all")

    async def new_password() -> None:
        assert "their sign-ins have ended" in await users_command(site, "passwd", "erin",
                                                                  password="a-new-password\n")

    seconds, sent = run_async(cut_off(site, with_cookies(cookies), editor, run_all, new_password))
    assert seconds < 1.0 and sent == [f"/login?next=%2Fp%2F{project}"]
    assert len(runs_of(site, "erin", project)) == 1


def test_revoking_an_api_token_cuts_the_page_and_the_socket_it_opened(site):
    project = project_of(site, "alice")
    info, token = site.accounts.create_token("alice", "a script that drives the page")
    bearer = {"Authorization": f"Bearer {token}"}
    html = httpx.get(f"{site.url}/p/{project}", headers=bearer, timeout=30).text
    editor = re.search(r"client_id['\"]:\s*['\"]([0-9a-f-]{36})", html).group(1)
    run_all = click_of(html, editor, "Run all")

    async def revoke() -> None:
        async with httpx.AsyncClient(base_url=site.url, headers=bearer) as client:
            assert (await client.delete(f"/api/tokens/{info.id}")).status_code == 200

    seconds, sent = run_async(cut_off(site, bearer, editor, run_all, revoke))
    assert seconds < 1.0 and sent == [f"/login?next=%2Fp%2F{project}"]
    assert len(runs_of(site, "alice", project)) == 1


def test_a_viewer_whose_share_ends_is_sent_back_to_the_project_list(browser, site):
    project = project_of(site, "owner")
    owner = httpx.Client(base_url=site.url, timeout=30)
    owner.post("/login", data={"name": "owner", "password": "owner-password"})
    assert owner.post(f"/api/projects/{project}/shares", json={"user": "viewer"}).status_code == 200
    context, tab = signed_in_tab(browser, site, "viewer", f"/p/{project}")
    try:
        expect(tab.locator(".nf-read-only")).to_contain_text("owner's project, shared with you")
        assert owner.delete(f"/api/projects/{project}/shares/viewer").status_code == 200
        expect(tab).to_have_url(site.url + "/", timeout=3000)
        expect(tab.locator(".nf-shared")).to_have_text("Nothing shared with you.")
        assert tab.goto(f"{site.url}/p/{project}").status == 404
    finally:
        context.close()
        owner.close()


def test_a_page_closed_before_its_socket_came_is_told_to_reload_through_the_gate(site):
    """NiceGUI's script reloads a page on these words; the reload finds the project gone."""
    project = project_of(site, "owner")
    owner = httpx.Client(base_url=site.url, timeout=30)
    owner.post("/login", data={"name": "owner", "password": "owner-password"})
    assert owner.post(f"/api/projects/{project}/shares", json={"user": "viewer"}).status_code == 200
    cookies, editor, _ = page_of(site, "viewer", f"/p/{project}")
    assert owner.delete(f"/api/projects/{project}/shares/viewer").status_code == 200
    assert run_async(refusal(site, with_cookies(cookies), editor)) == "Implicit handshake failed"
    with httpx.Client(base_url=site.url, timeout=30, cookies=cookies) as viewer:
        assert viewer.get(f"/p/{project}").status_code == 404
    owner.close()
