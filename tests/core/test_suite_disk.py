"""benchmarks/suite_disk.py runs end to end, small, and what it reports holds: it counts what a folder holds on
disk, per test's or fixture's folder, and a green run leaves nothing behind (pyproject's
``tmp_path_retention_policy``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent

WRITES = '''
import pytest

MB = 1 << 20


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shared")
    (folder / "weights.bin").write_bytes(b"w" * 8 * MB)
    return folder


def test_writes_while_it_runs(shared, tmp_path):
    (tmp_path / "images.bin").write_bytes(b"i" * 4 * MB)
    assert (shared / "weights.bin").stat().st_size == 8 * MB
'''


def test_the_disk_benchmark_sees_the_files_and_a_green_run_leaves_none(tmp_path):
    test = tmp_path / "test_writes.py"
    test.write_text(WRITES)
    out = tmp_path / "disk.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "suite_disk.py"), "--json", str(out), "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path),
                             str(test)],
                            capture_output=True, text=True, cwd=ROOT, timeout=300,
                            env={**os.environ, "NODEFLOW_TEST_WORKERS": "0"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert figures["exit"] == 0
    assert figures["left_bytes"] == 0, figures  # a green run's base folder goes at the end
    assert "peak on disk:" in result.stdout and "left once pytest ended: 0.00 GB" in result.stdout


def test_the_benchmark_counts_each_folder_at_the_depth_of_a_workers_test_folders(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from suite_disk import sizes
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    worker = tmp_path / "pytest-of-me" / "pytest-7" / "popen-gw0"
    (worker / "vgg160" / "deep").mkdir(parents=True)
    (worker / "vgg160" / "deep" / "a.pth").write_bytes(b"a" * (3 << 20))
    (worker / "test_one0").mkdir()
    (worker / "test_one0" / "b.bin").write_bytes(b"b" * (1 << 20))
    total, parts = sizes(tmp_path, depth=4)
    assert set(parts) == {"pytest-of-me/pytest-7/popen-gw0/vgg160", "pytest-of-me/pytest-7/popen-gw0/test_one0"}
    assert parts["pytest-of-me/pytest-7/popen-gw0/vgg160"] >= 3 << 20
    assert parts["pytest-of-me/pytest-7/popen-gw0/test_one0"] >= 1 << 20
    assert total >= sum(parts.values())
