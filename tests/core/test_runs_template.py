"""The course story on a tiny generated set: run the cats-vs-dogs template, unfreeze more of the
backbone, train the fine-tuned model again in a new process; the history lists both runs and
the diff names the param that changed and what it did to validation accuracy."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nodeflow.compare import readable, readable_delta
from nodeflow.runs import RunStore
from tests.nodes.conftest import ROOT, SMALL, TEMPLATE

pytestmark = pytest.mark.slow


def nodeflow(*args):
    cmd = [sys.executable, "-m", "nodeflow.cli", "--no-plugins", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)


def sets(root, **extra):
    values = {**SMALL, "dataset.root": str(root), **extra}
    return [arg for key, value in values.items()
            for arg in ("--set", f"{key}={value if isinstance(value, str) else json.dumps(value)}")]


def test_two_runs_of_the_template_are_listed_diffed_and_traced(tmp_path):
    from tests.imagegen import make_image_set

    images = make_image_set(tmp_path / "images", ("circle", "stripes"), per_class=50, size=36, vary_size=True,
                            class_names=("cat", "dog"))
    ws = ["--workspace", str(tmp_path / "ws")]
    run = ["run", str(TEMPLATE), *ws, "--device", "cpu", "--quiet"]
    first = nodeflow(*run, *sets(images), "--report", str(tmp_path / "first.json"))
    assert first.returncode == 0, first.stderr
    second = nodeflow(*run, *sets(images, **{"finetune.unfreeze": ["block4", "block5"]}), "--target", "train_finetuned",
                      "--report", str(tmp_path / "second.json"))
    assert second.returncode == 0, second.stderr
    reports = [json.loads((tmp_path / f"{n}.json").read_text())["nodes"] for n in ("first", "second")]
    assert reports[0]["evaluate"]["metrics"]["accuracy"] >= 0.7  # it learned (chance is 0.5)

    listed = nodeflow("runs", "--json", *ws)
    assert listed.returncode == 0, listed.stderr
    runs = json.loads(listed.stdout)
    assert [(r["id"], r["status"], r["target"]) for r in runs] == [(2, "done", "train_finetuned"), (1, "done", None)]
    assert runs[0]["changes"] == {"finetune.unfreeze": {"from": [], "to": ["block4", "block5"]}}
    assert {n for n, v in runs[0]["nodes"].items() if v["status"] == "ran"} == {"finetune", "train_finetuned"}

    diff = nodeflow("runs", "diff", "1", "2", *ws)
    assert diff.returncode == 0, diff.stderr
    before = reports[0]["train_finetuned"]["metrics"]["val_accuracy"]
    after = reports[1]["train_finetuned"]["metrics"]["val_accuracy"]
    lines = [line.strip() for line in diff.stdout.splitlines()]
    assert 'finetune.unfreeze: [] -> ["block4", "block5"]' in lines
    accuracy = next(line for line in lines if line.startswith("train_finetuned.val_accuracy:"))
    name = "train_finetuned.val_accuracy"  # in percent, as people read it, with the images it stands on
    assert f"{readable(name, before)} -> {readable(name, after)}" in accuracy
    assert ("(same)" in accuracy) if before == after else (f"({readable_delta(name, after - before)})" in accuracy)
    assert "validation images" in accuracy
    assert any(line.startswith("evaluate.accuracy:") and "(only in run 1)" in line for line in lines)
    assert not any(line.startswith("dataset.") for line in lines)  # unchanged and cached: not news
    print(diff.stdout)

    # lineage: the second fine-tuned model came from the first training, through the new unfreeze
    lineage = RunStore(tmp_path / "ws").lineage("train_finetuned")
    chain = [v["node"] for v in lineage["chain"]]
    assert chain[-3:] == ["train", "finetune", "train_finetuned"]
    assert lineage["chain"][-2]["params"]["unfreeze"] == ["block4", "block5"]
    assert lineage["chain"][-3]["run_id"] == 1 and lineage["version"]["run_id"] == 2
    assert [d["node"] for d in lineage["data"]] == ["dataset"] and lineage["data"][0]["fingerprint"]
    traced = nodeflow("lineage", "train_finetuned", *ws)
    assert traced.returncode == 0 and " -> train -> finetune -> train_finetuned" in traced.stdout.splitlines()[0]
