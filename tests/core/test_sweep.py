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
    """``nodeflow sweep`` as its own process: what starts a local Dask cluster (--jobs) runs this way."""
    cmd = [sys.executable, "-m", "nodeflow.cli", "--nodes", PACK, *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **(env or {})},
                          timeout=180)


def sweep(cli, parallel):
    """A local sweep in this process; a --jobs one in a process of its own."""
    return nodeflow if parallel else cli


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


@pytest.mark.slow
@pytest.mark.parametrize("parallel", [[], ["--jobs", "2"]], ids=["local", "dask"])
def test_sweep_runs_the_shared_head_once_and_records_each_branch(head_graph, tmp_path, parallel, cli):
    log = tmp_path / "runs.log"
    ws = tmp_path / "ws"
    report_file = tmp_path / "sweep.json"
    result = sweep(cli, parallel)("sweep", str(head_graph), "--grid", "finetune.offset=[1, 2]", "--grid", "scale.value=[10, 20]",
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


@pytest.mark.slow
def test_a_bad_grid_value_names_node_and_param_in_one_line(head_graph, tmp_path, cli):
    result = cli("sweep", str(head_graph), "--grid", 'finetune.offset=[1, "x"]', "--workspace", str(tmp_path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith('error: --grid finetune.offset: value "x": finetune') and "offset" in lines[0]
    result = cli("sweep", str(head_graph), "--grid", "nope.offset=[1]", "--workspace", str(tmp_path))
    assert result.returncode == 1 and "no node 'nope'" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_branch_that_cannot_run_stops_the_sweep_before_anything_runs(tmp_path, cli):
    graph = make_graph({"c": ("test.constant", {"value": 1.0}), "div": ("test.divide", {}),
                        "by": ("test.constant", {"value": 1.0})}, ["c.value->div.a", "by.value->div.b"])
    path = tmp_path / "div.json"
    graph.save(path)
    # a zero divisor is caught before anything runs, as for --set
    result = cli("sweep", str(path), "--grid", "by.value=[1, 0]", "--workspace", str(tmp_path / "ws"))
    assert result.returncode == 1
    assert result.stderr.strip() == "error: --grid: the branch by.value=0 is not valid: div:b: the divisor is the constant 0"
    assert not (tmp_path / "ws" / "cache").exists()  # nothing ran


@pytest.mark.slow
@pytest.mark.parametrize("parallel", [[], ["--jobs", "2"]], ids=["local", "dask"])
def test_a_branch_failing_at_run_time_fails_the_sweep_and_the_others_finish(tmp_path, parallel, cli):
    graph = make_graph({"c": ("test.constant", {"value": 6.0}), "one": ("test.constant", {"value": 1.0}),
                        "by": ("test.add", {"offset": 0.0}), "div": ("test.divide", {})},
                       ["one.value->by.a", "c.value->div.a", "by.value->div.b"])
    path = tmp_path / "div.json"
    graph.save(path)
    report_file = tmp_path / "r.json"
    result = sweep(cli, parallel)("sweep", str(path), "--grid", "by.offset=[1, -1, 2]", "--workspace", str(tmp_path / "ws"),
                      "--report", str(report_file), *parallel)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: 1 of 3 branch(es) failed: node 'div' failed: ZeroDivisionError")
    branches = json.loads(report_file.read_text())["branches"]
    assert [b["ok"] for b in branches] == [True, False, True]
    assert [b["nodes"]["div"]["status"] for b in branches] == ["ran", "failed", "ran"]
    assert [line.split()[-2] for line in result.stdout.splitlines()[1:4]] == ["ok", "failed", "ok"]


# -- judging: on validation by default, a star only when the images say so ---------------------------
import numpy as np  # noqa: E402

from nodeflow.predictions import SplitPredictions, files_digest  # noqa: E402
from nodeflow.sweep import held_out, held_out_warning, judge, main_metric, summary  # noqa: E402

FINALS = {"train": {"val_accuracy": 0.8, "val_loss": 0.5, "validation_images": 20, "train_loss": 0.1},
          "eval": {"accuracy": 0.9, "loss": 0.3, "samples": 20, "test_images": 20}}
SPLITS = {"train.val_accuracy": "validation", "train.val_loss": "validation", "train.validation_images": "validation",
          "train.train_loss": "train", "eval.accuracy": "test", "eval.loss": "test", "eval.samples": "test",
          "eval.test_images": "test"}


def test_the_default_metric_is_a_validation_one_even_when_judged_at_the_test_evaluation():
    assert main_metric([FINALS], "eval", SPLITS) == "train.val_accuracy"
    assert main_metric([FINALS], None, SPLITS) == "train.val_accuracy"
    assert main_metric([{"train": {"val_loss": 0.5, "validation_images": 20}}], None, SPLITS) == "train.val_loss"
    # without a validation metric, the old rule, and the result says it is a test metric
    only_test = {"eval": FINALS["eval"]}
    assert main_metric([only_test], "eval", SPLITS) == "eval.accuracy" and held_out("eval.accuracy", SPLITS)
    assert not held_out("train.val_accuracy", SPLITS) and "optimistic" in held_out_warning("eval.accuracy")
    assert main_metric([FINALS], "train", {}) == "train.val_accuracy"  # the name says validation too


def outcome(correct: list[bool]) -> SplitPredictions:
    files = [f"/v/{i}.png" for i in range(len(correct))]
    true = np.zeros(len(correct), dtype=np.int64)
    return SplitPredictions("validation", ("a", "b"), files_digest(files), tuple(files), true,
                            np.where(correct, 0, 1), np.full(len(correct), 0.9, dtype=np.float32))


def test_the_star_goes_only_to_a_branch_clearly_better_than_each_other():
    weak, strong = [True] * 10 + [False] * 30, [True] * 38 + [False] * 2
    found = judge([0.25, 0.95], "train.val_accuracy", [outcome(weak), outcome(strong)])
    assert (found.best, found.star, found.tie, found.tested) == (1, 1, [], True)
    assert found.words.startswith("branch 2 against branch 1, the runner-up: better (+")
    # two branches at 0.5 each, or a small lead on few images: a tie, no star
    half = [True, False] * 6
    tie = judge([0.5, 0.5], "train.val_accuracy", [outcome(half), outcome(half[::-1])])
    assert (tie.best, tie.star, tie.tie) == (0, None, [0, 1])
    assert tie.words.startswith("tie: branch 1 against branch 2: no clear difference on 12 images (")
    close = judge([0.75, 11 / 12, 0.25], "train.val_accuracy",
                  [outcome([True] * 9 + [False] * 3), outcome([True] * 11 + [False]), outcome([True] * 3 + [False] * 9)])
    assert (close.best, close.star, close.tie) == (1, None, [1, 0])  # branch 3 is clearly worse, branch 1 not


def test_a_metric_without_per_image_records_keeps_its_star_and_says_it_is_untested():
    found = judge([0.5, 0.3], "train.val_loss")
    assert (found.best, found.star, found.tested) == (1, 1, False)  # a loss: lower is better
    assert found.words == "branch 2 is best by value, untested: train.val_loss has no per-image record"
    assert judge([2.0, 2.0], "score.sum").tie == [0, 1]
    assert judge([None, 0.7], "train.val_accuracy").star == 1  # one finished branch: nothing to compare


def test_a_sweep_judged_on_test_says_so_in_its_summary():
    record = {"id": 1, "grid": [["train.lr", [0.1, 0.2]]], "target": "eval", "metric": "eval.accuracy",
              "branches": [{"params": {"train.lr": 0.1}, "run": 1}, {"params": {"train.lr": 0.2}, "run": 2}]}
    graph = {"nodes": [{"id": "eval", "type": "eval.evaluate", "params": {}}], "edges": []}
    runs = [{"status": "done", "nodes": {"eval": {"metrics": {"accuracy": value}}}, "seconds": 1.0, "error": None,
             "graph": graph} for value in (0.5, 0.75)]

    class Registry:  # what nodeflow.compare.metric_splits asks of a registry
        @staticmethod
        def get(type_name):
            class Evaluate:
                class Params:
                    @staticmethod
                    def model_validate(params):
                        return params

                @staticmethod
                def measures(params):
                    return {"accuracy": "test"}
            return Evaluate

    found = summary(record, runs, Registry())
    assert found["metric"] == "eval.accuracy" and found["split"] == "test"
    assert found["warning"] == held_out_warning("eval.accuracy")
    assert found["star"] == 1 and "untested" in found["judgement"]  # no per-image predictions were given
    assert summary({**record, "metric": None}, runs, Registry())["warning"] == held_out_warning("eval.accuracy")
