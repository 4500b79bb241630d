"""Graph runs in a worker process: a killed worker fails only the running node, the session
stays usable, cached results survive, and the next run starts a new worker."""

import os
import signal
import threading
import time

import pytest

from nodeflow.events import Log
from nodeflow.session import Session
from tests.core.conftest import make_graph
from tests.waiting import wait_for


@pytest.fixture
def session(registry, workspace):
    graph = make_graph({"a": ("test.constant", {"value": 2}), "slow": ("test.slow", {"steps": 100_000, "delay": 0.01}),
                        "after": ("test.add", {})},
                       ["a.value->slow.value", "slow.value->after.a"])
    s = Session(registry, workspace, graph=graph, isolate=True)
    yield s
    s.close()


def test_kill_9_mid_run_marks_the_node_failed_and_keeps_the_rest(session):
    session.queue.run()
    assert wait_for(lambda: session.snapshot()["nodes"]["slow"]["state"] == "running")
    worker_pid = session.worker.pid
    assert worker_pid and worker_pid != os.getpid()
    os.kill(worker_pid, signal.SIGKILL)
    session.queue.wait(30)
    snap = session.snapshot()
    assert snap["nodes"]["slow"]["state"] == "failed"
    assert "killed by SIGKILL" in snap["nodes"]["slow"]["error"]
    assert snap["nodes"]["a"]["state"] == "done"  # computed before the kill, and kept
    # the editor's session can run again: a new worker, and 'a' comes from the cache
    session.document.edit("set_params", id="slow", params={"steps": 3, "delay": 0})
    plan = session.queue.run()
    assert plan["a"] == "cached"
    report = session.queue.wait(60)
    assert report.ok and report.nodes["slow"].status == "ran"
    assert session.worker.pid != worker_pid


def test_stop_ends_the_running_node_within_two_seconds(session):
    session.queue.run()
    assert wait_for(lambda: session.snapshot()["nodes"]["slow"]["state"] == "running")
    t0 = time.monotonic()
    session.queue.stop()
    report = session.queue.wait(10)
    assert time.monotonic() - t0 < 2.0
    assert report.interrupted and report.nodes["slow"].status == "stopped"
    snap = session.snapshot()["nodes"]
    assert snap["slow"]["state"] == "stopped" and snap["a"]["state"] == "done"


def test_in_memory_values_of_the_worker_count_as_cached(registry, workspace):
    graph = make_graph({"h": ("test.handle", {}), "u": ("test.use_handle", {})}, ["h.handle->u.handle"])
    session = Session(registry, workspace, graph=graph, isolate=True)
    try:
        session.queue.run()
        assert session.queue.wait(60).ok
        assert session.snapshot()["nodes"]["h"]["state"] == "done"
        assert session.queue.run() == {"h": "cached", "u": "cached"}  # the worker still holds 'h'
        session.queue.wait(60)
        assert session.snapshot()["nodes"]["h"]["state"] == "cached"
    finally:
        session.close()


@pytest.mark.slow
def test_kill_9_mid_epoch_of_real_training_then_resume(tmp_path):
    """The real trainer in the worker: killed in epoch 2, the node fails with the signal, the data
    nodes stay cached, and the next run resumes training after epoch 1."""
    from nodeflow.node import Registry
    from tests.imagegen import make_image_set
    from tests.nodes.graphs import classifier_graph

    images = make_image_set(tmp_path / "images", ("circle", "stripes"), per_class=24, size=32)
    graph = classifier_graph(images, epochs=40, trainer={"batch_size": 8})
    session = Session(Registry.discover(plugins=False), tmp_path / "ws", graph=graph, device="cpu", isolate=True)
    try:
        session.queue.run(target="train")
        assert wait_for(lambda: any(p["step"] == 1 for p in session.snapshot()["nodes"]["train"]
                                    .get("series", {}).get("val_loss", [])), timeout=180)
        assert wait_for(lambda: session.snapshot()["nodes"]["train"].get("progress", 0) > 1.2 / 40, timeout=60)
        # the epoch-1 checkpoint is written in the background; what a kill keeps is the last one on disk
        assert wait_for(lambda: any((tmp_path / "ws" / "checkpoints").glob("*/last.safetensors")), timeout=60)
        os.kill(session.worker.pid, signal.SIGKILL)
        session.queue.wait(60)
        snap = session.snapshot()["nodes"]
        assert snap["train"]["state"] == "failed" and "SIGKILL" in snap["train"]["error"]
        assert snap["data"]["state"] in ("done", "cached") and snap["fmt"]["state"] in ("done", "cached")
        logs = []
        session.subscribe(lambda e: logs.append(e.message) if isinstance(e, Log) else None)
        session.queue.run(target="train")
        assert wait_for(lambda: any("resuming after epoch" in m for m in logs), timeout=120)
        session.queue.stop()
        session.queue.wait(60)
    finally:
        session.close()


def _read_the_flag_forever(flag, reads) -> None:
    while True:
        flag.is_set()
        reads.value += 1


def test_a_worker_killed_while_it_reads_the_stop_flag_leaves_the_flag_usable(registry, workspace):
    """The worker reads the stop flag before every layer's forward, so a kill -9 lands in a read more
    often than not. A flag with a lock (multiprocessing.Event) then stays locked for good, and the
    next ▶ or ■ hangs the editor's run thread; the worker's flag must come through any kill."""
    import ctypes

    from nodeflow.worker import _CONTEXT, WorkerBackend

    flag = WorkerBackend(registry, workspace).stop_flag
    for _ in range(5):
        reads = _CONTEXT.RawValue(ctypes.c_long, 0)
        reader = _CONTEXT.Process(target=_read_the_flag_forever, args=(flag, reads), daemon=True)
        reader.start()
        assert wait_for(lambda: reads.value > 10_000, timeout=60)
        reader.kill()
        reader.join(10)
        toggled = threading.Thread(target=lambda: (flag.set(), flag.is_set(), flag.clear()), daemon=True)
        toggled.start()
        toggled.join(5)
        assert not toggled.is_alive(), "setting the stop flag hung after its reader was killed"
        assert not flag.is_set()


def test_a_worker_that_dies_just_before_a_task_is_sent_fails_that_node_with_the_cause(registry, workspace):
    """The worker can die between the check that it lives and the sending of the task (the pipe is
    then broken): the node fails saying the worker was killed, and the next run starts a new worker."""
    graph = make_graph({"a": ("test.constant", {"value": 2}), "after": ("test.add", {})}, ["a.value->after.a"])
    session = Session(registry, workspace, graph=graph, isolate=True)
    try:
        session.queue.run()
        assert session.queue.wait(60).ok
        worker = session.worker
        os.kill(worker.pid, signal.SIGKILL)
        worker._process.join(10)
        ensure_started = worker._ensure_started
        worker._ensure_started = lambda: None  # as if it had died right after the check
        session.document.edit("set_params", id="a", params={"value": 3})
        session.queue.run()
        session.queue.wait(60)
        node = session.snapshot()["nodes"]["a"]
        assert node["state"] == "failed" and "killed by SIGKILL" in node["error"]
        worker._ensure_started = ensure_started
        session.queue.run()
        report = session.queue.wait(60)
        assert report.ok and report.nodes["after"].metrics["sum"] == 3.0
    finally:
        session.close()
