"""Fixtures for the editor tests: an in-process simulated user (fast) and a real headless Chromium
driving a server subprocess (the drag-and-wire paths)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from nodeflow.session import Session

from .server import ROOT, demo_graph, pack_registry

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


# -- simulated user (nicegui.testing) --------------------------------------------------------------
@pytest.fixture
async def editor(workspace: Path, caplog: pytest.LogCaptureFixture):
    """(user, session, hub) with the editor page registered on a fresh NiceGUI app."""
    pytest.importorskip("nicegui")
    from nodeflow.ui.app import create_app
    from tests.simulation import app_simulation

    session = Session(pack_registry(), workspace, graph=demo_graph(), device="cpu")
    async with app_simulation() as user:
        hub = create_app(session)
        yield user, session, hub
    session.queue.stop()
    session.queue.wait(5)
    errors = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    assert not errors, f"unexpected ERROR logs: {[r.getMessage() for r in errors]}"


# -- real browser -----------------------------------------------------------------------------------
def chromium_path() -> str | None:
    candidates = [os.environ.get("NODEFLOW_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                  shutil.which("chromium-browser")]
    return next((c for c in candidates if c and Path(c).is_file()), None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``python -m tests.ui.server`` (or ``command``, e.g. ``nodeflow serve``, which takes the same
    ``--port`` and ``--workspace``) on a free port, with its own workspace."""

    def __init__(self, workspace: Path, *extra: str,
                 command: tuple[str, ...] = (sys.executable, "-m", "tests.ui.server"), cwd: Path = ROOT,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workspace = workspace
        self.log = workspace.parent / f"server-{self.port}.log"
        # without pytest's variables: NiceGUI would think it runs under its own screen fixture
        env = {k: v for k, v in (os.environ if env is None else env).items() if not k.startswith(("PYTEST", "NICEGUI"))}
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen([*command, "--port", str(self.port), "--workspace", str(workspace), *extra],
                                     cwd=cwd, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        # a server that imports torch on a busy machine, beside another test worker's, may take a minute or
        # more to answer; one that exits fails at once
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"editor server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/api/status", timeout=2).status_code in (200, 401):
                    return  # 401: up, and asking for its token
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"editor server did not start: {self.log.read_text()[-3000:]}")

    def api(self, method: str, path: str, **kw):
        response = httpx.request(method, self.url + path, timeout=30, **kw)
        return response

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def browser():
    """Module-scoped: sync Playwright keeps a loop alive in this thread, which the async
    (simulated-user) tests in other modules must not find."""
    path = chromium_path()
    if path is None:
        message = "no chromium found (apt-get install chromium, or set NODEFLOW_CHROMIUM)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser tests: {message}")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def pack_server(request, tmp_path_factory):
    """The module's own test-pack editor, or, in a module that sets ``SHARES_PACK_SERVER = True`` (its
    tests hold whatever other modules ran on it), the process's shared one."""
    if getattr(request.module, "SHARES_PACK_SERVER", False):
        yield request.getfixturevalue("shared_pack_server")
        return
    server = Server(tmp_path_factory.mktemp("pack") / "workspace")
    yield server
    server.stop()


@contextlib.contextmanager
def editor_tab(browser, server: Server, drawn: str, height: int = 900, width: int = 1500, clipboard: bool = False,
               console: bool = False, downloads: bool = False):
    """A tab on ``server``'s editor once the card ``drawn`` (a node id) is on the canvas and the view
    fitted; an error in the page fails the test that used it, and so does, with ``console``, an error
    in the browser's console or a "not found" there (an edge anchor with no card). ``tab.requests``
    lists every address the tab asked for. ``clipboard``: the page may read and write the system
    clipboard (a person's browser asks once; headless Chromium needs it granted). ``downloads``: a
    download is kept for the test to read."""
    context = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=downloads)
    if clipboard:
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    tab = context.new_page()
    tab.problems, tab.requests = [], []
    tab.on("pageerror", lambda e: tab.problems.append(f"page error: {e}"))
    if console:
        tab.on("console", lambda m: tab.problems.append(f"console {m.type}: {m.text}")
               if m.type == "error" or "not found" in m.text else None)
    tab.on("request", lambda r: tab.requests.append(r.url))
    try:
        tab.goto(server.url + "/")
        tab.wait_for_selector(f'.vue-flow__node[data-id="{drawn}"]')
        wait_for_fit(tab)
        yield tab
        if console:
            tab.wait_for_timeout(300)  # a console error the test's last step causes is still the test's
    finally:
        context.close()
    assert not tab.problems, f"errors in the page: {tab.problems}"


