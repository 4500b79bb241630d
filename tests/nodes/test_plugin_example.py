"""The README's "writing a node" example works as written: one class in one file, loaded with
--nodes, connects to the built-in ports and runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_node_example_loads_and_validates(tmp_path):
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"### Writing a node.*?```python\n(.*?)```", readme, re.S).group(1)
    module = tmp_path / "my_nodes.py"
    module.write_text(code)
    result = subprocess.run([sys.executable, "-m", "nodeflow.cli", "--nodes", str(module), "nodes", "--json"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert '"type": "example.scale"' in result.stdout and '"accepts_as": [\n          "Model"' in result.stdout


def test_readme_node_example_runs_in_a_graph(tmp_path):
    """Wired after the built-in input layer, the example node runs through the CLI with a param
    set from the command line, and reports its metric."""
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"### Writing a node.*?```python\n(.*?)```", readme, re.S).group(1)
    module = tmp_path / "my_nodes.py"
    module.write_text(code)
    graph = {"format": "nodeflow.graph", "version": 1, "name": "plugin example",
             "nodes": [{"id": "input", "type": "model.input", "params": {"height": 32, "width": 32, "channels": 3},
                        "position": {"x": 0, "y": 0}},
                       {"id": "scale", "type": "example.scale", "params": {}, "position": {"x": 260, "y": 0}}],
             "edges": [{"source": "input", "source_port": "model", "target": "scale", "target_port": "model"}]}
    path = tmp_path / "graph.json"
    path.write_text(json.dumps(graph))
    report = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-m", "nodeflow.cli", "--nodes", str(module), "run", str(path),
                             "--workspace", str(tmp_path / "ws"), "--set", "scale.factor=2.5", "--quiet",
                             "--report", str(report)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    ran = json.loads(report.read_text())["nodes"]["scale"]
    assert ran["status"] == "ran"
    assert ran["metrics"]["factor"] == 2.5
