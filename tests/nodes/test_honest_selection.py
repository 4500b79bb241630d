"""Honest comparisons with real training: the trainer and evaluate keep per-image predictions, and
``nodeflow runs diff`` calls a difference real only when the images say so. Two configurations
that truly differ (a model that sees only grayscale against one that sees colour, on classes that
differ only in hue at the same brightness) come out "better"; two seeds of one configuration come
out "no clear difference". A sweep of them is judged on validation: the test split is held out."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nodeflow.cli import main
from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodeflow.predictions import PredictionStore
from nodeflow.runs import Recording, RunStore
from tests.imagegen import make_hue_set

SIZE = 16


def pixel_graph(root, channels: int = 3, seed: int = 0) -> Graph:
    """input → flatten → dense(auto) → trainer → evaluate (test): a linear model on the pixels,
    which trains in a moment; ``channels`` 1 makes it see the pictures in grayscale."""
    nodes = [{"id": "input", "type": "model.input", "params": {"height": SIZE, "width": SIZE, "channels": channels}},
             {"id": "flat", "type": "model.flatten", "params": {}},
             {"id": "out", "type": "model.dense", "params": {"units": "auto", "activation": "none"}},
             {"id": "data", "type": "data.image_folder", "params": {"root": str(root)}},
             {"id": "fmt", "type": "data.format", "params": {"height": SIZE, "width": SIZE, "channels": channels}},
             {"id": "train", "type": "train.trainer",
              "params": {"optimizer": "adam", "lr": 3e-3, "epochs": 8, "batch_size": 8, "seed": seed}},
             {"id": "eval", "type": "eval.evaluate", "params": {"split": "test"}}]
    chain = [("input", "flat"), ("flat", "out"), ("out", "train"), ("train", "eval")]
    edges = [{"source": a, "source_port": "model", "target": b, "target_port": "model"} for a, b in chain]
    edges += [{"source": "data", "source_port": "data", "target": "fmt", "target_port": "data"},
              {"source": "fmt", "source_port": "data", "target": "train", "target_port": "data"},
              {"source": "fmt", "source_port": "data", "target": "eval", "target_port": "data"}]
    return Graph.from_data({"format": "nodeflow.graph", "version": 1, "name": "hue", "nodes": nodes, "edges": edges})


@pytest.fixture(scope="module")
def history(registry, tmp_path_factory):
    """Three recorded runs in one workspace: grayscale (1), colour (2), colour with another seed (3)."""
    folder = tmp_path_factory.mktemp("honest")
    root = make_hue_set(folder / "hue", per_class=40, size=SIZE)
    workspace = folder / "ws"
    store = RunStore(workspace)
    reports = []
    for graph in (pixel_graph(root, channels=1), pixel_graph(root), pixel_graph(root, seed=1)):
        executor = Executor(registry, workspace, device="cpu")
        with Recording(store, executor, graph) as recording:
            recording.report = executor.run(graph)
        assert recording.report.ok, recording.report.to_json()
        reports.append(recording.report)
    return workspace, store, reports, root


def diff(workspace, capsys, *args):
    assert main(["--no-plugins", "runs", "diff", *args, "--workspace", str(workspace)]) == 0
    return capsys.readouterr().out


def test_trainer_and_evaluate_keep_per_image_predictions_that_reproduce_their_accuracy(history, registry):
    workspace, store, reports, _ = history
    run = store.get(2)
    kept = PredictionStore(Executor(registry, workspace).cache, workspace)
    train, evaluate = kept.of(run["nodes"]["train"]["key"]), kept.of(run["nodes"]["eval"]["key"])
    assert set(train) == {"validation", "test"} and set(evaluate) == {"test"}
    metrics = reports[1].nodes["train"].metrics
    assert metrics["validation_images"] == len(train["validation"]) == 20 and metrics["train_images"] == 40
    assert train["validation"].correct.mean() == pytest.approx(metrics["val_accuracy"])
    assert evaluate["test"].correct.mean() == pytest.approx(reports[1].nodes["eval"].metrics["accuracy"])
    assert reports[1].nodes["eval"].metrics["test_images"] == 20
    assert np.array_equal(train["test"].predicted, evaluate["test"].predicted)  # the same model on the same images
    assert "test_accuracy" not in metrics  # test is scored and kept, never logged by the trainer


def test_a_real_difference_is_called_real(history, capsys):
    workspace, _, reports, _ = history
    grey, colour = (r.nodes["train"].metrics["val_accuracy"] for r in reports[:2])
    assert grey <= 0.75 and colour >= 0.9  # learning happened in colour, and could not in grayscale
    out = diff(workspace, capsys, "1", "2")
    line = next(li.strip() for li in out.splitlines() if li.strip().startswith("train.val_accuracy:"))
    assert "on 20 validation images: better (+" in line and "95% CI +" in line and ", 20 images)" in line, out
    assert "train on validation: better (+" in out
    found = json.loads(diff(workspace, capsys, "1", "2", "--json"))
    accuracy = found["metrics"]["train.val_accuracy"]
    assert accuracy["comparison"]["clear"] and accuracy["comparison"]["p_value"] < 0.05
    assert accuracy["comparison"]["ci"][0] > 0 and accuracy["images"] == {"a": 20, "b": 20}
    flipped = next(c for c in found["comparisons"] if c["node"] == "train" and c["split"] == "validation")["flips"]
    assert flipped["wrong_to_right"]["count"] >= 5  # grayscale guessed; colour fixed them


def test_two_seeds_of_one_configuration_are_no_clear_difference(history, capsys):
    workspace, *_ = history
    out = diff(workspace, capsys, "2", "3")
    line = next(li.strip() for li in out.splitlines() if li.strip().startswith("train.val_accuracy:"))
    assert "on 20 validation images: no clear difference on 20 images" in line, out
    found = json.loads(diff(workspace, capsys, "2", "3", "--json"))
    comparison = found["metrics"]["train.val_accuracy"]["comparison"]
    assert not comparison["clear"] and comparison["verdict"] == "no clear difference"
    held = [c for c in found["comparisons"] if c["split"] == "test"]
    assert held and all(c["held_out"] for c in held)  # shown for the end, labelled held out


def test_a_sweep_is_judged_on_validation_and_a_test_metric_is_flagged(history, tmp_path, capsys):
    workspace, _, _, root = history
    path = tmp_path / "hue.json"
    pixel_graph(root).save(path)
    report = tmp_path / "sweep.json"
    base = ["--no-plugins", "sweep", str(path), "--grid", "train.seed=[0, 1]", "--workspace", str(workspace),
            "--device", "cpu", "--quiet", "--report", str(report)]
    assert main(base) == 0
    out, err = capsys.readouterr()
    ranked = json.loads(report.read_text())
    assert ranked["metric"] == "train.val_accuracy" and ranked["warning"] is None  # validation, by default
    assert ranked["judgement"]["star"] is None and ranked["judgement"]["tie"] == [0, 1]  # the two seeds: a tie
    lines = out.splitlines()
    assert lines[0].split()[-1] == "train.val_accuracy" and not any(li.startswith("*") for li in lines)
    assert "ranked by train.val_accuracy: tie: branch 1 against branch 2: no clear difference on 20 images" in out
    assert "warning" not in err

    assert main([*base, "--metric", "eval.accuracy"]) == 0  # allowed, and said plainly
    out, err = capsys.readouterr()
    assert "warning: eval.accuracy is measured on the test split: the branch chosen by it has an optimistic test " \
           "figure" in err
    assert json.loads(report.read_text())["warning"].startswith("eval.accuracy is measured on the test split")
