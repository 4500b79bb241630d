"""The one run core: typed events and their JSON form, the one reducer, the scheduler over a backend,
and what the session shows of a run, also after a restart."""

from __future__ import annotations

import dataclasses
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodeflow.events import (EVENT_TYPES, Board, Memory, Metric, NodeFailed, NodeFinished, NodeStarted, NodeState,
                             NodeStopped, Preview, Progress, RunQueued, Seen, derive, describe, from_json, to_json)
from nodeflow.executor import Executor
from nodeflow.scheduler import InProcess, execute
from nodeflow.session import Session
from nodeflow.task import Outcome
from tests.waiting import wait_for

from .conftest import make_graph

# -- typed events ---------------------------------------------------------------------------------------

plain = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.text(max_size=20)
                     | st.floats(allow_nan=False, allow_infinity=False),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                     max_leaves=8)


@st.composite
def events(draw):
    cls = draw(st.sampled_from(sorted(EVENT_TYPES.values(), key=lambda c: c.kind)))
    values = {}
    for f in dataclasses.fields(cls):
        if f.name == "node_id":
            values[f.name] = draw(st.none() | st.text(min_size=1, max_size=12))
        elif f.type in ("str", "str | None"):
            values[f.name] = draw(st.text(max_size=30))
        elif f.type in ("float",):
            values[f.name] = draw(st.floats(allow_nan=False, allow_infinity=False, width=32))
        elif f.type in ("int | None",):
            values[f.name] = draw(st.none() | st.integers(0, 10_000))
        elif f.type == "bool":
            values[f.name] = draw(st.booleans())
        elif f.name in ("plan",):
            values[f.name] = draw(st.dictionaries(st.text(max_size=8), st.sampled_from(["run", "cached"]), max_size=4))
        elif f.name in ("metrics",):
            values[f.name] = draw(st.dictionaries(st.text(max_size=8), st.floats(allow_nan=False, allow_infinity=False),
                                                  max_size=3))
        elif f.name == "extra":
            values[f.name] = draw(st.dictionaries(st.text(max_size=8).filter(lambda k: k not in ("name", "value", "step")),
                                                  plain, max_size=2))
        elif f.name in ("payload",):
            values[f.name] = draw(plain)
        elif f.name == "nodes":
            values[f.name] = draw(st.dictionaries(st.text(max_size=8), plain, max_size=2))
    return cls(**values)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_every_event_crosses_a_process_as_json_and_comes_back_the_same(event):
    """What a worker process, a Dask worker and a multi-node job folder send is the event itself."""
    import json

    message = json.loads(json.dumps(to_json(event)))  # as it travels
    assert from_json(message) == event
    assert event.kind == message["kind"] and event.data == message["data"]


def test_the_reducer_tells_a_training_as_every_view_shows_it():
    node = Board()
    node.apply(RunQueued(plan={"train": "run", "data": "cached"}))
    assert node.get("train").state == "queued" and node.get("data").state == "cached"
    node.apply(NodeStarted(node_id="train", key="k1"))
    for epoch in range(3):
        node.apply(Progress(node_id="train", done=epoch, total=40, epoch=epoch, epochs=40))
        node.apply(Metric(node_id="train", name="val_loss", value=1.0 / (epoch + 1), step=epoch + 1))
    train = node.get("train")
    assert train.state == "running" and train.epoch == 2 and train.epochs == 40
    assert train.words().startswith("running · epoch 3/40")
    assert [p["step"] for p in train.series["val_loss"]] == [1, 2, 3]
    node.apply(NodeStopped(node_id="train", key="k1", epoch=11, epochs=40, resumable=True))
    assert node.get("train").words() == "stopped at epoch 11/40 · resumes from its checkpoint"
    # the next run keeps what was shown as the previous run's, and a resumed run's re-told epochs replace
    node.apply(RunQueued(plan={"train": "run"}))
    assert node.get("train").previous["metrics"] == {"val_loss": 1.0 / 3} and node.get("train").series == {}
    node.apply(NodeStarted(node_id="train", key="k1"))
    for epoch in (1, 2, 3, 3):
        node.apply(Metric(node_id="train", name="val_loss", value=0.5, step=epoch))
    assert [p["step"] for p in node.get("train").series["val_loss"]] == [1, 2, 3]
    node.apply(NodeFinished(node_id="train", key="k1", seconds=2.0, metrics={"val_loss": 0.5}))
    assert node.get("train").state == "done" and node.get("train").words() == "done"


