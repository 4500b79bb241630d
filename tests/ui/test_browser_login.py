"""The sign-in form as a person meets it, in headless Chromium against a real server on loopback."""

from __future__ import annotations

import threading

import pytest
import uvicorn
from argon2 import PasswordHasher
from fastapi import Depends, FastAPI
from fastapi.responses import HTMLResponse

from nodeflow.users import Accounts, User
from nodeflow.users.login import current_user, install_login
from tests.waiting import wait_for

from .conftest import free_port, shot

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A server with sign-in on and one page that greets whoever signed in."""
    accounts = Accounts(tmp_path_factory.mktemp("class"), hasher=PasswordHasher(time_cost=1, memory_cost=8,
                                                                                 parallelism=1))
    accounts.add("alice", "alice-pass")
    app = FastAPI()
    install_login(app, accounts)

    @app.get("/projects")
    def projects(user: User = Depends(current_user)):
        return HTMLResponse(f"<h1>Projects of {user.name}</h1>"
                            '<form method="post" action="/logout"><button>Sign out</button></form>')

    # proxy_headers off, as serve_users: the address the sign-in limits count is the peer's
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning",
                                           proxy_headers=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_for(lambda: server.started, timeout=30), "the server did not start"
    yield f"http://127.0.0.1:{server.config.port}"
    server.should_exit = True
    thread.join(10)


def test_signing_in_through_the_form(browser, site):
    context = browser.new_context(viewport={"width": 800, "height": 600})
    tab = context.new_page()
    try:
        tab.goto(site + "/projects")
        assert tab.url == site + "/login?next=%2Fprojects"  # sent to the form, and back afterwards
        tab.get_by_label("Name").fill("alice")
        tab.get_by_label("Password").fill("wrong-password")
        tab.get_by_role("button", name="Sign in").click()
        tab.get_by_role("alert").wait_for()
        assert tab.get_by_role("alert").inner_text() == "Wrong name or password."
        assert tab.get_by_label("Name").input_value() == "alice" and tab.get_by_label("Password").input_value() == ""
        shot(tab, "login-form-refused")

        tab.get_by_label("Name").fill("Alice ")  # typed as people type it
        tab.get_by_label("Password").fill("alice-pass")
        tab.get_by_role("button", name="Sign in").click()
        tab.get_by_role("heading", name="Projects of alice").wait_for()
        assert tab.url == site + "/projects"
        assert "nodeflow_session" not in tab.evaluate("document.cookie")  # HttpOnly: no script can read it
        cookie = next(c for c in context.cookies() if c["name"] == "nodeflow_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

        tab.get_by_role("button", name="Sign out").click()
        tab.get_by_role("button", name="Sign in").wait_for()
        tab.goto(site + "/projects")
        assert tab.url.startswith(site + "/login")
    finally:
        context.close()
