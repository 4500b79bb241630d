"""The course story on a tiny generated set: run the cats-vs-dogs template, unfreeze more of the
backbone, train the fine-tuned model again in a new process; the history lists both runs and
the diff names the param that changed and what it did to validation accuracy."""

from __future__ import annotations

import json

import pytest

from nodeflow.compare import readable, readable_delta
from nodeflow.runs import RunStore
from tests.clirun import nodeflow_here

pytestmark = pytest.mark.slow


@pytest.fixture
def cli(capsys):
    """``nodeflow ARGS`` in this process: the exit code and what it printed."""
    return lambda *args: nodeflow_here(capsys, ["--no-plugins", *args])


def test_two_runs_of_the_template_are_listed_diffed_and_traced(template_twice, cli):
    """``template_twice`` (tests/conftest.py): the CLI ran the template, then the fine-tuning again in a new
    process with two more blocks unfrozen."""
    ws = ["--workspace", str(template_twice.workspace)]
    reports = [template_twice.first["nodes"], template_twice.second["nodes"]]
    assert reports[0]["evaluate"]["metrics"]["accuracy"] >= 0.7  # it learned (chance is 0.5)

    listed = cli("runs", "--json", *ws)
    assert listed.returncode == 0, listed.stderr
    runs = json.loads(listed.stdout)
    assert [(r["id"], r["status"], r["target"]) for r in runs] == [(2, "done", "train_finetuned"), (1, "done", None)]
    assert runs[0]["changes"] == {"finetune.unfreeze": {"from": [], "to": ["block4", "block5"]}}
    assert {n for n, v in runs[0]["nodes"].items() if v["status"] == "ran"} == {"finetune", "train_finetuned"}

    diff = cli("runs", "diff", "1", "2", *ws)
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
    lineage = RunStore(template_twice.workspace).lineage("train_finetuned")
    chain = [v["node"] for v in lineage["chain"]]
    assert chain[-3:] == ["train", "finetune", "train_finetuned"]
    assert lineage["chain"][-2]["params"]["unfreeze"] == ["block4", "block5"]
    assert lineage["chain"][-3]["run_id"] == 1 and lineage["version"]["run_id"] == 2
    assert [d["node"] for d in lineage["data"]] == ["dataset"] and lineage["data"][0]["fingerprint"]
    traced = cli("lineage", "train_finetuned", *ws)
    assert traced.returncode == 0 and " -> train -> finetune -> train_finetuned" in traced.stdout.splitlines()[0]
