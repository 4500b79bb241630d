"""The time-to-accuracy benchmark's smoke run: three rows, each a process of its own, timed to a
target validation accuracy and scored on the test split; the JSON and the plot it writes.
Speed itself is the benchmark's to print (benchmarks/time_to_accuracy.py), not this test's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.nodes.conftest import ROOT


@pytest.mark.slow
def test_the_quick_time_to_accuracy_run_writes_its_rows_ratio_and_plot(tmp_path):
    out = tmp_path / "tta.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "time_to_accuracy.py"), "--quick",
                             "--cache-dir", str(tmp_path / "cache"), "--json", str(out)], capture_output=True,
                            text=True, cwd=ROOT, timeout=1200, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stdout + result.stderr
    found = json.loads(out.read_text())
    assert found["target"] == 0.6
    names = [row["name"] for row in found["rows"]]
    assert [n.split(" (")[0] for n in names] == ["hand-written", "nodeflow, as shipped", "nodeflow, the fast way"]
    for row in found["rows"]:
        assert set(row) >= {"name", "seconds_to_target", "reached", "test_accuracy"}
        assert 0 <= row["test_accuracy"] <= 1 and row["curve"], row  # scored on test; a validation score per epoch
        assert (row["seconds_to_target"] is not None) == row["reached"]
        if row["reached"]:
            first = next(t for t, accuracy in row["curve"] if accuracy >= found["target"])
            assert row["seconds_to_target"] == first
    fast = found["rows"][2]
    assert fast["reached"], fast  # pretrained features of the same kinds: a cached head gets there in the smoke run
    hand = found["rows"][0]
    best = min(row["seconds_to_target"] for row in found["rows"][1:] if row["reached"])
    assert found["ratio"] == (best / hand["seconds_to_target"] if hand["reached"] else None)
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| row |" in result.stdout
