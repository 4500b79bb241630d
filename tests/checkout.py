"""A machine as a new user has it: a fresh clone of the repository, and no Node.js on the PATH."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NODE_PROGRAMS = {"node", "nodejs", "npm", "npx", "corepack"}


def tracked_copy(dest: Path) -> Path:
    """The files git tracks, as they are in the work tree: what was never committed (a built bundle
    left ignored, node_modules, .venv) is missing here as it is from a clone."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("needs a git checkout")
    for name in filter(None, listed.decode().split("\0")):
        if (ROOT / name).is_file():  # deleted in the work tree but not yet in git: a clone of the change lacks it
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def path_without_node(folder: Path) -> str:
    """A PATH of one folder holding a link to every program on this PATH except Node.js's, so a
    command that needs Node.js fails here as it would where none is installed."""
    folder.mkdir(parents=True, exist_ok=True)
    for entry in filter(None, os.environ.get("PATH", "").split(os.pathsep)):
        if not Path(entry).is_dir():
            continue
        for program in Path(entry).iterdir():
            link = folder / program.name
            if (program.name not in NODE_PROGRAMS and not link.exists() and not link.is_symlink()
                    and program.is_file() and os.access(program, os.X_OK)):
                link.symlink_to(program)
    path = str(folder)
    assert not any(shutil.which(name, path=path) for name in NODE_PROGRAMS)
    return path
