"""A real 2x2 fine-tune sweep of the cats-vs-dogs template on a tiny generated set, on a local Dask cluster:
the head training runs once for the four branches, and every branch trains."""

from __future__ import annotations

import json
import subprocess

import pytest

from nodeflow.cli import main
from tests.imagegen import make_image_set

pytest.importorskip("distributed")
pytest.importorskip("torch")

TINY = {"input.height": 32, "input.width": 32, "formatter.height": 32, "formatter.width": 32,
        "vgg16.weights": "none", "dense.units": 16, "train.epochs": 2, "train.batch_size": 16, "train.lr": 1e-3,
        "train_finetuned.epochs": 1, "train_finetuned.batch_size": 16}


@pytest.mark.slow
def test_template_sweep_trains_the_head_once_for_four_branches(tmp_path, capsys):
    data = make_image_set(tmp_path / "data", ("circle", "stripes"), per_class=16, size=32, class_names=("cat", "dog"))
    sets = [a for k, v in {**TINY, "dataset.root": str(data)}.items()
            for a in ("--set", f"{k}={v if isinstance(v, str) else json.dumps(v)}")]
    # in this process (the cluster's two workers are processes of their own): ``nodeflow sweep`` as the command runs it
    args = ["--no-plugins", "sweep", "cats_vs_dogs_finetune", *sets,
            "--grid", 'finetune.unfreeze=[["block5"],["block4","block5"]]', "--grid", "train_finetuned.lr=[1e-5,1e-4]",
            "--jobs", "2", "--device", "cpu", "--quiet", "--workspace", str(tmp_path / "ws"),
            "--report", str(tmp_path / "sweep.json")]
    capsys.readouterr()
    code = main(args)
    done = subprocess.CompletedProcess(args, code, *capsys.readouterr())
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "sweep.json").read_text())
    assert report["backend"] == "dask" and len(report["branches"]) == 4
    assert all(b["ok"] for b in report["branches"])
    trains = [b["nodes"]["train"]["status"] for b in report["branches"]]
    assert sorted(trains) == ["cached", "cached", "cached", "ran"]
    assert [b["nodes"]["train_finetuned"]["status"] for b in report["branches"]] == ["ran"] * 4
    # fine-tuning the four ways really trained: each has its own final loss, and the table ranks them
    losses = {json.dumps(b["params"]): b["nodes"]["train_finetuned"]["metrics"]["train_loss"] for b in report["branches"]}
    assert len(set(losses.values())) == 4
    # ranked on validation (the template's evaluate node scores test: held out), starred only when clearly best
    assert report["metric"] == "train_finetuned.val_accuracy" and report["warning"] is None
    assert done.stdout.splitlines()[0].split()[-1] == "train_finetuned.val_accuracy"
    assert "ranked by train_finetuned.val_accuracy: " in done.stdout
    assert ("= tie:" in done.stdout) if report["judgement"]["star"] is None else ("* best:" in done.stdout)
