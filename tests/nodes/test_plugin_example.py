"""The README's "writing a node" example works as written: one class in one file, loaded with
--nodes, connects to the built-in ports and runs."""

from __future__ import annotations

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