def test_a_nodes_state_without_a_run_comes_from_the_cache_and_the_history():
    done = NodeState(state="done", key="k")
    assert derive(None, False, None) == "invalid"
    assert derive("k", False, None) == "idle"
    assert derive("k", True, None) == "cached"
    assert derive("k", True, Seen(done, True)) == "done"
    assert derive("k", True, Seen(dataclasses.replace(done, state="cached"), True)) == "cached"
    assert derive("k2", False, Seen(None, True)) == "stale"
    assert derive("k", False, Seen(NodeState(state="failed", key="k"), False)) == "failed"
    assert derive("k", False, Seen(NodeState(state="stopped", key="k"), True)) == "stopped"
    assert describe("stopped", 11, 40, False) == "stopped at epoch 11/40 · starts again when run"
    memory = Memory()
    memory(NodeFinished(node_id="a", key="k", seconds=1.0))
    memory(NodeFailed(node_id="b", key="kb", message="no"))
    assert memory.seen({"a": "k", "b": "kb", "c": "kc"}) == {
        "a": Seen(memory.settled[("a", "k")], True), "b": Seen(memory.settled[("b", "kb")], False),
        "c": Seen(None, False)}


# -- the scheduler ---------------------------------------------------------------------------------------

class Recorded(InProcess):
    """A backend of this process that notes every task it is given (and can fail one)."""

    def __init__(self, stop_flag, fail: str | None = None) -> None:
        super().__init__(stop_flag)
        self.tasks: list[tuple[str, str]] = []
        self.fail = fail

    def submit(self, task, emit) -> None:
        self.tasks.append((task.node_id, task.key))
        if task.node_id == self.fail:
            self._done.append((task, Outcome("failed", error="broken on purpose")))
            return
        super().submit(task, emit)


def test_branches_that_need_one_result_share_one_task_and_a_failure_skips_only_what_needs_it(registry, workspace):
    executor = Executor(registry, workspace)
    base = {"a": ("test.constant", {"value": 2}), "b": ("test.constant", {"value": 3}), "sum": ("test.add", {})}
    edges = ["a.value->sum.a", "b.value->sum.b", "sum.value->text.value"]
    one = make_graph({**base, "text": ("test.describe", {"style": "plain"})}, edges)
    two = make_graph({**base, "text": ("test.describe", {"style": "fancy"})}, edges)
    heard: list[list] = [[], []]
    branches = [executor.prepare(g, listeners=[h.append]) for g, h in zip((one, two), heard)]
    backend = Recorded(executor.stop_flag)
    first, second = execute(branches, backend)
    assert sorted(n for n, _ in backend.tasks) == ["a", "b", "sum", "text", "text"]  # one task per key
    assert {n: r.status for n, r in first.nodes.items()} == {"a": "ran", "b": "ran", "sum": "ran", "text": "ran"}
    assert {n: r.status for n, r in second.nodes.items()} == {"a": "cached", "b": "cached", "sum": "cached",
                                                             "text": "ran"}
    # each branch hears only its own run: its start, its nodes' ends, its finish
    assert [e.kind for e in heard[1]][0] == "run_started" and heard[1][-1].kind == "run_finished"
    assert not any(e.kind == "node_started" and e.node_id == "sum" for e in heard[1])

    failing = Recorded(executor.stop_flag, fail="sum")
    third = execute([executor.prepare(make_graph({**base, "sum": ("test.add", {"offset": 1}),
                                                  "text": ("test.describe", {})}, edges))], failing)[0]
    assert {n: r.status for n, r in third.nodes.items()} == {"a": "cached", "b": "cached", "sum": "failed",
                                                            "text": "skipped"}
    assert third.nodes["sum"].error == "broken on purpose" and ("text", executor.keys(one)["text"]) not in \
        failing.tasks



class BreaksOff(InProcess):
    """A backend that takes a task and then breaks as it is asked for the outcome (a cluster gone)."""

    def collect(self, timeout):
        if self._done:
            raise ConnectionError("the scheduler went away")
        return super().collect(timeout)


def test_a_backend_that_breaks_off_fails_the_nodes_it_had_and_says_why(registry, workspace):
    executor = Executor(registry, workspace)
    graph = make_graph({"a": ("test.constant", {"value": 2}), "sum": ("test.add", {})}, ["a.value->sum.a"])
    heard: list = []
    report = execute([executor.prepare(graph, listeners=[heard.append])], BreaksOff(executor.stop_flag))[0]
    assert {n: r.status for n, r in report.nodes.items()} == {"a": "failed", "sum": "skipped"}
    assert report.nodes["a"].error == "the run's backend broke off: ConnectionError: the scheduler went away"
    told = [e for e in heard if isinstance(e, NodeFailed)]  # the card is told, not only the run's record
    assert [(e.node_id, e.message) for e in told] == [("a", report.nodes["a"].error)]


