"""The README's picture of the project list on a shared server: a small class (a teacher and three
students) on ``serve --users`` with the test node pack, the teacher's class template, a project shared
read-only, an upload, and runs on the machine's queue (one running, the others waiting their turn);
alice signs in in headless Chromium and the page is saved as she sees it.

    PYTHONPATH=. python scripts/classroom_screenshot.py [--out docs/screenshots/classroom-projects.png]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from nodeflow.users import Accounts  # noqa: E402
from tests.reliability.classroom_site import image_zip, quick_graph  # noqa: E402
from tests.ui.classroom_server import CHEAP  # noqa: E402
from tests.ui.conftest import CHROMIUM_ARGS, Server, chromium_path  # noqa: E402


def gated(until: Path) -> dict:
    """A run that goes on until ``until`` exists: it holds the machine while the picture is taken."""
    return {"format": "nodeflow.graph", "version": 1, "name": "training", "edges": [],
            "nodes": [{"id": "train", "type": "test.gate", "params": {"until": str(until)}}]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots" / "classroom-projects.png"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "root"
        accounts = Accounts(root, hasher=CHEAP)
        tokens = {}
        for name in ("teacher", "alice", "bob", "carol"):
            accounts.add(name, f"{name}-password", admin=name == "teacher")
            tokens[name] = accounts.create_token(name, "screenshot")[1]
        accounts.close()
        server = Server(root, command=(sys.executable, "-m", "tests.ui.classroom_server"))
        try:
            api = {name: httpx.Client(base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {token}"})
                   for name, token in tokens.items()}

            def project(name: str, title: str, graph: dict | None = None) -> str:
                made = api[name].post("/api/projects", json={"title": title}).json()["id"]
                if graph is not None:
                    api[name].put(f"/api/p/{made}/graph", json=graph).raise_for_status()
                return made

            week1 = project("teacher", "Week 1: cats vs dogs", quick_graph().model_dump(mode="json"))
            api["teacher"].post("/api/templates", json={"project": week1, "title": "Week 1: cats vs dogs"})
            api["teacher"].post("/api/templates", json={"project": week1, "title": "Week 2: fine-tuning"})
            gate = Path(folder) / "never"
            mine = project("alice", "Cats vs dogs, my run", gated(gate))
            project("alice", "Hot dog or not")
            api["alice"].post(f"/api/p/{mine}/uploads", params={"name": "pets"},
                              files={"files": ("pets.zip", image_zip(per_class=4), "application/zip")})
            theirs = project("bob", "Bob's augmentation study", gated(gate))
            api["bob"].post(f"/api/projects/{theirs}/shares", json={"user": "alice"}).raise_for_status()
            carols = project("carol", "Cats vs dogs", gated(gate))
            for name, target in (("bob", theirs), ("alice", mine), ("carol", carols), ("alice", mine)):
                api[name].post(f"/api/p/{target}/run", json={}).raise_for_status()
            shoot(server, Path(args.out))
        finally:
            server.stop()
    print(f"wrote {args.out}")


def shoot(server: Server, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": 1280, "height": 1000})
        tab.goto(server.url + "/")
        tab.get_by_label("Name").fill("alice")
        tab.get_by_label("Password").fill("alice-password")
        tab.get_by_role("button", name="Sign in").click()
        tab.locator(".nf-queue-row").nth(1).wait_for()  # her two runs waiting their turn: bob's goes
        tab.wait_for_timeout(500)
        out.parent.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(out), full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
