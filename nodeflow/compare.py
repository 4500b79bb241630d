"""Whether one model is really better than another, and figures people can read.

Two models scored on the same images are compared image by image (:mod:`nodeflow.predictions`):
the difference of their accuracies gets a 95% confidence interval from a paired bootstrap over the
images, and McNemar's exact test asks whether the images only one of them gets right lean one way
more than chance would. Both come from ``scipy.stats`` (``bootstrap``, ``binomtest``). A difference
is called real only when both agree: p below 0.05 and an interval that leaves out 0. Models scored
on different images (another split, another data set) cannot be paired; each accuracy then gets
its own interval (Wilson's, ``binomtest(...).proportion_ci``).

Every other figure the per-image predictions reproduce is judged the same way on the same images:
the error rate (the accuracy's test, read the other way), and the macro precision, recall and F-beta
(the paired bootstrap of their difference, and a paired randomisation test: each image's two
predictions swapped at random, of which McNemar's test is the exact case for an accuracy). So the
verdict, and with it the colour, of every figure measured on those images comes from one test; a
figure no per-image record reproduces (a loss, a training accuracy) is "untested", never better or
worse.

The words follow the numbers, the interval and p-value always said: "better (+3.1 points, 95% CI
+1.2 … +5.0, p = 0.002, 1,000 images)" or "no clear difference on 12 images (+8 points, 95% CI −8 …
+25, p = 0.62)".

No torch here: predictions are numpy arrays.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from nodeflow.predictions import SplitPredictions

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
#: the bootstrap's seed: the same two runs always get the same interval
SEED = 0
RESAMPLES = 9999
#: at most this many resampled images per bootstrap (resamples × images): large splits get fewer
#: resamples (at least 999), whose interval is narrow anyway
MAX_DRAWS = 10_000_000
#: the splits a comparison lists, in this order (others after them)
SPLIT_ORDER = ("validation", "test", "train")
#: the metric-name prefixes that say the split (``val_accuracy``) when the node does not declare it
PREFIXES = {"val": "validation", "validation": "validation", "test": "test", "train": "train"}
#: names of metrics that count things: shown as counts, never coloured better or worse
COUNTS = ("samples", "errors", "epochs", "steps", "images", "params")
#: flipped images listed per direction in a comparison (the counts say how many there are)
FLIPS_SHOWN = 50
#: the figures per-image predictions reproduce (by the last words of a metric's name), as the
#: evaluation node computes them: precision, recall and F-beta are macro averages over the classes
REPRODUCED = ("accuracy", "error_rate", "precision", "recall", "f_beta")
#: what a figure no per-image record reproduces is judged: not at all
UNTESTED = "untested (no per-image record reproduces it)"
#: the randomisation test sums every arrangement of swapped images (how many of each kind) when there
#: are at most 2^EXACT_SWAPS of them; beyond, it draws arrangements at random
EXACT_SWAPS = 12
#: values per batch of a resampling (rows × kinds of images, rows × classes): bounds its memory
BATCH_VALUES = 2_000_000
#: at most this many counts drawn per resampling of kinds of images (resamples × kinds): many kinds (many
#: classes) get fewer resamples (at least 999), as a large split does
KIND_DRAWS = 1_000_000
#: an indicator of kinds × classes up to this size is a dense matrix (fast products), else a sparse one
DENSE_VALUES = 4_000_000


# -- which metric is which -------------------------------------------------------------------------
def base(metric: str) -> str:
    """``node.val_accuracy`` -> ``val_accuracy``."""
    return metric.rsplit(".", 1)[-1].lower()


def is_count(metric: str) -> bool:
    name = base(metric)
    return name in COUNTS or name.endswith(tuple(f"_{c}" for c in COUNTS))


def direction(metric: str) -> int:
    """1 when higher is better (accuracy, precision, recall, F-beta), -1 when lower is (a loss, an
    error rate), 0 for the rest: counts, parameters, learning rates."""
    name = base(metric)
    if is_count(metric):
        return 0
    if "loss" in name or "error" in name:
        return -1
    if any(word in name for word in ("accuracy", "precision", "recall", "f_beta", "f1")):
        return 1
    return 0


def is_share(metric: str) -> bool:
    """A share of images (accuracy, precision, an error rate), shown as a percentage."""
    name = base(metric)
    return not is_count(metric) and any(w in name for w in ("accuracy", "precision", "recall", "f_beta", "error_rate"))


def is_paired_accuracy(metric: str) -> bool:
    """An accuracy that per-image predictions reproduce (top-1; a top-k accuracy is not)."""
    name = base(metric)
    return (name == "accuracy" or name.endswith("_accuracy")) and not name.startswith("top")


def reproduced(metric: str) -> str | None:
    """Which figure of :data:`REPRODUCED` a metric is (``val_accuracy`` -> accuracy, ``f_beta``),
    alone or after a split's prefix; None for the rest (a loss, a top-k accuracy, ``mean_loss``)."""
    name = base(metric)
    if name in REPRODUCED:
        return name
    prefix, _, rest = name.partition("_")
    return rest if rest in REPRODUCED and prefix in PREFIXES else None