# -- what the session shows --------------------------------------------------------------------------------

def training_graph(epochs=40, delay=0.05):
    return make_graph({"a": ("test.constant", {"value": 1}), "train": ("test.epochs", {"epochs": epochs,
                                                                                        "delay": delay}),
                       "after": ("test.describe", {})}, ["a.value->train.value", "train.value->after.value"],
                      name="training")


def running_epoch(session: Session) -> int:
    train = session.snapshot()["nodes"]["train"]
    return (train.get("epoch") or 0) if train["state"] == "running" else 0


def test_a_stopped_training_says_where_it_stopped_and_its_resumed_curves_start_at_epoch_one(registry, workspace):
    session = Session(registry, workspace, graph=training_graph())
    try:
        session.queue.run()
        assert wait_for(lambda: running_epoch(session) >= 3, timeout=60)
        running = session.snapshot()["nodes"]["train"]
        assert running["state"] == "running" and running["words"].startswith("running · epoch ")
        session.queue.stop()
        session.queue.wait(30)
        train = session.snapshot()["nodes"]["train"]
        stopped_at = train["epoch"]
        assert train["state"] == "stopped" and stopped_at >= 3 and train["epochs"] == 40
        assert train["words"] == f"stopped at epoch {stopped_at}/40 · resumes from its checkpoint"
        assert session.snapshot()["nodes"]["after"]["state"] == "idle"  # skipped, and it never ran
        assert any(f"stopped by the user at epoch {stopped_at}/40" in e["message"] for e in session.snapshot()["log"])
        session.document.edit("set_params", id="train", params={"delay": 0.0})  # the same run, faster: another key
        session.document.edit("set_params", id="train", params={"delay": 0.05})  # back: resumes from its checkpoint
        session.queue.run()
        report = session.queue.wait(60)
        assert report.ok
        train = session.snapshot()["nodes"]["train"]
        assert train["state"] == "done"
        assert [p["step"] for p in train["series"]["loss"]] == list(range(1, 41))  # the epochs before the stop too
        run = session.runs.get(session.queue.run_id)
        assert [step for step, _ in run["curves"]["train"]["loss"]] == list(range(1, 41))
    finally:
        session.close()


def test_after_a_restart_every_node_shows_what_it_showed(registry, workspace):
    graph = make_graph({"a": ("test.constant", {"value": 2}), "b": ("test.constant", {"value": 3}),
                        "sum": ("test.add", {}), "bad": ("test.fail", {"message": "nope"}),
                        "train": ("test.epochs", {"epochs": 3, "delay": 0.0})},
                       ["a.value->sum.a", "b.value->sum.b", "sum.value->train.value"])
    session = Session(registry, workspace, graph=graph)
    session.queue.run()
    session.queue.wait(30)
    session.document.edit("set_params", id="b", params={"value": 4})  # b and sum are stale now
    before = {n: (v["state"], v.get("error"), v["metrics"], v["series"]) for n, v in session.snapshot()["nodes"].items()}
    assert {n: s for n, (s, *_) in before.items()} == {"a": "done", "b": "stale", "sum": "stale", "bad": "failed",
                                                      "train": "stale"}
    edited = session.document.graph
    session.close()

    again = Session(registry, workspace, graph=edited)
    try:
        after = {n: (v["state"], v.get("error"), v["metrics"], v["series"]) for n, v in again.snapshot()["nodes"].items()}
        assert after == before
        again.document.edit("set_params", id="b", params={"value": 3})  # back to what ran: cached results again
        nodes = again.snapshot()["nodes"]
        assert nodes["sum"]["state"] == "done" and nodes["sum"]["metrics"] == {"sum": 5.0}
        assert nodes["train"]["state"] == "done" and [p["step"] for p in nodes["train"]["series"]["loss"]] == [1, 2, 3]
        assert nodes["train"]["run"]["finished"]  # the stored curves say which run computed them
    finally:
        again.close()


def test_a_cached_nodes_output_is_its_stored_metrics_and_curves(registry, workspace):
    session = Session(registry, workspace, graph=training_graph(epochs=4, delay=0.0))
    try:
        session.queue.run()
        session.queue.wait(30)
        session.queue.run()  # everything from the cache now
        session.queue.wait(30)
        train = session.snapshot()["nodes"]["train"]
        assert train["state"] == "cached" and [p["step"] for p in train["series"]["loss"]] == [1, 2, 3, 4]
        assert train["words"] == "cached" and train["run"]["finished"]
    finally:
        session.close()


