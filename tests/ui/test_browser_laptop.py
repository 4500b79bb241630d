"""A class project's editor on a 1280×800 laptop: whatever the project is called, every control of the
header is on screen and on one row, for a student, for the teacher (who has Publish too) and for the
teacher reading a student's project (the read-only note takes room as well). A long title is cut, and
whole in its tooltip."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from nodeflow.users import Accounts
from tests.reliability.classroom_site import quick_graph
from tests.ui.classroom_server import CHEAP
from tests.ui.conftest import Server

pytestmark = pytest.mark.browser
LAPTOP = {"width": 1280, "height": 800}
ROOT = Path(__file__).resolve().parents[2]


#: the tests hold whatever other modules ran on the process's shared test-pack editor (conftest's pack_server)
SHARES_PACK_SERVER = True


def longest_template_title() -> str:
    return max((json.loads(p.read_text())["name"] for p in (ROOT / "templates").glob("*.json")), key=len)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("laptop") / "root"
    accounts = Accounts(root, hasher=CHEAP)
    accounts.add("teacher", "teacher-password", admin=True)
    accounts.add("alice", "alice-password")
    tokens = {name: accounts.create_token(name, "laptop")[1] for name in ("teacher", "alice")}
    accounts.close()
    server = Server(root, command=(sys.executable, "-m", "tests.ui.classroom_server"))
    projects = {}
    for name, token in tokens.items():
        with httpx.Client(base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {token}"}) as api:
            made = api.post("/api/projects", json={"title": longest_template_title()}).json()["id"]
            api.put(f"/api/p/{made}/graph", json=quick_graph().model_dump(mode="json")).raise_for_status()
            projects[name] = made
    server.projects = projects
    yield server
    server.stop()


def header_out_of_view(tab) -> list[str]:
    """The header's controls (buttons, links) not wholly inside the viewport or below its one row."""
    header = tab.locator(".nf-header").bounding_box()
    boxes = tab.locator(".nf-header .q-btn, .nf-header a").evaluate_all(
        "els => els.filter(e => e.offsetParent !== null).map(e => {const r = e.getBoundingClientRect(); "
        "return [e.innerText.trim() || e.getAttribute('aria-label'), r.left, r.right, r.top, r.bottom]})")
    assert boxes
    outside = [f"{name} ends at {right:.0f}" for name, left, right, *_ in boxes if left < 0 or right > LAPTOP["width"]]
    outside += [f"{name} below the header's row" for name, _, _, top, bottom in boxes
                if top < header["y"] - 1 or bottom > header["y"] + header["height"] + 1]
    return outside


@pytest.mark.parametrize("who,whose", [("alice", "alice"), ("teacher", "teacher"), ("teacher", "alice")])
def test_every_header_control_is_on_a_laptop_screen_whatever_the_title(browser, site, who, whose):
    context = browser.new_context(viewport=LAPTOP)
    tab = context.new_page()
    try:
        tab.goto(site.url + "/login")
        tab.get_by_label("Name").fill(who)
        tab.get_by_label("Password").fill(f"{who}-password")
        tab.get_by_role("button", name="Sign in").click()
        expect(tab.locator(".nf-user")).to_contain_text(who)
        tab.goto(f"{site.url}/p/{site.projects[whose]}")
        tab.wait_for_selector(".vue-flow__node")
        if who != whose:
            expect(tab.locator(".nf-read-only")).to_be_visible()
        assert header_out_of_view(tab) == []
        for control in ("Run all", "Runs", "Validate") if who == whose else ("Runs", "Validate"):
            expect(tab.get_by_role("button", name=control)).to_be_in_viewport(ratio=1)
        title = tab.locator(".nf-project-title")
        assert title.get_attribute("title") == longest_template_title()  # cut on screen, whole in its tooltip
        assert tab.locator(".nf-header").bounding_box()["height"] < 70  # one row (two are over 90 px)
    finally:
        context.close()


def test_the_one_person_editors_header_is_on_a_laptop_screen_with_the_longest_title(browser, pack_server):
    from .conftest import editor_tab
    from .server import demo_graph

    named = demo_graph().model_copy(update={"name": longest_template_title()})
    pack_server.api("POST", "/api/stop")
    assert pack_server.api("PUT", "/api/graph", json=named.model_dump(mode="json")).status_code == 200
    with editor_tab(browser, pack_server, "desc", width=LAPTOP["width"], height=LAPTOP["height"]) as tab:
        assert header_out_of_view(tab) == []
        assert tab.locator(".nf-file").get_attribute("title").startswith(longest_template_title())
