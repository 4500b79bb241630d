"""The server-wide queue's rule: users take turns, each user's runs keep their order."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeflow.fairqueue import FairQueue, QueueFull, Waiting


def drain(queue: FairQueue) -> list[str]:
    started = []
    while (item := queue.pop_next()) is not None:
        started.append(item[1])
    return started


def test_five_runs_of_a_then_one_of_b_b_starts_second():
    queue = FairQueue()
    for i in range(1, 6):
        queue.push("a", f"a{i}")
    assert queue.push("b", "b1") == 2
    assert drain(queue) == ["a1", "b1", "a2", "a3", "a4", "a5"]


def test_b_still_starts_second_when_a_first_run_already_started():
    """The scheduler takes a's first run at once; b, queuing after a's five, is next anyway."""
    queue = FairQueue()
    queue.push("a", "a1")
    assert queue.pop_next() == ("a", "a1")
    for i in range(2, 6):
        queue.push("a", f"a{i}")
    assert queue.push("b", "b1") == 1
    assert drain(queue) == ["b1", "a2", "a3", "a4", "a5"]


def test_three_users_take_turns_and_keep_their_own_order():
    queue = FairQueue()
    for user in "abc":
        for i in range(1, 4):
            queue.push(user, f"{user}{i}")
    assert drain(queue) == ["a1", "b1", "c1", "a2", "b2", "c2", "a3", "b3", "c3"]
    assert queue.pop_next() is None and len(queue) == 0


def test_positions_per_user_and_the_whole_queue():
    queue = FairQueue()
    for run in ("a1", "a2", "a3"):
        queue.push("a", run)
    queue.push("b", "b1")
    queue.push("b", "b2")
    everyone = queue.snapshot()
    assert everyone == [Waiting("a1", "a", 1), Waiting("b1", "b", 2), Waiting("a2", "a", 3),
                        Waiting("b2", "b", 4), Waiting("a3", "a", 5)]
    assert queue.snapshot("b") == [Waiting("b1", "b", 2), Waiting("b2", "b", 4)]
    assert [queue.position(w.run_id) for w in everyone] == [1, 2, 3, 4, 5]
    assert queue.position("zz") is None and queue.owner("b2") == "b" and queue.owner("zz") is None
    assert drain(queue) == [w.run_id for w in everyone]


def test_cancel_takes_a_run_out_and_moves_the_others_up():
    queue = FairQueue()
    for run in ("a1", "a2"):
        queue.push("a", run)
    queue.push("b", "b1")
    assert queue.cancel("a1") is True
    assert queue.cancel("a1") is False and queue.cancel("never") is False
    assert [(w.run_id, w.position) for w in queue.snapshot()] == [("a2", 1), ("b1", 2)]
    assert queue.cancel("b1") and queue.snapshot("b") == []
    assert queue.pop_next() == ("a", "a2") and queue.cancel("a2") is False  # started: no longer waiting


def test_each_user_has_a_limit_on_waiting_runs():
    queue = FairQueue(per_user=2)
    queue.push("a", "a1")
    queue.push("a", "a2")
    with pytest.raises(QueueFull, match="a already has 2 runs waiting, the most one user may queue; wait for one "
                                        "to start or cancel one"):
        queue.push("a", "a3")
    assert queue.owner("a3") is None and len(queue) == 2
    queue.push("b", "b1")  # another user is not held back
    queue.pop_next()
    queue.push("a", "a3")  # a place came free when a1 started
    assert [w.run_id for w in queue.snapshot("a")] == ["a2", "a3"]
    with pytest.raises(ValueError, match="already queued"):
        queue.push("b", "a2")


def test_a_user_who_returns_waits_behind_those_served_less_recently():
    queue = FairQueue()
    queue.push("a", "a1")
    queue.push("b", "b1")
    assert queue.pop_next() == ("a", "a1")
    queue.push("c", "c1")
    queue.push("a", "a2")
    assert drain(queue) == ["b1", "c1", "a2"]


# -- the rule, for any sequence of operations ----------------------------------------------------------

users = st.sampled_from(["a", "b", "c", "d"])
operations = st.lists(st.one_of(st.tuples(st.just("push"), users), st.just(("pop", None)),
                                st.tuples(st.just("cancel"), st.integers(0, 40))), max_size=60)


@settings(max_examples=200, deadline=None)
@given(operations)
def test_any_sequence_keeps_fifo_per_user_and_serves_the_longest_waiting_user(ops):
    queue = FairQueue(per_user=5)
    queued: dict[str, list[int]] = {}  # a model of who waits with what
    last_served: dict[str, int] = {}
    pushed = 0
    for step, (op, arg) in enumerate(ops):
        if op == "push":
            if len(queued.get(arg, [])) >= 5:
                with pytest.raises(QueueFull):
                    queue.push(arg, pushed)
            else:
                position = queue.push(arg, pushed)
                queued.setdefault(arg, []).append(pushed)
                assert queue.snapshot()[position - 1].run_id == pushed
            pushed += 1
        elif op == "cancel":
            owner = next((u for u, runs in queued.items() if arg in runs), None)
            assert queue.cancel(arg) is (owner is not None)
            if owner is not None:
                queued[owner].remove(arg)
        else:
            predicted = queue.snapshot()
            item = queue.pop_next()
            waiting = [u for u, runs in queued.items() if runs]
            if not waiting:
                assert item is None and predicted == []
                continue
            user, run = item
            assert (predicted[0].user, predicted[0].run_id) == (user, run)
            assert run == queued[user][0]  # each user's runs in the order they were queued
            assert last_served.get(user, -1) == min(last_served.get(u, -1) for u in waiting)
            queued[user].pop(0)
            last_served[user] = step
        snapshot = queue.snapshot()
        assert [w.position for w in snapshot] == list(range(1, len(snapshot) + 1))
        assert sorted(w.run_id for w in snapshot) == sorted(r for runs in queued.values() for r in runs)
        assert len(queue) == len(snapshot)