def split_of(metric: str, declared: Mapping[str, str] | None = None) -> str | None:
    """The split ``NODE.METRIC`` was measured on: as its node declares (``Node.measures``), else as
    its name says (``val_…``, ``test_…``, ``train_…``)."""
    if declared and metric in declared:
        return declared[metric]
    prefix = base(metric).split("_", 1)[0]
    return PREFIXES.get(prefix) if "_" in base(metric) else None


def metric_splits(graph_doc: Mapping[str, Any] | None, registry: Any) -> dict[str, str]:
    """``NODE.METRIC`` -> split for every metric the nodes of a graph document declare
    (``Node.measures``); nodes of unknown types or with params that no longer validate are left out."""
    found: dict[str, str] = {}
    for node in (graph_doc or {}).get("nodes", []):
        try:
            cls = registry.get(node["type"])
            params = cls.Params.model_validate(node.get("params") or {})
            measured = cls.measures(params)
        except Exception:  # an old run's graph: a type or a param that is gone
            continue
        found.update({f"{node['id']}.{name}": split for name, split in measured.items()})
    return found


def images_of(node_metrics: Mapping[str, Any], split: str | None) -> int | None:
    """How many images a node's figures on ``split`` stand on: its ``SPLIT_images`` metric, else
    its ``samples``."""
    for name in ((f"{split}_images",) if split else ()) + ("samples",):
        value = node_metrics.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return int(value)
    return None


# -- numbers as people read them -------------------------------------------------------------------
def percent(share: float, decimals: int = 1) -> str:
    """0.9167 -> 91.7%, 1 -> 100%."""
    text = f"{share * 100:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text + "%"


def count(value: float) -> str:
    """7604000 -> 7.6 M, 12 -> 12, 4321 -> 4,321."""
    for size, unit in ((1e9, "G"), (1e6, "M")):
        if abs(value) >= size:
            text = f"{value / size:.1f}".rstrip("0").rstrip(".")
            return f"{text} {unit}"
    return f"{int(round(value)):,}" if float(value).is_integer() else f"{value:.4g}"


def readable(metric: str, value: Any) -> str:
    """A metric's value in the units people read: shares as percentages, counts with M and commas."""
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    if is_share(metric):
        return percent(value)
    if is_count(metric):
        return count(value)
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def readable_delta(metric: str, delta: float) -> str:
    """+8.3 points, +5.9 M, -0.2283."""
    if is_share(metric):
        text = f"{delta * 100:+.1f}"
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return text + " points"
    if is_count(metric):
        return ("+" if delta > 0 else "") + count(delta)
    return f"{delta:+.4g}"


def images_text(n: int) -> str:
    return f"{n:,} image{'s' if n != 1 else ''}"


def points(share: float, images: int) -> str:
    """A difference of shares in points, as precise as the images allow (one image of 12 is 8
    points: no decimals; of 1,000, 0.1 point: one decimal)."""
    decimals = max(0, math.ceil(math.log10(max(images, 1) / 100)))
    value = round(share * 100, decimals)
    if value == 0:
        return "0"
    return f"{value:+.{decimals}f}"


def p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


# -- the statistics ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Interval:
    """One model's accuracy on its own images, with a 95% interval (Wilson)."""

    correct: int
    images: int
    low: float
    high: float

    @property
    def value(self) -> float:
        return self.correct / self.images if self.images else math.nan

    def words(self) -> str:
        return f"{percent(self.value)} (95% CI {percent(self.low, 0)} … {percent(self.high, 0)}, " \
               f"{images_text(self.images)})"

    def to_json(self) -> dict[str, Any]:
        return {"accuracy": self.value, "correct": self.correct, "images": self.images,
                "ci": [self.low, self.high], "words": self.words()}


