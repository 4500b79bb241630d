"""Whether one model is really better than another, and figures people can read.

Two models scored on the same images are compared image by image (:mod:`nodeflow.predictions`):
the difference of their accuracies gets a 95% confidence interval from a paired bootstrap over the
images, and McNemar's exact test asks whether the images only one of them gets right lean one way
more than chance would. Both come from ``scipy.stats`` (``bootstrap``, ``binomtest``). A difference
is called real only when both agree: p below 0.05 and an interval that leaves out 0. Models scored
on different images (another split, another data set) cannot be paired; each accuracy then gets
its own interval (Wilson's, ``binomtest(...).proportion_ci``).

The words follow the numbers: "better (+3.1 points, 95% CI +1.2 … +5.0, p = 0.002, 1,000 images)"
or "no clear difference on 12 images (−8 … +25 points)".

No torch here: predictions are numpy arrays.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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

    @property
    def delta(self) -> float:
        return self.b - self.a

    @property
    def clear(self) -> bool:
        """Real, as far as these images tell: p < 0.05 and the interval leaves out 0."""
        return self.p_value < ALPHA and (self.low > 0 or self.high < 0)

    @property
    def verdict(self) -> str:
        if not self.clear:
            return "no clear difference"
        return "better" if self.delta > 0 else "worse"

    def words(self) -> str:
        n = self.images
        if not self.clear:
            if self.right_to_wrong == self.wrong_to_right == 0:
                return f"no clear difference on {images_text(n)} (the same images right and wrong)"
            span = f"{points(self.low, n)} … {points(self.high, n)} points"
            changed = self.right_to_wrong + self.wrong_to_right
            if self.low > 0 or self.high < 0:  # the resampled interval leans one way, the test on the flips does not
                return (f"no clear difference on {images_text(n)} ({span}, but only {changed} image"
                        f"{'s' if changed != 1 else ''} changed: {p_text(self.p_value)})")
            return f"no clear difference on {images_text(n)} ({span})"
        return (f"{self.verdict} ({points(self.delta, n)} points, 95% CI {points(self.low, n)} … "
                f"{points(self.high, n)}, {p_text(self.p_value)}, {images_text(n)})")

    def to_json(self) -> dict[str, Any]:
        return {"images": self.images, "a": self.a, "b": self.b, "delta": self.delta, "ci": [self.low, self.high],
                "p_value": self.p_value, "right_to_wrong": self.right_to_wrong,
                "wrong_to_right": self.wrong_to_right, "clear": self.clear, "verdict": self.verdict,
                "words": self.words()}


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
    per-image predictions in both runs, a comparison per split (:func:`compare_splits`). An
    accuracy's line carries the comparison of its split. With a ``registry``, each flipped image
    links to its confusion cell in run B's error analysis of that model and split, if it has one."""
    splits = {**metric_splits(run_a.get("graph"), registry), **metric_splits(run_b.get("graph"), registry)} \
        if registry is not None else {}
    comparisons: list[dict[str, Any]] = []
    by_split: dict[tuple[str, str], dict[str, Any]] = {}
    seen: dict[tuple[str, bytes, bytes], dict[str, Any]] = {}
    changed = set(diff["changed_nodes"])
    for node in [n for n in run_b["nodes"] if n in changed]:  # in the order the run went
        before = predictions_of((run_a["nodes"].get(node) or {}).get("key"))
        after = predictions_of((run_b["nodes"].get(node) or {}).get("key"))
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
                _link_cells(entry, run_b.get("graph") or {}, registry)
            comparisons.append(entry)
            seen[same] = by_split[(node, split)] = entry
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
        found = by_split.get((node, split)) if split and is_paired_accuracy(name) else None
        if found is not None:
            entry["comparison"] = {k: v for k, v in found.items() if k not in ("flips", "gallery")}
        metrics[name] = entry
    return {**diff, "metrics": metrics, "comparisons": comparisons}


def compare_run_ids(store: Any, predictions: Any, registry: Any, a: int | str, b: int | str) -> dict[str, Any]:
    """:func:`compare_runs` of runs ``a`` and ``b`` of a run store (``RunStore``), with the
    predictions of a ``PredictionStore``; RunNotFound (a KeyError) for an id that is not a run."""
    return compare_runs(store.diff(a, b), store.get(a), store.get(b), predictions.of, registry)


def _link_cells(entry: dict[str, Any], graph_doc: Mapping[str, Any], registry: Any) -> None:
    """Point each flipped image at the confusion cell it now lies in (true class, B's prediction)
    in the gallery of run B's error-analysis node on the same model and split."""
    gallery = gallery_node(graph_doc, entry["node"], entry["split"], registry)
    entry["gallery"] = gallery
    for group in entry["flips"].values():
        for row in group["rows"]:
            row["cell"] = [row["true"], row["b"]]
            row["gallery_url"] = None if gallery is None else \
                f"/api/errors/{_quoted(gallery)}/cells/{_quoted(row['true'])}/{_quoted(row['b'])}"


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


__all__ = ["ALPHA", "CONFIDENCE", "Difference", "Interval", "compare_run_ids", "compare_runs", "compare_splits",
           "direction", "flips", "gallery_node", "images_of", "interval", "is_count", "is_paired_accuracy", "is_share",
           "mcnemar", "metric_splits", "paired", "percent", "points", "readable", "readable_delta", "split_of",
           "unpairable"]
