"""Compare's verdicts decide its colours: every figure measured on the same images (a trainer's
validation accuracy, an evaluation's accuracy, precision, recall and F-beta, an error analysis's
error rate on that trainer's model) is judged by the same paired test on those images, so a change
of a few images is grey for all of them, and a clear one is red (or green) for all of them, by the
metric's direction; figures no per-image record reproduces (a loss, a training accuracy) are grey
and say "untested". Every tested figure says its interval and p-value, tie or not."""

from __future__ import annotations

import numpy as np
import pytest

from nodeflow.cli import _metric_change
from nodeflow.compare import UNTESTED, compare_runs, figure_of
from nodeflow.node import Registry
from nodeflow.predictions import SplitPredictions, files_digest
from nodeflow.runs import metric_deltas
from nodeflow.ui.runs_panel import verdict_colour

CLASSES = ("cat", "dog", "fox")
#: the figures the per-image records of a split reproduce, and those they do not
TESTED = ("train.val_accuracy", "evaluate.accuracy", "evaluate.precision", "evaluate.recall", "evaluate.f_beta",
          "errors.error_rate")
NOT_TESTED = ("train.train_accuracy", "train.val_loss", "train.batch_loss", "evaluate.loss", "errors.mean_loss")
COUNTS = ("train.validation_images", "evaluate.samples", "errors.samples", "errors.errors")


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.discover(plugins=False)


def graph() -> dict:
    nodes = [{"id": "train", "type": "train.trainer", "params": {}},
             {"id": "evaluate", "type": "eval.evaluate", "params": {"split": "test"}},
             {"id": "errors", "type": "eval.errors", "params": {"split": "validation", "overlays": 0}}]
    edges = [{"source": "train", "source_port": "model", "target": target, "target_port": "model"}
             for target in ("evaluate", "errors")]
    return {"format": "nodeflow.graph", "version": 1, "name": "g", "nodes": nodes, "edges": edges}


def outcome(split: str, n: int, wrong: list[int]) -> SplitPredictions:
    """``n`` images of three classes, those in ``wrong`` predicted as the next class."""
    files = [f"/data/{split}/{i:03d}.png" for i in range(n)]
    true = np.arange(n) % 3
    predicted = true.copy()
    predicted[wrong] = (true[wrong] + 1) % 3
    return SplitPredictions(split, CLASSES, files_digest(files), tuple(files), true, predicted,
                            np.full(n, 0.9, dtype=np.float32))


def run(run_id: int, val: SplitPredictions, test: SplitPredictions, drift: float) -> tuple[dict, dict]:
    """A run record whose figures are its predictions' (the losses and the training accuracy move by
    ``drift``, as they would), and its predictions by cache key."""
    keys = {node: f"{node}{run_id}" for node in ("train", "evaluate", "errors")}

    def figure(name, split):
        return figure_of(name, split.true, split.predicted, len(CLASSES))

    nodes = {
        "train": {"status": "ran", "key": keys["train"], "metrics": {
            "val_accuracy": figure("accuracy", val), "val_loss": 0.5 + drift, "train_accuracy": 0.9 - drift,
            "train_loss": 0.3 + drift, "batch_loss": 0.2 + drift, "validation_images": len(val)}},
        "evaluate": {"status": "ran", "key": keys["evaluate"], "metrics": {
            **{name: figure(name, test) for name in ("accuracy", "precision", "recall", "f_beta")},
            "loss": 0.6 + drift, "samples": len(test)}},
        "errors": {"status": "ran", "key": keys["errors"], "metrics": {
            "error_rate": figure("error_rate", val), "errors": float((val.true != val.predicted).sum()),
            "samples": len(val), "mean_loss": 0.5 + drift}},  # no records of its own: its model's are read
    }
    record = {"id": run_id, "graph": graph(), "nodes": nodes}
    return record, {keys["train"]: {"validation": val}, keys["evaluate"]: {"test": test}}


def compared(registry, wrong_a: list[int], wrong_b: list[int], n: int = 20) -> dict:
    run_a, kept_a = run(1, outcome("validation", n, wrong_a), outcome("test", n, wrong_a), 0.0)
    run_b, kept_b = run(2, outcome("validation", n, wrong_b), outcome("test", n, wrong_b), 0.05)
    kept = {**kept_a, **kept_b}
    diff = {"a": 1, "b": 2, "params": {}, "metrics": metric_deltas(run_a["nodes"], run_b["nodes"]),
            "changed_nodes": ["train", "evaluate", "errors"]}
    return compare_runs(diff, run_a, run_b, lambda key: kept.get(key, {}), registry)


def colours(found: dict) -> dict[str, str]:
    return {name: verdict_colour(m) for name, m in found["metrics"].items()}


def test_a_few_images_moving_are_grey_for_every_figure_on_them(registry):
    found = compared(registry, wrong_a=[0, 1], wrong_b=[0, 1, 2])  # one more image wrong of 20: -5 points
    metrics, colour = found["metrics"], colours(found)
    for name in TESTED:
        m = metrics[name]
        assert m["delta"] and m["verdict"] == "no clear difference", (name, m)
        assert colour[name] == "text-grey-8", name
        assert m["judged"] == m["comparison"]["words"] and "95% CI" in m["judged"] and "p = " in m["judged"], name
        low, high = m["comparison"]["ci"]
        assert low <= 0 <= high and m["comparison"]["p_value"] == 1.0
    assert metrics["train.val_accuracy"]["judged"] == \
        "no clear difference on 20 images (-5 points, 95% CI -15 … 0, p = 1)"
    assert metrics["errors.error_rate"]["judged"] == \
        "no clear difference on 20 images (+5 points, 95% CI 0 … +15, p = 1)"
    for name in NOT_TESTED:  # moved as much, but nothing tests them: grey, and said so
        assert metrics[name]["delta"] and metrics[name]["verdict"] == "untested" and colour[name] == "text-grey-8"
        assert metrics[name]["judged"] == UNTESTED and "comparison" not in metrics[name]
    for name in COUNTS:
        assert "verdict" not in metrics[name] and colour[name] == "text-grey-8"
    line = _metric_change("evaluate.recall", metrics["evaluate.recall"], found)
    assert line.endswith(f"on 20 test images: {metrics['evaluate.recall']['judged']}")


@pytest.mark.parametrize("worse", [True, False], ids=["loss", "gain"])
def test_a_clear_change_has_one_colour_for_every_figure_on_those_images(registry, worse):
    few, many = [0], list(range(0, 40, 3))[:12]  # 1 against 12 of 40 images wrong
    found = compared(registry, *((few, many) if worse else (many, few)), n=40)
    metrics, colour = found["metrics"], colours(found)
    verdict, shade = ("worse", "text-negative") if worse else ("better", "text-positive")
    for name in TESTED:
        m = metrics[name]
        assert (m["verdict"], colour[name]) == (verdict, shade), (name, m["judged"])
        assert m["comparison"]["p_value"] < 0.05 and f"{verdict} (" in m["judged"] and "p " in m["judged"]
    assert metrics["errors.error_rate"]["delta"] * metrics["train.val_accuracy"]["delta"] < 0  # up when accuracy falls
    for name in NOT_TESTED:
        assert metrics[name]["verdict"] == "untested" and colour[name] == "text-grey-8"
