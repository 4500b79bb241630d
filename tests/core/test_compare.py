"""Whether a difference is real (nodeflow.compare): the paired bootstrap interval and McNemar's
exact p-value checked against a direct computation, the words that follow the numbers, runs
scored on other images, the flipped images, and figures in the units people read."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeflow.compare import (compare_splits, direction, interval, paired, percent, points, readable, readable_delta,
                              split_of)
from nodeflow.predictions import SplitPredictions, files_digest


def outcomes(both_right: int, both_wrong: int, lost: int, gained: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-image right/wrong of A and B: ``lost`` images only A gets right, ``gained`` only B, shuffled."""
    a = np.array([True] * both_right + [False] * both_wrong + [True] * lost + [False] * gained)
    b = np.array([True] * both_right + [False] * both_wrong + [False] * lost + [True] * gained)
    order = np.random.default_rng(seed).permutation(len(a))
    return a[order], b[order]


def test_interval_and_p_value_match_a_direct_computation():
    a, b = outcomes(120, 40, 10, 30)
    found = paired(a, b)
    n, lost, gained = 200, 10, 30
    assert (found.images, found.right_to_wrong, found.wrong_to_right) == (n, lost, gained)
    assert found.delta == pytest.approx(0.1)
    # McNemar's exact test, by hand: two-sided binomial tail of the discordant pairs at 1/2
    tail = sum(math.comb(lost + gained, k) for k in range(0, min(lost, gained) + 1)) / 2 ** (lost + gained)
    assert found.p_value == pytest.approx(min(1.0, 2 * tail), rel=1e-9)
    # the paired bootstrap, by hand: resample images, take the 2.5th and 97.5th percentile of the mean difference
    d = b.astype(float) - a.astype(float)
    rng = np.random.default_rng(12345)
    means = d[rng.integers(0, n, (20_000, n))].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    assert found.low == pytest.approx(low, abs=0.008) and found.high == pytest.approx(high, abs=0.008)
    # and the normal approximation for paired proportions agrees with both
    se = math.sqrt(((lost + gained) / n - ((gained - lost) / n) ** 2) / n)
    assert found.low == pytest.approx(found.delta - 1.96 * se, abs=0.01)
    assert found.high == pytest.approx(found.delta + 1.96 * se, abs=0.01)
    assert found.clear and found.verdict == "better"
    assert paired(a, b) == found  # a fixed seed: the same runs always get the same interval


def test_wilson_interval_matches_its_formula():
    got = interval(11, 12)
    z, n, p = 1.959963984540054, 12, 11 / 12
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (got.low, got.high) == (pytest.approx(centre - half), pytest.approx(centre + half))
    assert got.words() == "91.7% (95% CI 65% … 99%, 12 images)"


def test_the_words_follow_the_numbers():
    a, b = outcomes(800, 129, 20, 51)  # 1,000 images, B right on 31 more
    clear = paired(a, b)
    assert clear.words() == (f"better (+3.1 points, 95% CI {points(clear.low, 1000)} … {points(clear.high, 1000)}, "
                             "p < 0.001, 1,000 images)")
    assert re.fullmatch(r"\+\d\.\d", points(clear.low, 1000)) and clear.low > 0
    worse = paired(b, a)
    assert worse.verdict == "worse" and worse.words().startswith("worse (-3.1 points, 95% CI -")
    a, b = outcomes(10, 0, 1, 1)  # 12 images, one flip each way
    unclear = paired(a, b)
    assert not unclear.clear and unclear.verdict == "no clear difference"
    # a tie says its interval and p-value too
    assert re.fullmatch(r"no clear difference on 12 images \(0 points, 95% CI -\d+ … \+\d+, p = 1\)", unclear.words())
    same = paired(a, a)
    assert same.p_value == 1
    assert same.words() == "no clear difference on 12 images (the same images right and wrong: 95% CI 0 … 0, p = 1)"


def test_a_p_value_alone_does_not_make_a_difference_real():
    a, b = outcomes(0, 0, 0, 5)  # five images, all gained: p = 0.0625
    assert paired(a, b).p_value == pytest.approx(0.0625) and not paired(a, b).clear
    a, b = outcomes(900, 96, 0, 4)  # four of 1,000 gained: the interval leans up, McNemar does not
    leaning = paired(a, b)
    assert leaning.low > 0 and not leaning.clear
    assert leaning.words() == (f"no clear difference on 1,000 images (+0.4 points, 95% CI {points(leaning.low, 1000)} … "
                               f"{points(leaning.high, 1000)}, but only 4 images changed: p = 0.12)")
    a, b = outcomes(0, 0, 0, 6)  # six: p = 0.031 and the interval is all above 0
    assert paired(a, b).clear


