"""The shared server's core (nodeflow.server): one fair queue for the machine over every project's
run queue, the limits on new work, and projects opened on first use and closed when idle. Real
sessions of the test pack, running in this process."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from nodeflow.graph import Graph
from nodeflow.node import Registry
from nodeflow.runs import RunStore
from nodeflow.server import ClassServer, FairTurns, WorkRefused, latest_graph
from nodeflow.users import Accounts, NotAllowed, ProjectNotFound
from tests import gatepack, nodepack
from tests.waiting import wait_for

CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pack() -> Registry:
    registry = Registry()
    registry.add_module(nodepack, source="test pack")
    registry.add_module(gatepack, source="test pack")
    return registry


def gate_graph(until: Path, name: str = "gated") -> Graph:
    return Graph.from_data({"format": "nodeflow.graph", "version": 1, "name": name,
                            "nodes": [{"id": "gate", "type": "test.gate", "params": {"until": str(until)}}],
                            "edges": []})


@pytest.fixture
def classroom(tmp_path):
    """A server of the test pack with three users (teacher is an admin), each with one project."""
    accounts = Accounts(tmp_path / "root", hasher=CHEAP)
    server = ClassServer(tmp_path / "root", pack(), accounts, device="cpu", isolate=False, clock=Clock())
    users = {name: accounts.add(name, f"{name}-password", admin=name == "teacher") for name in ("alice", "bob", "teacher")}
    projects = {name: server.projects.create(user, f"{name}'s project") for name, user in users.items()}
    yield server, users, projects
    server.close()


def session_of(server, projects, name, graph=None):
    session = server.session(projects[name])
    if graph is not None:
        session.document.replace(graph)
    return session


# -- the fair turns ----------------------------------------------------------------------------------


def test_a_free_slot_is_taken_at_once_then_jobs_wait_round_robin_by_user():
    turns = FairTurns(slots=1)
    assert turns.acquire("alice", "pa", [1], blocking=False)  # nothing runs: straight away
    assert not turns.acquire("alice", "pa2", [1], blocking=False)  # a second project of alice's waits
    assert not turns.acquire("bob", "pb", [7], blocking=False)
    running, waiting, _, _ = turns.state()
    assert running == [("alice", "pa", (1,))]
    assert [(user, project) for user, project, _ in waiting] == [("bob", "pb"), ("alice", "pa2")]
    turns.release("pa")
    assert turns.acquire("bob", "pb", [7], blocking=True)  # handed the slot: bob was never served
    turns.release("pb")
    assert turns.acquire("alice", "pa2", [1], blocking=True)
    assert [(user, project) for user, project, _ in turns.starts] == [("alice", "pa"), ("bob", "pb"), ("alice", "pa2")]


def test_a_withdrawn_job_stops_waiting_and_a_closed_queue_answers_no():
    turns = FairTurns(slots=1)
    assert turns.acquire("alice", "pa", [1], blocking=False)
    assert not turns.acquire("bob", "pb", [1], blocking=False)
    answers: list[bool] = []
    waiter = threading.Thread(target=lambda: answers.append(turns.acquire("bob", "pb", [1], blocking=True)))
    waiter.start()
    assert turns.withdraw("pb") and not turns.withdraw("pb")
    waiter.join(10)
    assert answers == [False] and turns.state()[1] == []
    assert not turns.acquire("carol", "pc", [1], blocking=False)
    turns.close()  # every waiting job is told no; nothing new may start
    turns.release("pa")
    assert not turns.acquire("carol", "pc", [1], blocking=True)
    assert not turns.acquire("dave", "pd", [1], blocking=False)


def test_a_project_still_finishing_its_job_is_passed_over_for_a_free_slot():
    turns = FairTurns(slots=2)
    assert turns.acquire("alice", "pa", [1], blocking=False)
    assert turns.acquire("bob", "pb", [1], blocking=False)
    assert not turns.acquire("alice", "pa", [2], blocking=False)  # queued before its first job's turn ended
    assert not turns.acquire("carol", "pc", [1], blocking=False)
    turns.release("pb")  # a slot is free: alice's project still holds its turn, so carol's job goes
    assert turns.acquire("carol", "pc", [1], blocking=True)
    turns.release("pa")
    assert turns.acquire("alice", "pa", [2], blocking=True)
    assert [(u, p, r) for u, p, r in turns.starts][-2:] == [("carol", "pc", (1,)), ("alice", "pa", (2,))]


# -- through real sessions ---------------------------------------------------------------------------


def test_five_runs_of_alice_then_one_of_bob_bob_starts_second(classroom, tmp_path):
    server, users, projects = classroom
    gate = tmp_path / "open"
    alice = session_of(server, projects, "alice", gate_graph(gate))
    bob = session_of(server, projects, "bob", gate_graph(gate))
    queued = [alice.queue.submit(None, source="api") for _ in range(5)]
    assert [q["status"] for q in queued] == ["running"] + ["queued"] * 4
    mine = bob.queue.submit(None, source="api")
    assert (mine["status"], mine["position"]) == ("queued", 1)  # the machine's queue: bob's run goes next
    assert [alice.runs.get(q["id"])["position"] for q in queued[1:]] == [2, 3, 4, 5]
    everyone = server.queue(users["teacher"])
    assert [(e.user, e.runs, e.position) for e in everyone] == [
        ("alice", (1,), None), ("bob", (1,), 1), ("alice", (2,), 2), ("alice", (3,), 3), ("alice", (4,), 4),
        ("alice", (5,), 5)]
    assert [e.user for e in server.queue(users["bob"])] == ["bob"]  # each sees their own
    gate.touch()
    assert wait_for(lambda: not alice.queue.running and not bob.queue.running and not alice.runs.queued()
                    and not bob.runs.queued(), timeout=60)
    assert [user for user, _, _ in server.turns.starts] == ["alice", "bob", "alice", "alice", "alice", "alice"]
    started = sorted([(r["started"], "alice") for r in alice.runs.list()] + [(r["started"], "bob") for r in bob.runs.list()])
    assert [who for _, who in started][:2] == ["alice", "bob"]  # as each store recorded it too
    assert {r["status"] for r in alice.runs.list() + bob.runs.list()} == {"done"}


def test_new_work_over_the_queue_limit_is_refused_and_nothing_is_queued(classroom, tmp_path):
    server, users, projects = classroom
    server.queue_limit = 2
    alice = session_of(server, projects, "alice", gate_graph(tmp_path / "open"))
    alice.queue.submit()  # running: not waiting
    alice.queue.submit()
    alice.queue.submit()
    with pytest.raises(WorkRefused) as refused:
        alice.queue.submit()
    assert refused.value.status == 429 and "2 runs waiting" in str(refused.value)
    with pytest.raises(WorkRefused):
        alice.sweeps.submit([("gate.value", [1.0, 2.0])])
    assert len(alice.runs.list()) == 3
    bob = session_of(server, projects, "bob", gate_graph(tmp_path / "open"))
    assert bob.queue.submit()["status"] == "queued"  # the limit is per person
    (tmp_path / "open").touch()


def test_over_the_disk_quota_new_runs_are_refused_and_nothing_is_removed(classroom, tmp_path):
    server, users, projects = classroom
    alice = session_of(server, projects, "alice", gate_graph(tmp_path / "open"))
    kept = projects["alice"].path / "data" / "kept.bin"
    kept.write_bytes(b"x" * 5000)
    server.quota.limit = 4000
    server.quota.forget("alice")
    with pytest.raises(WorkRefused) as refused:
        alice.queue.submit()
    assert refused.value.status == 507 and "disk quota is full" in str(refused.value)
    assert alice.runs.list() == [] and kept.read_bytes() == b"x" * 5000


def test_cancelling_a_waiting_job_lets_the_project_queue_go_on(classroom, tmp_path):
    server, users, projects = classroom
    gate = tmp_path / "open"
    alice = session_of(server, projects, "alice", gate_graph(gate))
    bob = session_of(server, projects, "bob", gate_graph(gate))
    alice.queue.submit()
    first, second = bob.queue.submit(), bob.queue.submit()
    assert server.turns.holds(projects["bob"].id)
    assert server.cancel(users["teacher"], projects["bob"].id, first["id"]) == "cancelled"  # an admin: anyone's
    assert wait_for(lambda: bob.runs.get(second["id"])["position"] == 1, timeout=10)
    with pytest.raises(ProjectNotFound):
        server.cancel(users["alice"], projects["bob"].id, second["id"])
    server.projects.share(users["bob"], projects["bob"].id, "alice")
    with pytest.raises(NotAllowed):
        server.cancel(users["alice"], projects["bob"].id, second["id"])
    gate.touch()
    assert wait_for(lambda: bob.runs.get(second["id"])["status"] == "done", timeout=30)
    assert bob.runs.get(first["id"])["status"] == "cancelled"


def test_idle_projects_close_but_not_while_shown_or_busy(classroom, tmp_path):
    server, users, projects = classroom
    alice = session_of(server, projects, "alice")
    bob = session_of(server, projects, "bob", gate_graph(tmp_path / "open"))
    server.hold(projects["teacher"].id)
    session_of(server, projects, "teacher")
    bob.queue.submit()
    server.clock.now += server.idle_seconds + 1
    assert server.close_idle() == [projects["alice"].id]
    assert set(server.open_sessions()) == {projects["bob"].id, projects["teacher"].id}
    assert server.session(projects["alice"]) is not alice  # opened again when asked for
    (tmp_path / "open").touch()
    assert wait_for(lambda: not bob.queue.running, timeout=30)
    server.let_go(projects["teacher"].id)
    server.clock.now += server.idle_seconds + 1
    assert set(server.close_idle()) == {projects["alice"].id, projects["bob"].id, projects["teacher"].id}


def test_unsaved_changes_survive_a_project_closing(classroom, tmp_path):
    server, users, projects = classroom
    alice = session_of(server, projects, "alice", gate_graph(tmp_path / "open", name="first"))
    saved = alice.document.save(projects["alice"].path / "graphs" / "first.json")
    alice.document.edit("rename", id="gate", title="changed, not saved")
    server.clock.now += server.idle_seconds + 1
    assert projects["alice"].id in server.close_idle()
    graph, path, unsaved = latest_graph(projects["alice"].path)
    assert (path, unsaved, graph.node("gate").title) == (saved, True, "changed, not saved")
    again = server.session(projects["alice"])
    assert again.document.graph.node("gate").title == "changed, not saved" and again.document.dirty and again.document.path == saved


def test_runs_queued_before_a_restart_run_when_the_server_starts(tmp_path):
    accounts = Accounts(tmp_path / "root", hasher=CHEAP)
    alice = accounts.add("alice", "alice-password")
    server = ClassServer(tmp_path / "root", pack(), accounts, device="cpu", isolate=False)
    project = server.projects.create(alice, "p")
    server.close()
    RunStore(project.path).create(gate_graph(tmp_path / "open"), None, "api", status="queued")
    (tmp_path / "open").touch()
    again = ClassServer(tmp_path / "root", pack(), accounts, device="cpu", isolate=False)
    try:
        assert again.resume_queued() == [project.id]
        store = again.open_sessions()[project.id].runs
        assert wait_for(lambda: store.get(1)["status"] == "done", timeout=30)
    finally:
        again.close()


def test_a_jobs_worker_process_ends_with_its_turn(tmp_path):
    accounts = Accounts(tmp_path / "root", hasher=CHEAP)
    alice = accounts.add("alice", "alice-password")
    server = ClassServer(tmp_path / "root", pack(), accounts, device="cpu", isolate=True)
    try:
        session = server.session(server.projects.create(alice, "p"))
        session.document.replace(gate_graph(tmp_path / "none"))
        (tmp_path / "none").touch()
        session.queue.submit()
        assert wait_for(lambda: session.runs.get(1)["status"] == "done", timeout=60)
        assert wait_for(lambda: session.worker.pid is None, timeout=10)  # its memory is free for the next job
        assert session.snapshot()["nodes"]["gate"]["state"] in ("done", "cached")
    finally:
        server.close()


def test_closing_the_server_while_jobs_wait_is_quick(classroom, tmp_path):
    server, users, projects = classroom
    alice = session_of(server, projects, "alice", gate_graph(tmp_path / "never"))
    bob = session_of(server, projects, "bob", gate_graph(tmp_path / "never"))
    alice.queue.submit()
    bob.queue.submit()
    started = time.monotonic()
    server.close()
    assert time.monotonic() - started < 8  # the waiting job stops waiting; the running one stops
    assert RunStore(projects["bob"].path).get(1)["status"] == "queued"  # for the next start


def test_a_removed_users_open_project_is_closed_writing_nothing_where_their_folder_was(classroom, tmp_path):
    server, users, projects = classroom
    alice = session_of(server, projects, "alice", gate_graph(tmp_path / "open"))
    alice.document.autosave_delay = 3600.0  # an autosave waits: the unsaved edit below
    alice.document.edit("move", id=alice.document.graph.nodes[0].id, x=5, y=5)
    assert alice.document.dirty
    folder = server.root / "users" / "alice"
    assert server.accounts.remove("alice") is not None and not folder.exists()
    assert server.drop_removed() == [projects["alice"].id]
    assert projects["alice"].id not in server.open_sessions()
    alice.document.flush()  # an autosave left waiting would write now
    server.close_idle()
    assert not folder.exists(), sorted(str(p) for p in folder.rglob("*"))
    assert server.drop_removed() == []  # the others' projects stay open


def test_a_path_outside_a_class_project_says_what_the_student_can_do(classroom, tmp_path):
    from nodeflow.edits import EditError

    server, users, projects = classroom
    alice = session_of(server, projects, "alice")
    alice.document.edit("add_node", type="test.read_folder", id="r")
    with pytest.raises(EditError, match="its own folder only: upload the data into it") as refused:
        alice.document.edit("set_params", id="r", params={"root": str(tmp_path)})
    assert "--allow-root" not in str(refused.value)  # a flag the student cannot use
