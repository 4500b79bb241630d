"""The graph, node API, executor and session must not pull in torch or the UI."""

import subprocess
import sys


def test_core_imports_neither_torch_nor_nicegui():
    code = (
        "import sys\n"
        "import nodeflow.graph, nodeflow.node, nodeflow.executor, nodeflow.session, nodeflow.cli\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'nicegui'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