def interval(correct: int, images: int) -> Interval:
    if images == 0:
        return Interval(0, 0, math.nan, math.nan)
    ci = stats.binomtest(int(correct), int(images)).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return Interval(int(correct), int(images), float(ci.low), float(ci.high))


@dataclass(frozen=True)
class Difference:
    """B's accuracy minus A's on the same images: the interval of the difference (paired
    bootstrap) and McNemar's exact p-value on the images only one of them gets right."""

    images: int
    a: float
    b: float
    low: float
    high: float
    p_value: float
    #: images A gets right and B wrong, and the other way round
    right_to_wrong: int
    wrong_to_right: int
    #: 1 when a higher figure is better (an accuracy), -1 when a lower one is (an error rate)
    direction: int = 1
    #: the figure compared (one of :data:`REPRODUCED`)
    figure: str = "accuracy"

    @property
    def delta(self) -> float:
        return self.b - self.a

    @property
    def clear(self) -> bool:
        """Real, as far as these images tell: p < 0.05 and the interval leaves out 0."""
        return self.p_value < ALPHA and (self.low > 0 or self.high < 0)

    @property
    def verdict(self) -> str:
        """better or worse (by the figure's direction: an error rate going down is better), or no
        clear difference."""
        if not self.clear:
            return "no clear difference"
        return "better" if self.delta * self.direction > 0 else "worse"

    def words(self) -> str:
        """The verdict with the difference, its interval and its p-value, tie or not."""
        n = self.images
        ci = f"95% CI {points(self.low, n)} … {points(self.high, n)}"
        if self.clear:
            return f"{self.verdict} ({points(self.delta, n)} points, {ci}, {p_text(self.p_value)}, {images_text(n)})"
        unclear = f"no clear difference on {images_text(n)}"
        if self.right_to_wrong == self.wrong_to_right == 0 and self.delta == self.low == self.high == 0:
            return f"{unclear} (the same images right and wrong: {ci}, {p_text(self.p_value)})"
        if self.low > 0 or self.high < 0:  # the resampled interval leans one way, the test on the swaps does not
            changed = self.right_to_wrong + self.wrong_to_right
            return (f"{unclear} ({points(self.delta, n)} points, {ci}, but only {changed} image"
                    f"{'s' if changed != 1 else ''} changed: {p_text(self.p_value)})")
        return f"{unclear} ({points(self.delta, n)} points, {ci}, {p_text(self.p_value)})"

    def to_json(self) -> dict[str, Any]:
        return {"images": self.images, "a": self.a, "b": self.b, "delta": self.delta, "ci": [self.low, self.high],
                "p_value": self.p_value, "right_to_wrong": self.right_to_wrong,
                "wrong_to_right": self.wrong_to_right, "clear": self.clear, "verdict": self.verdict,
                "figure": self.figure, "direction": self.direction, "words": self.words()}


def _outcomes(correct_a: Any, correct_b: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"paired: two equally long, non-empty lists of outcomes are needed, not {a.shape} and "
                         f"{b.shape}")
    return a, b


def mcnemar(correct_a: Any, correct_b: Any) -> float:
    """McNemar's exact p-value: are the images only B gets right more (or fewer) than the ones only
    A gets right, beyond what chance gives to a coin? (Cheap: no resampling.)"""
    a, b = _outcomes(correct_a, correct_b)
    lost, gained = int((a & ~b).sum()), int((~a & b).sum())
    return 1.0 if lost + gained == 0 else float(stats.binomtest(gained, lost + gained, 0.5).pvalue)


def paired(correct_a: Any, correct_b: Any) -> Difference:
    """Compare two models by which of the same images (in the same order) each got right."""
    a, b = _outcomes(correct_a, correct_b)
    return _paired(np.packbits(a).tobytes(), np.packbits(b).tobytes(), len(a))


