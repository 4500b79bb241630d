"""Every figure per-image predictions reproduce, tested on the same images (nodeflow.compare.paired_figure):
the figures are the evaluation node's own (macro precision, recall, F-beta), the error rate is the
accuracy's test read the other way, and the randomisation test's p-value is checked against
swapping the two models' predictions image by image, every way, by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeflow.compare import REPRODUCED, figure_of, paired, paired_figure, reproduced
from nodes.engine.metrics import scores

MACRO = ("precision", "recall", "f_beta")


def predictions(seed: int, n: int, classes: int, right_a: float, right_b: float):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, classes, n)
    a = np.where(rng.random(n) < right_a, true, rng.integers(0, classes, n))
    b = np.where(rng.random(n) < right_b, true, rng.integers(0, classes, n))
    return true, a, b


@pytest.mark.parametrize("beta", [1.0, 2.0, 0.5])
def test_the_figures_are_the_evaluation_nodes_own(beta):
    true, a, _ = predictions(0, 300, 5, 0.6, 0.6)
    a[a == 4] = 3  # a class never predicted: its precision is 0, as the node has it
    values = scores(torch.tensor(a), torch.tensor(true), tuple("vwxyz"), beta).values
    for figure in ("accuracy", *MACRO):
        assert figure_of(figure, true, a, 5, beta) == pytest.approx(values[figure], abs=1e-12), figure
    assert figure_of("error_rate", true, a, 5) == pytest.approx(1 - values["accuracy"], abs=1e-12)


def test_which_metrics_per_image_records_reproduce():
    assert [reproduced(m) for m in ("train.val_accuracy", "evaluate.accuracy", "evaluate.f_beta", "errors.error_rate",
                                    "evaluate.test_recall", "train.train_accuracy")] == \
        ["accuracy", "accuracy", "f_beta", "error_rate", "recall", "accuracy"]
    for other in ("evaluate.top5_accuracy", "train.val_loss", "errors.mean_loss", "train.batch_loss",
                  "evaluate.samples"):
        assert reproduced(other) is None, other


def test_the_error_rate_is_the_accuracys_test_read_the_other_way():
    true, a, b = predictions(1, 400, 3, 0.7, 0.85)
    accuracy, error = paired_figure("accuracy", true, a, b, 3), paired_figure("error_rate", true, a, b, 3)
    assert accuracy == paired(true == a, true == b)
    assert (error.p_value, error.low, error.high) == (accuracy.p_value, -accuracy.high, -accuracy.low)
    assert error.delta == pytest.approx(-accuracy.delta) and error.direction == -1
    assert accuracy.verdict == error.verdict == "better" and error.words().startswith("better (-")


def test_the_randomisation_p_value_is_swapping_every_image_both_ways_by_hand():
    true = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1])
    a = np.array([0, 1, 2, 1, 1, 0, 0, 2, 2, 0, 0])
    b = np.array([0, 1, 2, 0, 2, 2, 1, 1, 2, 0, 1])
    differ = np.flatnonzero(a != b)
    for figure in MACRO:
        observed = figure_of(figure, true, b, 3) - figure_of(figure, true, a, 3)
        reached = 0
        for swap in itertools.product((False, True), repeat=len(differ)):
            first, second = a.copy(), b.copy()
            picked = differ[list(swap)]
            first[picked], second[picked] = b[picked], a[picked]
            moved = figure_of(figure, true, second, 3) - figure_of(figure, true, first, 3)
            reached += abs(moved) >= abs(observed) - 1e-12
        found = paired_figure(figure, true, a, b, 3)
        assert found.p_value == pytest.approx(reached / 2 ** len(differ), rel=1e-9), figure
        assert found.low <= found.delta <= found.high


def test_many_images_whose_predictions_differ_are_swapped_at_random_with_a_fixed_seed():
    true, a, b = predictions(2, 3000, 4, 0.7, 0.76)
    found = paired_figure("recall", true, a, b, 4)
    assert found.clear and found.verdict == "better" and 0 < found.p_value < 0.05
    assert found == paired_figure("recall", true, a, b, 4)  # the same runs always get the same numbers
    flipped = paired_figure("recall", true, b, a, 4)
    assert flipped.verdict == "worse" and flipped.p_value == found.p_value


def test_bad_predictions_are_refused_with_what_is_wrong():
    with pytest.raises(ValueError, match="equally long"):
        paired_figure("recall", [0, 1], [0], [1], 2)
    with pytest.raises(ValueError, match="class indices must lie in 0 … 1"):
        paired_figure("recall", [0, 1], [0, 2], [1, 1], 2)
    with pytest.raises(ValueError, match="'loss' is not a figure"):
        paired_figure("loss", [0, 1], [0, 1], [1, 1], 2)


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 4).flatmap(lambda k: st.tuples(
    st.just(k), st.lists(st.tuples(*(st.integers(0, k - 1),) * 3), min_size=1, max_size=40))),
    st.sampled_from(REPRODUCED))
def test_any_predictions_get_one_verdict_with_its_interval_and_p_value(case, figure):
    classes, rows = case
    true, a, b = (np.array(x) for x in zip(*rows))
    found = paired_figure(figure, true, a, b, classes)
    assert 0 <= found.p_value <= 1 and found.low <= found.high
    assert found.a == pytest.approx(figure_of(figure, true, a, classes))
    assert found.b == pytest.approx(figure_of(figure, true, b, classes))
    assert not found.clear or (found.p_value < 0.05 and (found.low > 0 or found.high < 0))
    assert found.verdict == ("no clear difference" if not found.clear else
                             "better" if found.delta * found.direction > 0 else "worse")
    words = found.words()
    assert "95% CI" in words and ("p = " in words or "p < " in words) and "nan" not in words
    mirrored = paired_figure(figure, true, b, a, classes)
    assert mirrored.p_value == pytest.approx(found.p_value) and mirrored.delta == pytest.approx(-found.delta)
