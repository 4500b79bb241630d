"""Hand-ins scored for real: two students train small networks in their own projects on a shared
server, hand them in, and the server scores each frozen model on the hidden test set in a process of
its own; the leaderboard shows both with intervals, and the same model handed in twice ties."""

from __future__ import annotations

import io
import shutil
import zipfile

import pytest
from argon2 import PasswordHasher
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodeflow.assignments import AssignmentError, Assignments
from nodeflow.executor import Executor
from nodeflow.handins import Handins
from nodeflow.server import ClassServer
from nodeflow.users import Accounts
from tests.imagegen import make_image_set
from tests.nodes.graphs import classifier_graph

CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
DAY = 86400.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def hidden_zip(tmp_path, per_class: int = 16) -> bytes:
    folder = make_image_set(tmp_path / "hidden-src", per_class=per_class, size=32, layout="folder", seed=99,
                            class_names=("cat", "dog"))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*.jpg")):
            archive.write(path, f"test/{path.relative_to(folder).as_posix()}")
    return buffer.getvalue()


def train_project(server: ClassServer, user, title: str, registry, lr: float = 3e-3, epochs: int = 1):
    """A project of ``user``'s with the shapes data and a trained classifier (node 'train')."""
    project = server.projects.create(user, title)
    make_image_set(project.path / "data" / "shapes", per_class=12, size=32, seed=len(title),
                   class_names=("cat", "dog"))
    graph = classifier_graph("data/shapes", epochs=epochs, lr=lr)
    (project.path / "graphs").mkdir(exist_ok=True)
    graph.save(project.path / "graphs" / "main.json")
    report = Executor(registry, project.path, device="cpu").run(graph, target="train")
    assert report.failure() is None, report.failure()
    return project


@pytest.fixture(scope="module")
def small_assignment(tmp_path_factory, registry):
    """A server's assignments folder with one small open assignment, made once per module (the dataset
    doctor's process looks at its hidden set: seconds); the tests that only need one to hand in to copy it."""
    base = tmp_path_factory.mktemp("small")
    store = Assignments(base / "root", registry, clock=Clock(1_800_000_000.0))
    store.create_from_zip("Shapes", io.BytesIO(hidden_zip(base, per_class=4)), None)
    store.close()
    return base / "root" / "assignments"


@pytest.fixture
def with_small_assignment(tmp_path, small_assignment):
    shutil.copytree(small_assignment, tmp_path / "root" / "assignments")


@pytest.fixture
def classroom(tmp_path, registry):
    accounts = Accounts(tmp_path / "root", hasher=CHEAP)
    users = {n: accounts.add(n, f"{n}-password", admin=n == "teacher") for n in ("teacher", "alice", "bob")}
    server = ClassServer(tmp_path / "root", registry, accounts, device="cpu", isolate=False)
    clock = Clock(1_800_000_000.0)
    store = Assignments(tmp_path / "root", registry, clock=clock)
    yield server, store, Handins(server, store), users, clock
    server.close()
    store.close()