def split(name: str, files: list[str], true: list[int], predicted: list[int], confidence: list[float],
          classes=("cat", "dog")) -> SplitPredictions:
    return SplitPredictions(name, tuple(classes), files_digest(files), tuple(files), np.array(true),
                            np.array(predicted), np.array(confidence, dtype=np.float32))


def test_flipped_images_are_listed_most_confidently_wrong_first():
    files = [f"/d/img{i}.jpg" for i in range(6)]
    true = [0, 0, 1, 1, 0, 1]
    before = split("validation", files, true, [0, 0, 1, 0, 1, 1], [0.9, 0.8, 0.7, 0.6, 0.95, 0.9])
    after = split("validation", files, true, [1, 1, 1, 1, 0, 1], [0.6, 0.99, 0.7, 0.8, 0.9, 0.9])
    found = compare_splits(before, after)
    assert found["paired"] and found["images"] == 6
    broke = found["flips"]["right_to_wrong"]
    assert broke["count"] == 2 and [r["name"] for r in broke["rows"]] == ["img1.jpg", "img0.jpg"]  # 0.99 before 0.6
    assert broke["rows"][0] == {"file": "/d/img1.jpg", "name": "img1.jpg", "true": "cat", "a": "cat", "b": "dog",
                                "confidence_a": 0.8, "confidence_b": 0.99}
    fixed = found["flips"]["wrong_to_right"]
    assert [r["name"] for r in fixed["rows"]] == ["img4.jpg", "img3.jpg"]  # wrong at 0.95 in A, then 0.6


def test_runs_on_other_images_are_not_paired_and_each_gets_its_own_interval():
    a = split("validation", ["/d/a.jpg", "/d/b.jpg"], [0, 1], [0, 1], [0.9, 0.9])
    b = split("validation", ["/e/a.jpg", "/e/b.jpg", "/e/c.jpg"], [0, 1, 1], [0, 0, 1], [0.9, 0.9, 0.9])
    found = compare_splits(a, b)
    assert not found["paired"] and found["reason"] == "they were scored on other images"
    assert found["words"] == ("cannot be compared image by image (they were scored on other images): "
                              f"{interval(2, 2).words()} → {interval(2, 3).words()}")
    test = split("test", ["/d/a.jpg", "/d/b.jpg"], [0, 1], [0, 1], [0.9, 0.9])
    assert compare_splits(a, test)["reason"] == "one was scored on the validation split, the other on the test split"


def test_figures_in_the_units_people_read():
    assert readable("finetune.trainable_params", 7_604_000) == "7.6 M"
    assert readable("finetune.trainable_params", 13_500_000) == "13.5 M"
    assert readable("train.val_accuracy", 0.9167) == "91.7%" and readable("eval.accuracy", 1.0) == "100%"
    assert readable("train.train_images", 1234) == "1,234" and readable("train.val_loss", 0.56789) == "0.5679"
    assert readable_delta("train.val_accuracy", 1 - 0.9167) == "+8.3 points"
    assert readable_delta("finetune.trainable_params", 5_899_776) == "+5.9 M"
    assert readable_delta("train.val_loss", -0.2283) == "-0.2283"
    assert percent(0.95) == "95%" and readable("x.lr", 1e-5) == "1e-05"


def test_directions_and_splits_of_metrics():
    assert direction("train.val_accuracy") == 1 and direction("eval.f_beta") == 1
    assert direction("train.val_loss") == -1 and direction("errors.error_rate") == -1
    for neutral in ("finetune.trainable_params", "train.validation_images", "eval.samples", "errors.errors", "x.lr"):
        assert direction(neutral) == 0, neutral
    assert split_of("train.val_accuracy") == "validation" and split_of("train.train_loss") == "train"
    assert split_of("eval.accuracy") is None and split_of("eval.accuracy", {"eval.accuracy": "test"}) == "test"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=300))
def test_any_outcomes_give_an_interval_around_the_difference(pairs):
    a, b = (np.array(x) for x in zip(*pairs))
    found = paired(a, b)
    assert -1 <= found.low <= found.delta + 1e-9 and found.delta - 1e-9 <= found.high <= 1
    assert 0 <= found.p_value <= 1
    assert not found.clear or (found.p_value < 0.05 and (found.low > 0 or found.high < 0))
    assert isinstance(found.words(), str) and "nan" not in found.words()
