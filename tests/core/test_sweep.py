"""``nodeflow sweep``: a grid of params, branches sharing the cache, locally and on a local Dask cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nodeflow.runs import RunStore
from nodeflow.sweep import GridError, combinations, parse_grid

from .conftest import make_graph

ROOT = Path(__file__).resolve().parents[2]
PACK = str(ROOT / "tests" / "nodepack.py")


def nodeflow(*args, env=None):
    cmd = [sys.executable, "-m", "nodeflow.cli", "--nodes", PACK, *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **(env or {})},
                          timeout=180)


@pytest.fixture
def head_graph(tmp_path) -> Path:
    """An expensive shared 'head' feeding a 'finetune' step swept over two params."""
    graph = make_graph({"head": ("test.slow", {"steps": 5, "delay": 0.05}),
                        "finetune": ("test.add", {"offset": 0.0}),
                        "scale": ("test.constant", {"value": 1.0}),
                        "score": ("test.add", {})},
                       ["head.value->finetune.a", "finetune.value->score.a", "scale.value->score.b"])
    path = tmp_path / "sweep.json"
    graph.save(path)
    return path


def test_grid_parsing_and_combinations():
    grid = parse_grid(["finetune.offset=[1, 2]", 'train.unfreeze=[["block5"], ["block4", "block5"]]'])
    assert grid == [("finetune.offset", [1, 2]), ("train.unfreeze", [["block5"], ["block4", "block5"]])]
    assert combinations(grid) == [
        {"finetune.offset": 1, "train.unfreeze": ["block5"]}, {"finetune.offset": 1, "train.unfreeze": ["block4", "block5"]},
        {"finetune.offset": 2, "train.unfreeze": ["block5"]}, {"finetune.offset": 2, "train.unfreeze": ["block4", "block5"]}]
    for bad, words in [("lr=[1]", "expected NODE.PARAM=[VALUE, ...]"), ("a.b=[1", "not a JSON list"),
                       ("a.b=3", "non-empty JSON list"), ("a.b=[]", "non-empty JSON list")]:
        with pytest.raises(GridError, match=words.replace("[", r"\[").replace(".", r"\.")):
            parse_grid([bad])


@pytest.mark.parametrize("parallel", [[], ["--jobs", "2"]], ids=["local", "dask"])
def test_sweep_runs_the_shared_head_once_and_records_each_branch(head_graph, tmp_path, parallel):
    log = tmp_path / "runs.log"
    ws = tmp_path / "ws"
    report_file = tmp_path / "sweep.json"
    result = nodeflow("sweep", str(head_graph), "--grid", "finetune.offset=[1, 2]", "--grid", "scale.value=[10, 20]",
                      "--workspace", str(ws), "--report", str(report_file), *parallel,
                      env={"NODEPACK_RUN_LOG": str(log)})
    assert result.returncode == 0, result.stderr
    report = json.loads(report_file.read_text())
    assert report["backend"] == ("dask" if parallel else "local")
    assert [b["params"] for b in report["branches"]] == [
        {"finetune.offset": 1, "scale.value": 10}, {"finetune.offset": 1, "scale.value": 20},
        {"finetune.offset": 2, "scale.value": 10}, {"finetune.offset": 2, "scale.value": 20}]
    assert all(b["ok"] for b in report["branches"])
    heads = [b["nodes"]["head"]["status"] for b in report["branches"]]
    assert sorted(heads) == ["cached", "cached", "cached", "ran"]  # one computation for four branches
    runs = log.read_text().split()
    assert runs.count("head") == 1 and runs.count("finetune") == 2 and runs.count("score") == 4
    # the same per-node shape as run --report, and the metric of every branch
    scores = [b["nodes"]["score"]["metrics"]["sum"] for b in report["branches"]]
    assert scores == [16.0, 26.0, 17.0, 27.0]
    # the results table: every branch, the best marked
    table = result.stdout.splitlines()
    assert table[0].split() == ["RUN", "finetune.offset", "scale.value", "STATUS", "score.sum"]
    best = [line for line in table[1:5] if line.startswith("*")]
    assert len(best) == 1 and best[0].split()[2:] == ["2", "20", "ok", "27"]
    assert table[-1] == "* best: finetune.offset=2, scale.value=20 (score.sum = 27)"
    # each branch is a run in the history
    store = RunStore(ws)
    recorded = [r for r in store.list(limit=10) if r["source"] == "sweep"]
    assert len(recorded) == 4 and {r["status"] for r in recorded} == {"done"}
    assert sorted(b["run"] for b in report["branches"]) == sorted(r["id"] for r in recorded)
    one = store.get(report["branches"][3]["run"])
    assert one["nodes"]["score"]["metrics"]["sum"] == 27.0


def test_a_bad_grid_value_names_node_and_param_in_one_line(head_graph, tmp_path):
    result = nodeflow("sweep", str(head_graph), "--grid", 'finetune.offset=[1, "x"]', "--workspace", str(tmp_path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith('error: --grid finetune.offset: value "x": finetune') and "offset" in lines[0]
    result = nodeflow("sweep", str(head_graph), "--grid", "nope.offset=[1]", "--workspace", str(tmp_path))
    assert result.returncode == 1 and "no node 'nope'" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_branch_that_cannot_run_stops_the_sweep_before_anything_runs(tmp_path):
    graph = make_graph({"c": ("test.constant", {"value": 1.0}), "div": ("test.divide", {}),
                        "by": ("test.constant", {"value": 1.0})}, ["c.value->div.a", "by.value->div.b"])
    path = tmp_path / "div.json"
    graph.save(path)
    # a zero divisor is caught before anything runs, as for --set
    result = nodeflow("sweep", str(path), "--grid", "by.value=[1, 0]", "--workspace", str(tmp_path / "ws"))
    assert result.returncode == 1
    assert result.stderr.strip() == "error: --grid: the branch by.value=0 is not valid: div:b: the divisor is the constant 0"
    assert not (tmp_path / "ws" / "cache").exists()  # nothing ran


@pytest.mark.parametrize("parallel", [[], ["--jobs", "2"]], ids=["local", "dask"])
def test_a_branch_failing_at_run_time_fails_the_sweep_and_the_others_finish(tmp_path, parallel):
    graph = make_graph({"c": ("test.constant", {"value": 6.0}), "one": ("test.constant", {"value": 1.0}),
                        "by": ("test.add", {"offset": 0.0}), "div": ("test.divide", {})},
                       ["one.value->by.a", "c.value->div.a", "by.value->div.b"])
    path = tmp_path / "div.json"
    graph.save(path)
    report_file = tmp_path / "r.json"
    result = nodeflow("sweep", str(path), "--grid", "by.offset=[1, -1, 2]", "--workspace", str(tmp_path / "ws"),
                      "--report", str(report_file), *parallel)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: 1 of 3 branch(es) failed: node 'div' failed: ZeroDivisionError")
    branches = json.loads(report_file.read_text())["branches"]
    assert [b["ok"] for b in branches] == [True, False, True]
    assert [b["nodes"]["div"]["status"] for b in branches] == ["ran", "failed", "ran"]
    assert [line.split()[-2] for line in result.stdout.splitlines()[1:4]] == ["ok", "failed", "ok"]
