"""The trainer under faults: a NaN loss, running out of memory, a stop in mid-epoch, and a
weights file that would run code. Each fails (or stops) with a message that says what to do,
and leaves the other results and the last checkpoint in place."""

from __future__ import annotations

import pickle
import re
import threading
import time

import pytest
import torch

import nodes.engine.loop as training_loop
from nodeflow.events import Progress
from nodeflow.executor import Executor
from nodeflow.node import Registry
from tests.imagegen import make_image_set
from tests.nodes.graphs import classifier_graph


@pytest.fixture(scope="module")
def catalogue() -> Registry:
    return Registry.discover(plugins=False)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_image_set(tmp_path_factory.mktemp("faults"), ("circle", "stripes"), per_class=24, size=32)


def sabotage_forward(monkeypatch, after_calls: int, fault) -> None:
    """Let ``after_calls`` training forwards through, then apply ``fault`` to every later one."""
    real = training_loop.forward
    calls = {"n": 0}

    def forward(net, images, prefix):
        calls["n"] += 1
        out = real(net, images, prefix)
        return fault(out) if calls["n"] > after_calls else out

    monkeypatch.setattr(training_loop, "forward", forward)


def checkpoints(workspace):
    return list((workspace / "checkpoints").glob("*/last.safetensors"))


def test_nan_loss_stops_the_trainer_naming_epoch_and_lr(catalogue, images, tmp_path, monkeypatch):
    graph = classifier_graph(images, epochs=3, trainer={"batch_size": 8})
    sabotage_forward(monkeypatch, 4, lambda out: out * float("nan"))  # epoch 1 has 3 or 4 batches
    report = Executor(catalogue, tmp_path, device="cpu").run(graph)
    train = report.nodes["train"]
    assert train.status == "failed"
    assert re.search(r"became nan at batch [12] of epoch 2 \(learning rate 0.001\)", train.error)
    assert "lower lr or set grad_clip" in train.error
    assert train.error.startswith("parameter 'lr': ")
    assert report.nodes["eval"].status == "skipped"
    assert report.nodes["data"].status == "ran"
    assert len(checkpoints(tmp_path)) == 1  # epoch 1 stays for a resume


def test_out_of_memory_suggests_a_smaller_batch_and_the_next_run_works(catalogue, images, tmp_path, monkeypatch):
    graph = classifier_graph(images, epochs=1, trainer={"batch_size": 8})

    def oom(out):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    sabotage_forward(monkeypatch, 2, oom)
    executor = Executor(catalogue, tmp_path, device="cpu")
    report = executor.run(graph)
    assert report.nodes["train"].status == "failed"
    assert report.nodes["train"].error.startswith("parameter 'batch_size': ran out of memory")
    assert "try a smaller batch_size (now 8)" in report.nodes["train"].error
    monkeypatch.undo()
    again = executor.run(graph)
    assert again.ok and again.nodes["data"].status == "cached" and again.nodes["train"].status == "ran"


def test_stop_ends_training_at_the_next_batch_and_leaves_the_node_stale(catalogue, images, tmp_path):
    graph = classifier_graph(images, epochs=50, trainer={"batch_size": 8})
    executor = Executor(catalogue, tmp_path, device="cpu")
    in_epoch_two = threading.Event()  # a third of the way into it: past the epoch-1 checkpoint
    executor.subscribe(lambda e: in_epoch_two.set() if isinstance(e, Progress) and e.epochs
                       and e.done / e.total > 1.33 / 50 else None)
    result = {}
    worker = threading.Thread(target=lambda: result.update(report=executor.run(graph, target="train")))
    worker.start()
    assert in_epoch_two.wait(120)
    stopped_at = time.monotonic()
    executor.interrupt()
    worker.join(30)
    assert time.monotonic() - stopped_at < 2.0
    report = result["report"]
    assert report.interrupted and report.nodes["train"].status == "stopped"
    assert executor.status(graph)["train"] == "stopped"  # not failed, not cached
    assert len(checkpoints(tmp_path)) == 1


class Payload:
    """Anything that needs its class imported to unpickle: what a malicious file would carry."""

    def __reduce__(self):
        return (print, ("this would have run",))


def test_weights_that_need_unpickling_code_are_refused(catalogue, images, tmp_path):
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as handle:
        pickle.dump({"conv.weight": Payload()}, handle)
    graph = classifier_graph(images, weights=str(evil), epochs=1)
    report = Executor(catalogue, tmp_path / "ws", device="cpu").run(graph, target="backbone")
    error = report.nodes["backbone"].error
    assert report.nodes["backbone"].status == "failed"
    assert "refused to load" in error and "needs to run pickled code" in error and "safetensors" in error


def test_random_bytes_as_weights_are_not_a_weights_file(catalogue, images, tmp_path):
    noise = tmp_path / "noise.pth"
    noise.write_bytes(bytes(range(256)) * 64)
    graph = classifier_graph(images, weights=str(noise), epochs=1)
    report = Executor(catalogue, tmp_path / "ws", device="cpu").run(graph, target="backbone")
    error = report.nodes["backbone"].error
    assert report.nodes["backbone"].status == "failed"
    assert "is not a weights file" in error and "pickled code" not in error and "weights" in error