def test_a_price_comes_from_the_last_run_of_these_params_counts_a_run_ahead_and_only_the_epochs_left(
        registry, workspace):
    session = Session(registry, workspace, graph=training_graph(epochs=20, delay=0.02))
    try:
        assert session.estimator.price()["nodes"]["train"]["status"] == "unknown"  # never ran, never profiled
        session.queue.run()
        session.queue.wait(60)
        took = session.snapshot()["nodes"]["train"]["seconds"]
        session.document.edit("set_params", id="a", params={"value": 2})  # another input: another key, the same params
        measured = session.estimator.price()["nodes"]["train"]
        assert measured["status"] == "measured" and measured["epochs"] == 20
        assert measured["seconds"] == pytest.approx(took, abs=1e-3)
        assert session.estimator.prices()["train"] == measured  # the card shows the same number

        session.queue.run()
        assert wait_for(lambda: running_epoch(session) >= 5, timeout=60)
        ahead = session.estimator.price()["nodes"]["train"]  # the run going now computes it first
        assert ahead["status"] == "ahead" and ahead["seconds"] == 0.0
        session.queue.stop()
        session.queue.wait(30)
        stopped = session.snapshot()["nodes"]["train"]
        done = stopped["epoch"]
        left = session.estimator.price()["nodes"]["train"]  # the pace of the stopped run, the newest measurement
        assert left["epochs"] == 20 - done
        assert left["seconds"] == pytest.approx(stopped["seconds"] / done * (20 - done), abs=1e-3)
        assert left["note"].startswith(f"resumes after epoch {done}: {20 - done} of 20 epochs left")
    finally:
        session.close()


def test_the_price_of_finishing_a_stopped_training_is_its_measured_pace_times_the_epochs_left(registry, workspace):
    delay = 0.1
    session = Session(registry, workspace, graph=training_graph(epochs=40, delay=delay))
    try:
        assert session.estimator.price()["nodes"]["train"]["status"] == "unknown"  # never ran, never profiled
        session.queue.run()
        assert wait_for(lambda: running_epoch(session) >= 5, timeout=60)
        session.queue.stop()
        session.queue.wait(30)
        stopped = session.snapshot()["nodes"]["train"]
        done = stopped["epoch"]
        assert stopped["state"] == "stopped" and done >= 5
        left = session.estimator.price()["nodes"]["train"]
        assert left["status"] == "measured" and left["epochs"] == 40 - done
        assert left["seconds"] == pytest.approx(stopped["seconds"] / done * (40 - done), abs=1e-3)
        # an epoch sleeps its delay, so the pace is at least that; a busy machine makes it slower, never
        # faster, and a price in the wrong unit would be a thousand times off
        assert delay * (40 - done) <= left["seconds"] < 10 * delay * (40 - done)
        assert session.estimator.prices()["train"] == left  # the card shows the same number
    finally:
        session.close()


def test_a_sweep_is_one_job_and_a_branch_from_the_cache_has_curves(registry, workspace):
    session = Session(registry, workspace, graph=training_graph(epochs=3, delay=0.0))
    try:
        session.queue.run()
        session.queue.wait(30)  # epochs=3 is cached now
        found = session.sweeps.submit([("train.epochs", [3, 4])])
        session.queue.wait(60)
        result = session.sweeps.get(found["id"], curves=True)
        assert [b["status"] for b in result["branches"]] == ["done", "done"]
        first, second = (session.runs.get(b["run"]) for b in result["branches"])
        assert first["nodes"]["train"]["status"] == "cached" and second["nodes"]["train"]["status"] == "ran"
        assert first["started"] is not None and abs(first["started"] - second["started"]) < 5  # one job
        curves = [b["curves"]["train"]["loss"] for b in result["branches"]]
        assert [s for s, _ in curves[0]] == [1, 2, 3] and [s for s, _ in curves[1]] == [1, 2, 3, 4]
    finally:
        session.close()


def test_stopping_an_in_process_run_reaches_the_running_node(registry, workspace):
    """The executor's own run on this process's backend: stop is seen inside the node at its next check."""
    executor = Executor(registry, workspace)
    started = threading.Event()
    executor.subscribe(lambda e: started.set() if e.kind == "progress" else None)
    result = {}
    thread = threading.Thread(target=lambda: result.update(report=executor.run(training_graph(epochs=1000))))
    thread.start()
    assert started.wait(30)
    executor.interrupt()
    thread.join(30)
    assert result["report"].nodes["train"].status == "stopped"
    with pytest.raises(KeyError):
        executor.plan(training_graph(), target="nope")
