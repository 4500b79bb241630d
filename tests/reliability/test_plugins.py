"""Third-party nodes come from the ``nodeflow.nodes`` entry points; --no-plugins leaves them out,
and every node type says where it came from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PLUGIN = '''
from nodeflow.node import Node, NodeParams, Port
from nodes.ports import MODEL


class Identity(Node):
    type = "acme.identity"
    title = "Identity"
    category = "Acme"
    inputs = (Port("model", MODEL),)
    outputs = (Port("model", MODEL),)

    def run(self, ctx, params, model):
        return {"model": model}
'''


def install_fake_plugin(site: Path) -> None:
    """A distribution 'acme-nodes' with one entry point, as pip would lay it out."""
    (site / "acme_nodes.py").write_text(PLUGIN)
    info = site / "acme_nodes-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-nodes\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[nodeflow.nodes]\nacme = acme_nodes\n")


def catalogue(site: Path, *flags: str) -> dict[str, dict]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    result = subprocess.run([sys.executable, "-m", "nodeflow.cli", *flags, "nodes", "--json"],
                            capture_output=True, text=True, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return {entry["type"]: entry for entry in json.loads(result.stdout)}


def test_plugins_load_and_can_be_left_out(tmp_path):
    install_fake_plugin(tmp_path)
    with_plugins = catalogue(tmp_path)
    assert with_plugins["acme.identity"]["source"] == "plugin acme-nodes"
    assert with_plugins["train.trainer"]["source"] == "built-in"
    without = catalogue(tmp_path, "--no-plugins")
    assert "acme.identity" not in without and "train.trainer" in without