def test_two_students_hand_in_and_the_board_scores_the_hidden_set(classroom, registry, tmp_path):
    server, store, handins, users, clock = classroom
    assignment = store.create_from_zip("Shapes", io.BytesIO(hidden_zip(tmp_path)), clock.now + DAY, per_day=3)
    assert assignment.images == 32 and assignment.classes == ("cat", "dog")
    alice = train_project(server, users["alice"], "mine", registry, lr=3e-3, epochs=2)
    bob = train_project(server, users["bob"], "bobs", registry, lr=1e-6, epochs=1)

    first = handins.hand_in(users["alice"], assignment.id, alice.id, "train")
    again = handins.hand_in(users["alice"], assignment.id, alice.id, "train")  # the same model twice
    theirs = handins.hand_in(users["bob"], assignment.id, bob.id, "train")
    for h in (first, again, theirs):
        assert handins.wait(h.id, timeout=300)
        assert store.handin(h.id).status == "scored", store.handin(h.id).error

    board = store.leaderboard(assignment.id, viewer="alice")
    assert board["half"] == "public" and board["images"] == 16
    rows = {(r["user"], r["handin"]): r for r in board["rows"]}
    assert {u for u, _ in rows} == {"alice", "bob"}
    for row in board["rows"]:
        assert 0 <= row["ci_low"] <= row["accuracy"] <= row["ci_high"] <= 1
        assert row["mine"] == (row["user"] == "alice")
    # alice's two hand-ins are one model: the same answers on the same images, so tied (McNemar p = 1)
    best, latest = rows[("alice", first.id)], rows[("alice", again.id)]
    assert best["accuracy"] == latest["accuracy"] and best["tied_with_best"] and latest["tied_with_best"]
    # the teacher sees the confusion matrix on the hidden set; it counts every hidden image
    detail = store.detail(first.id)
    assert detail["confusion"]["classes"] == ["cat", "dog"]
    assert sum(map(sum, detail["confusion"]["matrix"])) == 32
    assert detail["graph"]["nodes"]

    # after the deadline the board scores the private half: other images, the same people
    clock.now += 2 * DAY
    private = store.leaderboard(assignment.id, viewer="bob")
    assert private["half"] == "private" and private["images"] == 16
    assert {r["user"] for r in private["rows"]} == {"alice", "bob"}
    assert [r["user"] for r in private["rows"] if r["mine"]] == ["bob"]
    with pytest.raises(AssignmentError, match="deadline") as refused:
        handins.hand_in(users["bob"], assignment.id, bob.id, "train")
    assert refused.value.status == 409
    grades = store.grades_csv(assignment.id).splitlines()
    assert grades[0].startswith("user,handins,best_handin,private_accuracy") and len(grades) == 3


def test_an_untrained_node_is_refused_naming_it(with_small_assignment, classroom, registry, tmp_path):
    server, store, handins, users, clock = classroom
    [assignment] = store.list()
    project = server.projects.create(users["alice"], "fresh")
    make_image_set(project.path / "data" / "shapes", per_class=6, size=32, class_names=("cat", "dog"))
    (project.path / "graphs").mkdir(exist_ok=True)
    classifier_graph("data/shapes", epochs=1).save(project.path / "graphs" / "main.json")
    with pytest.raises(AssignmentError, match="node 'train' is not trained") as refused:
        handins.hand_in(users["alice"], assignment.id, project.id, "train")
    assert refused.value.status == 409
    with pytest.raises(AssignmentError, match="'eval' gives no trained model"):
        handins.hand_in(users["alice"], assignment.id, project.id, "eval")
    assert store.handins(assignment.id) == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(assignment=st.one_of(st.just("<open>"), st.text(max_size=60)),
       project=st.one_of(st.sampled_from(["<own>", "<bob's>"]), st.text(max_size=60)),
       node=st.one_of(st.sampled_from(["train", "eval", "input", ""]), st.text(max_size=60)))
def test_a_hand_in_from_the_editor_is_refused_with_a_reason_and_records_nothing(with_small_assignment, classroom,
                                                                                tmp_path, assignment, project, node):
    """What the editor's "Hand in…" sends (any assignment, project and node, as a crafted page may):
    a hand-in or the reason it was refused, never an exception; nothing recorded after a refusal."""
    server, store, handins, users, clock = classroom
    if not server.projects.mine(users["alice"]):
        for who in ("alice", "bob"):
            made = server.projects.create(users[who], f"{who}'s")
            (made.path / "graphs").mkdir(exist_ok=True)
            classifier_graph("data/shapes", epochs=1).save(made.path / "graphs" / "main.json")
    real = store.list()[0]
    projects = {"<own>": server.projects.mine(users["alice"])[0].id, "<bob's>": server.projects.mine(users["bob"])[0].id}
    answer = handins.hand_in_or_refusal(users["alice"], real.id if assignment == "<open>" else assignment,
                                        projects.get(project, project), node)
    assert isinstance(answer, str) and answer  # nothing there is trained: always refused, with a reason
    if (assignment, project, node) == ("<open>", "<own>", "train"):
        assert "is not trained" in answer
    assert store.handins(real.id) == []