@pytest.fixture
def page(browser, pack_server):
    """A tab on the test-pack server, with the demo graph restored and the canvas drawn."""
    pack_server.api("POST", "/api/stop")
    pack_server.api("PUT", "/api/graph", json=demo_graph().model_dump(mode="json"))
    with editor_tab(browser, pack_server, "desc") as tab:
        yield tab


def shot(tab, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    tab.screenshot(path=str(path))
    return path


def wait_for_fit(tab) -> None:
    """Until the canvas has fitted its view to the graph (it does once the cards are measured): what
    is measured or pictured after it is the view a person sees first."""
    tab.wait_for_function("() => Number(document.querySelector('.nf-canvas')?.dataset.fits) > 0")


def wait_until_still(tab, selector: str, frames: int = 6) -> None:
    """Until what ``selector`` matches has the same box for ``frames`` animation frames in a row: a
    drawer or tab panel that slides in has arrived."""
    tab.evaluate("window.__still = null")
    tab.wait_for_function("""([selector, frames]) => {
        const el = document.querySelector(selector);
        if (!el) return false;
        const box = JSON.stringify(el.getBoundingClientRect());
        window.__still = window.__still && window.__still.box === box
            ? { box, frames: window.__still.frames + 1 } : { box, frames: 0 };
        return window.__still.frames >= frames;
    }""", arg=[selector, frames], polling="raf")


# -- servers shared by every module of a test process ------------------------------------------------
# A server start imports torch and NiceGUI (seconds, more on a busy machine): the modules that reset
# the graph through the API before each test, and whose tests do not depend on what ran before them,
# share one server per process instead of starting one per module (``pack_server`` above stays the
# module's own: tests that say a run leaves a node done, not cached, need one nothing else ran on).
@pytest.fixture(scope="session")
def shared_pack_server(tmp_path_factory):
    """The test pack's editor, one per test process, for the modules whose tests hold whatever other
    modules ran before (each test puts the graph it starts from; ``page`` the demo graph). Such a
    module sets ``SHARES_PACK_SERVER = True`` and its ``pack_server`` is this one."""
    server = Server(tmp_path_factory.mktemp("shared-pack") / "workspace")
    yield server
    server.stop()


#: the cats-vs-dogs template's params (node id -> params) shrunk to seconds of training: 32-pixel images,
#: VGG16 without downloaded weights, one epoch per trainer
TINY_TEMPLATE = {"vgg16": {"weights": "none"}, "input": {"height": 32, "width": 32},
                 "formatter": {"height": 32, "width": 32},
                 "train": {"epochs": 1, "batch_size": 8}, "train_finetuned": {"epochs": 1, "batch_size": 8}}


def tiny_template(workspace, **changes: dict) -> str:
    """The cats-vs-dogs template as shipped (positions and titles included) with ``TINY_TEMPLATE``'s params
    on generated images; ``changes``: node id -> params set over those."""
    import json

    from nodeflow.templates import template_path
    from tests.imagegen import make_image_set

    images = make_image_set(workspace / "images", per_class=8)
    graph = json.loads(template_path("cats_vs_dogs_finetune").read_text())
    tiny = {**TINY_TEMPLATE, "dataset": {"root": str(images)}}
    for node in graph["nodes"]:
        node["params"].update({**tiny.get(node["id"], {}), **changes.get(node["id"], {})})
    path = workspace / "tiny_template.json"
    path.write_text(json.dumps(graph))
    return str(path)


@pytest.fixture(scope="session")
def tiny_template_server(tmp_path_factory):
    """The real catalogue on the tiny template, offline, with ``datasets`` (holding ``pets``) an
    allowed root beside the workspace; ``graph`` is the template as put, for a test to put back first."""
    import json

    base = tmp_path_factory.mktemp("tiny-template")
    workspace = base / "workspace"
    workspace.mkdir()
    (base / "datasets" / "pets").mkdir(parents=True)
    # ImageNet weights are neither here (an empty torch cache) nor reachable (a mirror address nothing
    # answers): a backbone with them warns on its card, as on a machine offline
    env = {**os.environ, "NODEFLOW_MIRROR_URL": f"http://127.0.0.1:{free_port()}/", "TORCH_HOME": str(base / "torch")}
    server = Server(workspace, "--builtin", "--graph", tiny_template(workspace), "--allow-root", str(base / "datasets"),
                    env=env)
    server.graph = json.loads((workspace / "tiny_template.json").read_text())
    server.datasets = base / "datasets"
    yield server
    server.stop()
