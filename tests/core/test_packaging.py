"""An installed wheel carries what a checkout has: the templates and the editor's bundle, so
``pip install`` and ``nodeflow serve`` open the editor with no checkout and no Node.js."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from nodeflow import templates
from tests.checkout import path_without_node, tracked_copy
from tests.ui.conftest import Server, browser, editor_tab  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of a fresh clone (``pip wheel . --no-deps``)."""
    base = tmp_path_factory.mktemp("wheel")
    source = tracked_copy(base / "src")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(base / "wheel"), str(source)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return next((base / "wheel").glob("nodeflow-*.whl"))


def test_wheel_ships_templates_and_the_editor_bundle(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(n).name for n in names if "/share/nodeflow/templates/" in n}
    assert shipped == {p.name for p in (ROOT / "templates").glob("*.json")}
    assert "nodeflow/ui/dist/index.js" in names and "nodes/ports.py" in names
    assert "nodeflow/ui/flow_editor.js" in names


@pytest.mark.browser
@pytest.mark.slow
def test_installed_wheel_opens_the_editor_without_a_checkout_or_node(wheel, browser, tmp_path):  # noqa: F811
    """A fresh venv gets the wheel alone; its dependencies (torch, NiceGUI, ...) are this environment's,
    put on its path so the test downloads nothing, but not its editable nodeflow."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                              str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-2000:]
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # plain path lines: the .pth files over there (the editable install's import hook) are not run
    reused = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (Path(purelib) / "reused_dependencies.pth").write_text("".join(f"{folder}\n" for folder in reused))

    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), path_without_node(tmp_path / "bin")])
    where = subprocess.run([python, "-c", "import nodeflow, nodes; print(nodeflow.__file__); print(nodes.__file__)"],
                           cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert all(Path(f).is_relative_to(venv) for f in where), where

    server = Server(tmp_path / "workspace", command=(str(venv / "bin" / "nodeflow"), "serve"), cwd=cwd, env=env)
    try:
        with editor_tab(browser, server, "vgg16") as tab:
            assert tab.locator(".vue-flow__pane").is_visible()
            template = json.loads((ROOT / "templates" / "cats_vs_dogs_finetune.json").read_text())
            for node in template["nodes"]:
                assert tab.locator(f'.vue-flow__node[data-id="{node["id"]}"]').is_visible(), node["id"]
    finally:
        server.stop()


def test_installed_templates_are_found_without_a_checkout(tmp_path, monkeypatch):
    installed = tmp_path / "share" / "nodeflow" / "templates"
    installed.mkdir(parents=True)
    shutil.copy(ROOT / "templates" / "cats_vs_dogs_finetune.json", installed / "only_installed.json")
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    found = templates.list_templates()
    assert found["only_installed"] == installed / "only_installed.json"
    assert found["cats_vs_dogs_finetune"].parent == ROOT / "templates"  # the checkout's copy wins
