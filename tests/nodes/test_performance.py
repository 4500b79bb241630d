"""The feature cache follows the freeze boundary (hit on later epochs, runs and processes; missed
exactly when weights, files or transform change; same results as without it; says why it is off),
and decoded-image batches equal the per-file path. Behaviour only: speed is the benchmark's job."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

from nodeflow.executor import Executor
from nodeflow.node import Event
from nodes.engine.store import MEMORY
from tests.nodes.conftest import ROOT
from tests.nodes.graphs import classifier_graph



def previews(events: list[Event], node: str) -> list[dict]:
    return [e.data["payload"] for e in events if e.kind == "preview" and e.node_id == node
            and e.data["kind"] == "feature_cache"]


def run_graph(registry, graph, workspace: Path):
    events: list[Event] = []
    report = Executor(registry, workspace, device="cpu", listeners=[events.append]).run(graph)
    assert report.ok, report.to_json()
    return report, events


def head_only(root: Path, **trainer) -> object:
    """A frozen ResNet-18 (random weights: no downloads) with a new head, evaluated on the test split."""
    return classifier_graph(root, feature_extractor=True, epochs=3, lr=1e-2, trainer=trainer or None)


def test_head_only_training_caches_the_frozen_prefix_once_and_reuses_it(registry, shapes, tmp_path):
    MEMORY.clear()
    report, events = run_graph(registry, head_only(shapes), tmp_path / "ws")
    [info] = previews(events, "train")
    assert info["enabled"] and info["train"] == "computed" and info["validation"] == "computed"
    # the cache stands in for the frozen backbone and the parameter-free pool after it
    assert info["blocks"] == ["stem", "layer1", "layer2", "layer3", "layer4", "pool1"]
    assert info["feature_shape"] == [512] and info["copies"] == 1
    assert len(report.outputs["train"]["model"].history) == 3
    entries = sorted((tmp_path / "ws" / "features").glob("*.safetensors"))
    assert len(entries) == 3  # train, validation (trainer), test (evaluate)
    for entry in entries:
        with safe_open(str(entry), framework="pt") as handle:
            assert handle.get_slice("features").get_dtype() == "F16"

    # a new run of the trainer (other lr) in this process: from memory; in a new process: from disk
    report, events = run_graph(registry, head_only(shapes, lr=5e-3), tmp_path / "ws")
    assert previews(events, "train")[0]["train"] == "memory"
    MEMORY.clear()
    _, events = run_graph(registry, head_only(shapes, lr=2e-3), tmp_path / "ws")
    assert previews(events, "train")[0]["train"] == "disk"
    assert len(list((tmp_path / "ws" / "features").glob("*.safetensors"))) == 3


@pytest.mark.slow
def test_cache_on_and_off_train_the_same_model(registry, shapes, tmp_path):
    """Same batches in the same order; only the fp16 rounding of the stored features differs."""
    on, _ = run_graph(registry, head_only(shapes), tmp_path / "on")
    off, events = run_graph(registry, head_only(shapes, feature_cache="off"), tmp_path / "off")
    assert previews(events, "train")[0]["enabled"] is False
    assert not (tmp_path / "off" / "features").exists()
    for a, b in zip(on.outputs["train"]["model"].history, off.outputs["train"]["model"].history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=2e-2, abs=2e-3)
        assert a["val_accuracy"] == pytest.approx(b["val_accuracy"], abs=0.051)
    assert on.nodes["eval"].metrics["accuracy"] == pytest.approx(off.nodes["eval"].metrics["accuracy"], abs=0.051)


def test_random_augmentation_turns_the_cache_off_and_says_why_unless_copies_are_cached(registry, shapes, tmp_path):
    graph = head_only(shapes).model_dump(mode="json")
    graph["nodes"].append({"id": "aug", "type": "data.augment", "params": {"hflip": 0.5}})
    graph["edges"] = [e for e in graph["edges"] if not (e["source"] == "fmt" and e["target"] == "train")]
    graph["edges"] += [{"source": "fmt", "source_port": "data", "target": "aug", "target_port": "data"},
                       {"source": "aug", "source_port": "data", "target": "train", "target_port": "data"}]
    from nodeflow.graph import Graph

    _, events = run_graph(registry, Graph.from_data(graph), tmp_path / "ws")
    [info] = previews(events, "train")
    assert info["enabled"] is False and "hflip" in info["reason"] and "augmented_copies" in info["reason"]
    assert info["validation"] in ("computed", "memory")  # validation images are never augmented: still cached
    logs = [e.data["message"] for e in events if e.kind == "log" and e.node_id == "train"]
    assert any("feature cache off" in line and "hflip" in line for line in logs)

    graph["nodes"][[n["id"] for n in graph["nodes"]].index("train")]["params"]["augmented_copies"] = 2
    _, events = run_graph(registry, Graph.from_data(graph), tmp_path / "ws")
    [info] = previews(events, "train")
    assert info["enabled"] and info["copies"] == 2 and info["train"] == "computed"


@pytest.mark.slow
def test_benchmark_quick_mode_runs(tmp_path):
    """The benchmark's smoke run, as CI runs it (its figures are the benchmark's to print, not a test's to time)."""
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--quick",
                             "--cache-dir", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=180,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stdout + result.stderr
    for row in ("hand-written", "nodeflow", "head-only", "fine-tune"):
        assert row in result.stdout, result.stdout
