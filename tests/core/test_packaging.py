"""An installed wheel carries what a checkout has: the templates and the editor's bundle."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from nodeflow import templates

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_ships_templates_and_the_editor_bundle(tmp_path):
    if not (ROOT / "nodeflow" / "ui" / "dist" / "index.js").is_file():
        pytest.skip("the editor bundle is not built (scripts/build_frontend.sh)")
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "node_modules", "test-artifacts",
                                                                "__pycache__", "build", "*.egg-info"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(tmp_path / "wheel"), str(source)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    names = zipfile.ZipFile(next((tmp_path / "wheel").glob("nodeflow-*.whl"))).namelist()
    shipped = {Path(n).name for n in names if "/share/nodeflow/templates/" in n}
    assert shipped == {p.name for p in (ROOT / "templates").glob("*.json")}
    assert "nodeflow/ui/dist/index.js" in names and "nodes/ports.py" in names


def test_installed_templates_are_found_without_a_checkout(tmp_path, monkeypatch):
    installed = tmp_path / "share" / "nodeflow" / "templates"
    installed.mkdir(parents=True)
    shutil.copy(ROOT / "templates" / "cats_vs_dogs_finetune.json", installed / "only_installed.json")
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    found = templates.list_templates()
    assert found["only_installed"] == installed / "only_installed.json"
    assert found["cats_vs_dogs_finetune"].parent == ROOT / "templates"  # the checkout's copy wins
