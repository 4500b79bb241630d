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


# -- who may import whom, read from the source (the imports inside functions count too) ----------

import ast  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def offending(paths, is_bad) -> dict[str, list[str]]:
    bad = {}
    for path in paths:
        names = sorted(name for name in imported_modules(path) if is_bad(name))
        if names:
            bad[str(path.relative_to(ROOT))] = names
    return bad


def test_nodeflow_never_imports_the_catalogue():
    files = sorted((ROOT / "nodeflow").rglob("*.py"))
    assert files
    assert offending(files, lambda name: name == "nodes" or name.startswith("nodes.")) == {}


def test_the_engine_imports_neither_nodeflow_nor_the_rest_of_the_catalogue():
    files = sorted((ROOT / "nodes" / "engine").rglob("*.py"))
    assert len(files) > 10
    assert offending(files, lambda name: name.split(".")[0] == "nodeflow"
                     or (name.split(".")[0] == "nodes" and not name.startswith("nodes.engine"))) == {}


def test_node_files_do_not_import_each_other():
    """Node files share code through the engine, ``nodes.checks`` and ``nodes.ports`` only."""
    shared = {"nodes.engine", "nodes.checks", "nodes.ports"}
    files = [p for p in sorted((ROOT / "nodes").glob("*.py")) if f"nodes.{p.stem}" not in shared]
    assert {p.stem for p in files} >= {"data", "model", "training", "features", "evaluation", "advice"}

    def is_bad(name: str) -> bool:
        return name.startswith("nodes.") and not any(name == s or name.startswith(s + ".") for s in shared)

    assert offending(files, is_bad) == {}


def test_the_engine_runs_without_nodeflow_installed():
    """Importing every engine module with ``nodeflow`` made unimportable works."""
    code = (
        "import sys, importlib, pkgutil\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'nodeflow' or name.startswith('nodeflow.'):\n"
        "            raise ImportError('nodeflow is blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import nodes.engine as engine\n"
        "for info in pkgutil.iter_modules(engine.__path__):\n"
        "    importlib.import_module('nodes.engine.' + info.name)\n"
        "print(sorted(m for m in sys.modules if m.startswith('nodes.') and not m.startswith('nodes.engine')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "[]"