@functools.lru_cache(maxsize=512)
def _paired(packed_a: bytes, packed_b: bytes, n: int) -> Difference:
    """:func:`paired` on bit-packed outcomes, remembered: the same two runs are compared again on
    every look at a sweep's results, and their outcomes never change."""
    a = np.unpackbits(np.frombuffer(packed_a, dtype=np.uint8), count=n).astype(bool)
    b = np.unpackbits(np.frombuffer(packed_b, dtype=np.uint8), count=n).astype(bool)
    lost, gained = int((a & ~b).sum()), int((~a & b).sum())
    delta = (gained - lost) / n
    if lost + gained == 0:
        return Difference(n, float(a.mean()), float(b.mean()), 0.0, 0.0, 1.0, 0, 0)
    p = mcnemar(a, b)
    if n < 2:
        low = high = delta
    else:
        per_image = b.astype(np.int8) - a.astype(np.int8)
        resamples = max(999, min(RESAMPLES, MAX_DRAWS // n))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a sample of one value: its interval is that value
            result = stats.bootstrap((per_image,), np.mean, n_resamples=resamples, batch=max(1, 2_000_000 // n),
                                     vectorized=True, method="percentile", confidence_level=CONFIDENCE,
                                     rng=np.random.default_rng(SEED))
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return Difference(n, float(a.mean()), float(b.mean()), low, high, p, lost, gained)


def _figure(figure: str, hits: np.ndarray, made: np.ndarray, actual: np.ndarray, images: np.ndarray,
            beta: float) -> np.ndarray:
    """One figure per row from each class's true positives (``hits``), predictions (``made``) and
    images (``actual``), rows × classes, as ``nodes.engine.metrics.scores`` computes it: precision
    and recall are 0 for a class never predicted or never present, F-beta 0 where both are 0, and all
    three are averaged over the classes."""
    if figure in ("accuracy", "error_rate"):
        accuracy = hits.sum(1) / images
        return accuracy if figure == "accuracy" else 1.0 - accuracy
    precision = np.divide(hits, made, out=np.zeros_like(hits), where=made > 0)
    recall = np.divide(hits, actual, out=np.zeros_like(hits), where=actual > 0)
    if figure == "precision":
        return precision.mean(1)
    if figure == "recall":
        return recall.mean(1)
    b2 = beta * beta
    denom = b2 * precision + recall
    return np.divide((1 + b2) * precision * recall, denom, out=np.zeros_like(hits), where=denom > 0).mean(1)


class _Kinds:
    """The images of a split grouped by what they are and what each model said of them (true
    class, A's prediction, B's prediction), with how many there are of each kind. Every figure of
    :data:`REPRODUCED` is a function of these counts, so resampling the images (the bootstrap) or
    swapping the two models' predictions on them (the randomisation test) is a draw of counts per
    kind, whatever the number of images."""

    def __init__(self, true: np.ndarray, a: np.ndarray, b: np.ndarray, classes: int) -> None:
        from scipy import sparse

        kinds, self.count = np.unique((true * classes + a) * classes + b, return_counts=True)
        self.true, self.a, self.b = kinds // (classes * classes), kinds // classes % classes, kinds % classes
        self.classes = classes
        rows = np.arange(len(kinds))

        def onto(labels: np.ndarray, where: np.ndarray | None = None) -> Any:  # kinds × classes, one 1 a row
            where = np.ones(len(kinds), dtype=bool) if where is None else where
            matrix = sparse.csr_matrix((np.ones(int(where.sum())), (rows[where], labels[where])),
                                       shape=(len(kinds), classes))
            return matrix.toarray() if len(kinds) * classes <= DENSE_VALUES else matrix

        #: resamples for these kinds (:data:`KIND_DRAWS`)
        self.resamples = max(999, min(RESAMPLES, KIND_DRAWS // len(kinds)))
        self.actual = onto(self.true)
        self.hits = {side: onto(self.true, labels == self.true) for side, labels in (("a", self.a), ("b", self.b))}
        self.made = {side: onto(labels) for side, labels in (("a", self.a), ("b", self.b))}

    def figures(self, figure: str, beta: float, kept: np.ndarray, swapped: np.ndarray | None = None,
                side: str = "a") -> np.ndarray:
        """``figure`` of model ``side`` per row of counts per kind: ``kept`` images with their own
        prediction, ``swapped`` ones with the other model's."""
        other = "b" if side == "a" else "a"
        hits, made = kept @ self.hits[side], kept @ self.made[side]
        total = kept
        if swapped is not None:
            hits, made, total = hits + swapped @ self.hits[other], made + swapped @ self.made[other], kept + swapped
        return _figure(figure, np.asarray(hits, dtype=np.float64), np.asarray(made, dtype=np.float64),
                       np.asarray(total @ self.actual, dtype=np.float64), total.sum(1), beta)


def figure_of(figure: str, true: Any, predicted: Any, classes: int, beta: float = 1.0) -> float:
    """A figure of :data:`REPRODUCED` of one model's predictions on a split."""
    true, predicted = np.asarray(true, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    kinds = _Kinds(true, predicted, predicted, classes)
    return float(kinds.figures(figure, beta, kinds.count[None].astype(np.float64))[0])


def paired_figure(figure: str, true: Any, predicted_a: Any, predicted_b: Any, classes: int,
                  beta: float = 1.0) -> Difference:
    """Compare two models' ``figure`` (one of :data:`REPRODUCED`) on the same images, in the same
    order, as :func:`paired` compares their accuracies: an accuracy by :func:`paired`, an error rate
    by the same test read the other way (lower is better); precision, recall and F-beta (macro,
    with ``beta``) by a paired bootstrap of their difference and a paired randomisation test."""
    if figure not in REPRODUCED:
        raise ValueError(f"'{figure}' is not a figure per-image predictions reproduce ({', '.join(REPRODUCED)})")
    true, a, b = (np.asarray(x, dtype=np.int64) for x in (true, predicted_a, predicted_b))
    if not (true.shape == a.shape == b.shape and true.ndim == 1 and len(true)):
        raise ValueError(f"paired: three equally long, non-empty lists are needed, not {true.shape}, {a.shape} and "
                         f"{b.shape}")
    if classes < 1 or max(true.max(), a.max(), b.max()) >= classes or min(true.min(), a.min(), b.min()) < 0:
        raise ValueError(f"paired: class indices must lie in 0 … {classes - 1}")
    if figure in ("accuracy", "error_rate"):
        found = paired(true == a, true == b)
        if figure == "accuracy":
            return found
        return replace(found, a=1.0 - found.a, b=1.0 - found.b, low=-found.high, high=-found.low, direction=-1,
                       figure="error_rate")
    return _paired_figure(figure, true.tobytes(), a.tobytes(), b.tobytes(), int(classes), float(beta))


@functools.lru_cache(maxsize=512)
def _paired_figure(figure: str, true_bytes: bytes, a_bytes: bytes, b_bytes: bytes, classes: int,
                   beta: float) -> Difference:
    """:func:`paired_figure` of a macro figure, on the predictions' bytes, remembered as :func:`_paired` is.
    The interval: images resampled with replacement (a draw of counts per kind, :attr:`_Kinds.resamples` times), the
    2.5th and 97.5th percentile of B's figure minus A's; the p-value: :func:`_swapped_p`."""
    true, a, b = (np.frombuffer(x, dtype=np.int64) for x in (true_bytes, a_bytes, b_bytes))
    n = len(true)
    kinds = _Kinds(true, a, b, classes)
    counts = kinds.count[None].astype(np.float64)
    value_a, value_b = (float(kinds.figures(figure, beta, counts, side=side)[0]) for side in ("a", "b"))
    lost, gained = int(((true == a) & (true != b)).sum()), int(((true != a) & (true == b)).sum())
    if np.array_equal(a, b):
        return Difference(n, value_a, value_b, 0.0, 0.0, 1.0, 0, 0, 1, figure)
    p = _swapped_p(figure, kinds, beta, value_b - value_a)
    rng, rows = np.random.default_rng(SEED), max(1, BATCH_VALUES // max(len(kinds.count), classes))
    moved = []
    for start in range(0, kinds.resamples, rows):
        drawn = rng.multinomial(n, kinds.count / n, size=min(rows, kinds.resamples - start)).astype(np.float64)
        moved.append(kinds.figures(figure, beta, drawn, side="b") - kinds.figures(figure, beta, drawn, side="a"))
    low, high = (float(x) for x in np.percentile(np.concatenate(moved), [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)]))
    return Difference(n, value_a, value_b, low, high, p, lost, gained, 1, figure)


def _swapped_p(figure: str, kinds: _Kinds, beta: float, observed: float) -> float:
    """The paired randomisation test's p-value: how likely swapping the two models' predictions on
    each image with probability 1/2 moves the figure at least as far as observed, either way. Only
    images the two models predict differently can change; how many of each kind are swapped is
    binomial, summed over every arrangement when there are at most 2^EXACT_SWAPS of them, else drawn
    (with the fixed seed) as many times as the bootstrap resamples."""
    from itertools import product

    differ = np.flatnonzero(kinds.a != kinds.b)
    if not len(differ):
        return 1.0
    # drawn so that comparing B with A gives the p-value of comparing A with B: the kinds in an order
    # that does not depend on which model is A (by the kind and its mirror image, then by count), and
    # the images swapped counted from one of the two (a kind the other way round draws how many stay)
    c = kinds.classes
    code, mirror = (kinds.true * c + kinds.a) * c + kinds.b, (kinds.true * c + kinds.b) * c + kinds.a
    differ = differ[np.lexsort((code[differ], kinds.count[differ], np.minimum(code, mirror)[differ]))]
    turned = code[differ] > mirror[differ]
    counts = kinds.count.astype(np.float64)
    ways = 1
    for count in kinds.count[differ]:  # in Python's integers: the product of many counts passes 64 bits
        ways *= int(count) + 1

    def reached(swapped_counts: np.ndarray) -> np.ndarray:
        swapped = np.zeros((len(swapped_counts), len(counts)))
        swapped[:, differ] = swapped_counts
        kept = counts[None] - swapped
        moved = kinds.figures(figure, beta, kept, swapped, "b") - kinds.figures(figure, beta, kept, swapped, "a")
        return np.abs(moved) >= abs(observed) - 1e-12

    if ways <= 2 ** EXACT_SWAPS:
        arrangements = np.array(list(product(*(range(int(c) + 1) for c in kinds.count[differ]))), dtype=np.float64)
        chance = np.prod(stats.binom.pmf(arrangements, kinds.count[differ], 0.5), axis=1)
        return float(min(1.0, chance[reached(arrangements)].sum()))
    rng, rows = np.random.default_rng(SEED), max(1, BATCH_VALUES // max(len(counts), kinds.classes))
    hits = 0
    for start in range(0, kinds.resamples, rows):
        drawn = rng.binomial(kinds.count[differ], 0.5, size=(min(rows, kinds.resamples - start), len(differ)))
        drawn[:, turned] = kinds.count[differ][turned] - drawn[:, turned]
        hits += int(reached(drawn.astype(np.float64)).sum())
    return (hits + 1) / (kinds.resamples + 1)


def unpairable(a: SplitPredictions, b: SplitPredictions) -> str | None:
    """Why two models' predictions cannot be compared image by image; None when they can."""
    if a.split != b.split:
        return f"one was scored on the {a.split} split, the other on the {b.split} split"
    if a.digest != b.digest:
        return "they were scored on other images"
    if a.classes != b.classes:
        return "their classes differ"
    if not np.array_equal(a.true, b.true):
        return "the images carry other labels"
    return None


def compare_splits(a: SplitPredictions, b: SplitPredictions) -> dict[str, Any]:
    """Two models' predictions on a split: paired when they scored the same images (with the
    images that flipped), else each accuracy with its own interval and the reason they cannot be
    paired."""
    why = unpairable(a, b)
    if why is not None:
        ia, ib = interval(int(a.correct.sum()), len(a)), interval(int(b.correct.sum()), len(b))
        return {"paired": False, "reason": why, "a": ia.to_json(), "b": ib.to_json(),
                "words": f"cannot be compared image by image ({why}): {ia.words()} → {ib.words()}"}
    difference = paired(a.correct, b.correct)
    return {"paired": True, **difference.to_json(), "flips": flips(a, b)}


def flips(a: SplitPredictions, b: SplitPredictions, shown: int = FLIPS_SHOWN) -> dict[str, Any]:
    """The images that went right → wrong from A to B (most confidently wrong in B first) and
    wrong → right (most confidently wrong in A first)."""

    def rows(indices: np.ndarray, confidence: np.ndarray) -> dict[str, Any]:
        order = indices[np.argsort(-confidence[indices], kind="stable")]
        return {"count": len(indices), "rows": [
            {"file": a.files[i], "name": Path(a.files[i]).name, "true": a.classes[a.true[i]],
             "a": a.classes[a.predicted[i]], "b": b.classes[b.predicted[i]],
             "confidence_a": round(float(a.confidence[i]), 3), "confidence_b": round(float(b.confidence[i]), 3)}
            for i in order[:shown]]}

    return {"right_to_wrong": rows(np.flatnonzero(a.correct & ~b.correct), b.confidence),
            "wrong_to_right": rows(np.flatnonzero(~a.correct & b.correct), a.confidence)}


# -- two runs ----------------------------------------------------------------------------------------
def _split_rank(split: str) -> tuple[int, str]:
    return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), split)


def compare_runs(diff: dict[str, Any], run_a: dict[str, Any], run_b: dict[str, Any],
                 predictions_of: Callable[[str | None], dict[str, SplitPredictions]],
                 registry: Any = None) -> dict[str, Any]:
    """``RunStore.diff`` of two runs with what the numbers mean: each metric's direction, split,
    image counts and readable text, and, for every node whose result changed and that kept
    per-image predictions in both runs, a comparison per split (:func:`compare_splits`).

    Every metric with a direction and a value in both runs gets a ``verdict`` and says it in
    ``judged``: a figure the per-image records of its split reproduce (:data:`REPRODUCED`: the
    node's own, or those of the node that made the model it scored) is tested on those images
    (:func:`paired_figure`; its ``comparison`` holds the interval and p-value, tie or not) and is
    better, worse or no clear difference; any other is "untested". The colour of a metric follows
    its verdict alone. With a ``registry``, each flipped image links to its confusion cell in run
    B's error analysis of that model and split, if it has one."""
    splits = {**metric_splits(run_a.get("graph"), registry), **metric_splits(run_b.get("graph"), registry)} \
        if registry is not None else {}
    comparisons: list[dict[str, Any]] = []
    by_split: dict[tuple[str, str], dict[str, Any]] = {}
    seen: dict[tuple[str, bytes, bytes], dict[str, Any]] = {}
    changed = set(diff["changed_nodes"])
    kept: dict[str | None, dict[str, SplitPredictions]] = {}

    def kept_by(run: dict[str, Any], node: str | None) -> dict[str, SplitPredictions]:
        key = (run["nodes"].get(node) or {}).get("key") if node else None
        if key not in kept:
            kept[key] = predictions_of(key) if key else {}
        return kept[key]

    for node in [n for n in run_b["nodes"] if n in changed]:  # in the order the run went
        before, after = kept_by(run_a, node), kept_by(run_b, node)
        for split in sorted(set(before) & set(after), key=_split_rank):
            a, b = before[split], after[split]
            if not len(a) or not len(b):
                continue
            same = (a.digest + b.digest, a.predicted.tobytes() + a.confidence.tobytes(),
                    b.predicted.tobytes() + b.confidence.tobytes())
            if same in seen:  # the same models on the same images (an evaluation of a trainer's model)
                seen[same]["also"].append(node)
                by_split[(node, split)] = seen[same]
                continue
            entry = {"node": node, "also": [], "split": split, "held_out": split == "test", **compare_splits(a, b)}
            if entry.get("flips") and registry is not None:
                _link_cells(entry, run_b.get("graph") or {}, registry, run_b.get("id"))
            comparisons.append(entry)
            seen[same] = by_split[(node, split)] = entry
    model_of = [_model_sources(run.get("graph")) for run in (run_a, run_b)]
    metrics = {}
    for name, m in diff["metrics"].items():
        node = name.partition(".")[0]
        split = split_of(name, splits)
        counts = {side: None if is_count(name) else images_of(((run["nodes"].get(node) or {}).get("metrics") or {}),
                                                               split)
                  for side, run in (("a", run_a), ("b", run_b))}
        entry = {**m, "direction": direction(name), "split": split, "images": counts,
                 "text": f"{readable(name, m['a'])} → {readable(name, m['b'])}"
                         + (f" ({readable_delta(name, m['delta'])})" if m["delta"] else "")}
        if entry["direction"] and m["delta"] is not None:
            own = (kept_by(run_a, node).get(split or ""), kept_by(run_b, node).get(split or ""))
            made = (kept_by(run_a, model_of[0].get(node)).get(split or ""),
                    kept_by(run_b, model_of[1].get(node)).get(split or ""))
            betas = tuple(_param(run, node, "beta", registry, 1.0) for run in (run_a, run_b))
            entry.update(_judge(name, m, own, made, betas, by_split.get((node, split or ""))))
        metrics[name] = entry
    return {**diff, "metrics": metrics, "comparisons": comparisons}


def _judge(name: str, m: dict[str, Any], own: tuple[SplitPredictions | None, SplitPredictions | None],
           made: tuple[SplitPredictions | None, SplitPredictions | None], betas: tuple[float, float],
           split_entry: dict[str, Any] | None) -> dict[str, Any]:
    """A metric's ``verdict``, ``judged`` (its words) and, when tested, ``comparison``: on the
    node's own per-image records of its split, else on those of the node that made the model it
    scored (an error analysis of a trainer's model), which must then reproduce both runs' values."""
    figure = reproduced(name)
    untested = {"verdict": "untested", "judged": UNTESTED}
    records, borrowed = (own, False) if own[0] is not None and own[1] is not None else (made, True)
    a, b = records
    if figure is None or a is None or b is None or not len(a) or not len(b):
        return untested
    why = unpairable(a, b)
    if why is not None:  # scored on other images: each figure alone, nothing tested
        found = compare_splits(a, b)
        return {"verdict": "untested", "judged": found["words"], "comparison": found}
    if figure == "f_beta" and betas[0] != betas[1]:
        return {"verdict": "untested", "judged": f"untested (F-beta with β {betas[0]:g}, then {betas[1]:g})"}
    beta, classes = betas[1], len(b.classes)
    if borrowed and any(not isinstance(m[side], (int, float)) or
                        abs(figure_of(figure, r.true, r.predicted, classes, beta) - m[side]) > 1e-6
                        for side, r in (("a", a), ("b", b))):
        return untested  # the model maker's records are not what this node measured
    if figure == "accuracy" and not borrowed and split_entry is not None and split_entry.get("paired"):
        comparison = {k: v for k, v in split_entry.items() if k not in ("flips", "gallery")}  # the split's own
    else:
        comparison = {"paired": True, **paired_figure(figure, a.true, a.predicted, b.predicted, classes,
                                                     beta).to_json()}
    return {"verdict": comparison["verdict"], "judged": comparison["words"], "comparison": comparison}


def _model_sources(graph_doc: Mapping[str, Any] | None) -> dict[str, str]:
    """node -> the node whose model it takes (its ``model`` input), in a graph document."""
    return {e["target"]: e["source"] for e in (graph_doc or {}).get("edges", []) if e.get("target_port") == "model"}


def _param(run: dict[str, Any], node: str, name: str, registry: Any, default: Any) -> Any:
    """A node's param as a run's graph had it (its type's default where the graph leaves it out)."""
    spec = next((n for n in (run.get("graph") or {}).get("nodes", []) if n.get("id") == node), None)
    if spec is None:
        return default
    given = spec.get("params") or {}
    if name in given or registry is None:
        return given.get(name, default)
    try:
        return getattr(registry.get(spec["type"]).Params.model_validate(given), name, default)
    except Exception:  # an old run's graph: a type or a param that is gone
        return default


def compare_run_ids(store: Any, predictions: Any, registry: Any, a: int | str, b: int | str) -> dict[str, Any]:
    """:func:`compare_runs` of runs ``a`` and ``b`` of a run store (``RunStore``), with the
    predictions of a ``PredictionStore``; RunNotFound (a KeyError) for an id that is not a run."""
    return compare_runs(store.diff(a, b), store.get(a), store.get(b), predictions.of, registry)


def _link_cells(entry: dict[str, Any], graph_doc: Mapping[str, Any], registry: Any, run: int | None = None) -> None:
    """Point each flipped image at the confusion cell it now lies in (true class, B's prediction)
    in the gallery of run B's error-analysis node on the same model and split, as run B had it
    (``run``: its stored result, whatever the graph open now says)."""
    gallery = gallery_node(graph_doc, entry["node"], entry["split"], registry)
    entry["gallery"] = gallery
    entry["gallery_run"] = run
    asked = f"?run={run}" if run is not None else ""
    for group in entry["flips"].values():
        for row in group["rows"]:
            row["cell"] = [row["true"], row["b"]]
            row["gallery_url"] = None if gallery is None else \
                f"/api/errors/{_quoted(gallery)}/cells/{_quoted(row['true'])}/{_quoted(row['b'])}{asked}"


def _quoted(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def gallery_node(graph_doc: Mapping[str, Any], node: str, split: str, registry: Any) -> str | None:
    """The node of ``graph_doc`` that shows confusion-cell galleries (its type has ``cell_gallery``)
    of the model ``node`` made or scored, on ``split``."""
    nodes = {n["id"]: n for n in graph_doc.get("nodes", [])}
    edges = graph_doc.get("edges", [])
    model_of = {e["target"]: e["source"] for e in edges if e.get("target_port") == "model"}
    made = {node, model_of.get(node)} - {None}
    for spec in nodes.values():
        if model_of.get(spec["id"]) not in made or spec["id"] == node:
            continue
        try:
            cls = registry.get(spec["type"])
            params = cls.Params.model_validate(spec.get("params") or {})
        except Exception:
            continue
        if hasattr(cls, "cell_gallery") and getattr(params, "split", None) == split:
            return spec["id"]
    return None


__all__ = ["ALPHA", "CONFIDENCE", "REPRODUCED", "UNTESTED", "Difference", "Interval", "compare_run_ids",
           "compare_runs", "compare_splits", "direction", "figure_of", "flips", "gallery_node", "images_of", "interval",
           "is_count", "is_paired_accuracy", "is_share", "mcnemar", "metric_splits", "paired", "paired_figure",
           "percent", "points", "readable", "readable_delta", "reproduced", "split_of", "unpairable"]
