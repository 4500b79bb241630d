"""Accounts, API tokens, projects, sharing, class templates and disk quotas of a multi-user server,
and the ``nodeflow users`` command."""

from __future__ import annotations

import contextlib
import json
import io
import os
import sqlite3
import stat
import subprocess
import sys
import unittest.mock
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodeflow.graph import Graph
from nodeflow.templates import template_path
from nodeflow.users import (AccountError, Accounts, DiskQuota, NotAllowed, ProjectNotFound, Projects,
                            QuotaExceeded)
from nodeflow.users import command as users_command
from nodeflow.cli import main

ROOT = Path(__file__).resolve().parents[2]
#: the cheapest Argon2 the library allows, so tests do not spend 64 MiB and 50 ms per hash
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def accounts(tmp_path):
    store = Accounts(tmp_path / "root", hasher=CHEAP)
    yield store
    store.close()


@pytest.fixture
def people(accounts):
    """An admin (the teacher) and two students."""
    return (accounts.add("teacher", "teacher-pass", admin=True), accounts.add("alice", "alice-pass"),
            accounts.add("bob", "bob-pass-1"))


# -- accounts -----------------------------------------------------------------------------------------


def test_a_password_is_stored_only_as_an_argon2id_hash(tmp_path):
    accounts = Accounts(tmp_path, hasher=None)  # the library's own defaults (RFC 9106 low-memory)
    accounts.add("alice", "correct horse battery")
    accounts.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("users.sqlite*"))
    assert b"correct horse battery" not in raw
    with sqlite3.connect(tmp_path / "users.sqlite") as db:
        stored = db.execute("SELECT password FROM users").fetchone()[0]
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert stat.S_IMODE((tmp_path / "users.sqlite").stat().st_mode) == 0o600


def test_verify_knows_the_password_and_nothing_else(accounts, people):
    assert accounts.verify("alice", "alice-pass").name == "alice"
    assert accounts.verify("alice", "bob-pass-1") is None
    assert accounts.verify("alice", "") is None
    assert accounts.verify("nobody", "alice-pass") is None
    assert accounts.verify("teacher", "teacher-pass").admin is True
    assert [u.name for u in accounts.list()] == ["alice", "bob", "teacher"]


@pytest.mark.parametrize("name", ["Bob", "", "../x", "x/y", ".hidden", "-a", "a-", "a" * 33, "con", "lpt1",
                                  "é", "a b", "a\x00b", "a\\b"])
def test_names_that_cannot_be_folder_names_are_refused(accounts, name):
    with pytest.raises(AccountError, match="not allowed|reserved"):
        accounts.add(name, "long-enough")
    assert accounts.list() == []
    assert not (accounts.root / "users").exists() or list((accounts.root / "users").iterdir()) == []


def test_good_names_and_the_checks_on_passwords(accounts):
    for name in ("a", "x1", "john.smith", "m_2", "a" * 32):
        accounts.add(name, "long-enough")
        assert accounts.user_dir(name).is_dir()
    with pytest.raises(AccountError, match="at least 8 characters"):
        accounts.add("short", "1234567")
    with pytest.raises(AccountError, match="at most 1024"):
        accounts.add("long", "x" * 1025)
    with pytest.raises(AccountError, match="already exists"):
        accounts.add("a", "another-password")
    assert accounts.get("short") is None and accounts.verify("a", "long-enough") is not None


def test_a_new_password_ends_every_sign_in_but_keeps_api_tokens(accounts, people):
    first, second = accounts.start_session(people[1]), accounts.start_session(people[1])
    _, token = accounts.create_token("alice", "laptop")
    bobs = accounts.start_session(people[2])
    accounts.set_password("alice", "a-new-password")
    assert accounts.session_user(first) is None and accounts.session_user(second) is None
    assert accounts.session_user(bobs).name == "bob"
    assert accounts.token_user(token).name == "alice"
    assert accounts.verify("alice", "alice-pass") is None and accounts.verify("alice", "a-new-password")
    with pytest.raises(AccountError, match="no user 'carol'"):
        accounts.set_password("carol", "whatever-1")


def test_a_session_ends_when_it_expires_or_is_ended(tmp_path):
    clock = Clock()
    accounts = Accounts(tmp_path, hasher=CHEAP, clock=clock)
    alice = accounts.add("alice", "alice-pass")
    secret = accounts.start_session(alice)
    assert accounts.session_user(secret) == alice
    assert accounts.session_user(secret + "x") is None
    clock.now += 7 * 24 * 3600 + 1
    assert accounts.session_user(secret) is None
    again = accounts.start_session(alice)  # also clears the expired row
    assert accounts.db.query("SELECT COUNT(*) AS n FROM sessions")[0]["n"] == 1
    accounts.end_session(again)
    assert accounts.session_user(again) is None


def test_an_unknown_name_costs_a_hash_like_a_known_one(tmp_path):
    """Which names exist cannot be told from how long a wrong password takes (measured through
    HTTP in tests/reliability/test_login.py)."""
    verified = []

    class Counting(PasswordHasher):
        def verify(self, hash, password):
            verified.append(hash)
            return super().verify(hash, password)

    accounts = Accounts(tmp_path, hasher=Counting(time_cost=1, memory_cost=8, parallelism=1))
    accounts.add("alice", "alice-pass")
    assert accounts.verify("nobody", "x") is None
    assert accounts.verify("alice", "x") is None
    assert len(verified) == 2 and all(h.startswith("$argon2id$v=19$m=8,t=1,p=1$") for h in verified)


def test_a_hash_made_with_weaker_parameters_is_upgraded_at_sign_in(tmp_path):
    Accounts(tmp_path, hasher=CHEAP).add("alice", "alice-pass")
    stronger = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
    accounts = Accounts(tmp_path, hasher=stronger)
    assert accounts.verify("alice", "alice-pass") is not None
    stored = accounts.db.query("SELECT password FROM users")[0]["password"]
    assert "m=16,t=2,p=1" in stored and accounts.verify("alice", "alice-pass") is not None


def test_removing_a_user_moves_their_files_aside_and_ends_everything_of_theirs(accounts, people):
    projects = Projects(accounts)
    teacher, alice, bob = people
    own = projects.create(bob, "Bob's cats")
    (own.path / "data" / "x.txt").write_text("kept")
    alices = projects.create(alice, "Alice's")
    projects.share(alice, alices.id, "bob")
    session = accounts.start_session(bob)
    _, token = accounts.create_token("bob", "script")
    aside = accounts.remove("bob")
    assert aside is not None and aside.parent == accounts.root / "removed"
    assert (aside / "projects" / own.id / "data" / "x.txt").read_text() == "kept"
    assert accounts.session_user(session) is None and accounts.token_user(token) is None
    with pytest.raises(ProjectNotFound):
        projects.get(teacher, own.id)
    assert projects.get(alice, alices.id).shared_with == ()
    # a new user of the same name starts empty and sees none of the old one's things
    new_bob = accounts.add("bob", "other-pass")
    assert projects.mine(new_bob) == [] and projects.shared_with_me(new_bob) == []
    assert list(accounts.user_dir("bob").iterdir()) == []
    with pytest.raises(AccountError, match="no user"):
        accounts.remove("carol")


# -- API tokens ---------------------------------------------------------------------------------------


def test_a_token_is_shown_once_stored_hashed_listed_and_revoked(accounts, people):
    info, secret = accounts.create_token("alice", "  laptop ")
    assert info.label == "laptop" and secret.startswith(f"nf_{info.id}_")
    raw = b"".join(p.read_bytes() for p in accounts.root.glob("users.sqlite*"))
    assert secret.split("_", 2)[2].encode() not in raw
    listed = accounts.tokens("alice")
    assert [t.id for t in listed] == [info.id] and not any(secret in repr(t) for t in listed)
    assert accounts.token_user(secret).name == "alice"
    assert accounts.tokens("alice")[0].last_used is not None
    accounts.revoke_token("alice", info.id)
    assert accounts.token_user(secret) is None and accounts.tokens("alice") == []


def test_a_token_opens_only_its_own_account(accounts, people):
    a_info, a_token = accounts.create_token("alice", "a")
    b_info, b_token = accounts.create_token("bob", "b")
    assert accounts.token_user(a_token).name == "alice" and accounts.token_user(b_token).name == "bob"
    a_secret, b_secret = a_token.split("_", 2)[2], b_token.split("_", 2)[2]
    forged = [f"nf_{b_info.id}_{a_secret}", f"nf_{a_info.id}_{b_secret}", a_token[:-1] + ("A" if a_token[-1] != "A" else "B"),
              a_token + "x", f"xx_{a_info.id}_{a_secret}", a_secret, "", "nf__", f"nf_{a_info.id}_"]
    assert [accounts.token_user(t) for t in forged] == [None] * len(forged)
    with pytest.raises(AccountError, match="no token"):  # bob cannot revoke alice's token
        accounts.revoke_token("bob", a_info.id)
    assert accounts.token_user(a_token).name == "alice"
    assert accounts.tokens("bob") == [accounts.tokens("bob")[0]] and accounts.tokens("bob")[0].id == b_info.id


@pytest.mark.parametrize("label", ["", "   ", "x" * 65, "tab\there"])
def test_a_token_needs_a_printable_name(accounts, people, label):
    with pytest.raises(AccountError, match="a token needs a name"):
        accounts.create_token("alice", label)
    assert accounts.tokens("alice") == []


# -- projects -----------------------------------------------------------------------------------------


def test_a_project_is_a_workspace_folder_of_its_own_with_a_random_id(accounts, people):
    projects = Projects(accounts)
    alice = people[1]
    made = [projects.create(alice, f"Project {i}") for i in range(5)]
    ids = [p.id for p in made]
    assert len(set(ids)) == 5 and all(len(i) == 24 and int(i, 16) >= 0 for i in ids)
    for a, b in zip(ids, ids[1:]):  # not a counter: consecutive ids differ almost everywhere
        assert sum(x != y for x, y in zip(a, b)) >= 8
    for project in made:
        assert project.path == accounts.root / "users" / "alice" / "projects" / project.id
        assert (project.path / "data").is_dir() and (project.path / "graphs").is_dir()
    assert [p.title for p in projects.mine(alice)] == [f"Project {i}" for i in reversed(range(5))]
    with pytest.raises(AccountError, match="title"):
        projects.create(alice, "\n")


def test_who_may_read_and_write_a_project(accounts, people):
    projects = Projects(accounts)
    teacher, alice, bob = people
    project = projects.create(alice, "Cats")
    assert projects.can(alice, project, "read") and projects.can(alice, project, "write")
    assert not projects.can(bob, project, "read") and not projects.can(bob, project.id, "write")
    assert projects.can(teacher, project, "read") and not projects.can(teacher, project, "write")
    # another user's project answers exactly as an id nobody has
    with pytest.raises(ProjectNotFound) as theirs:
        projects.get(bob, project.id)
    with pytest.raises(ProjectNotFound) as nobodys:
        projects.get(bob, "0" * 24)
    assert str(theirs.value).replace(project.id, "ID") == str(nobodys.value).replace("0" * 24, "ID")
    with pytest.raises(NotAllowed, match="read-only"):
        projects.get(teacher, project.id, "write")
    projects.share(alice, project.id, "bob")
    assert projects.get(bob, project.id).shared_with == ("bob",)
    assert projects.can(bob, project.id, "read") and not projects.can(bob, project.id, "write")
    assert [p.id for p in projects.shared_with_me(bob)] == [project.id] and projects.mine(bob) == []
    with pytest.raises(NotAllowed, match="only alice can rename"):
        projects.rename(bob, project.id, "Mine now")
    with pytest.raises(NotAllowed, match="only alice can share"):
        projects.share(bob, project.id, "teacher")
    projects.unshare(alice, project.id, "bob")
    with pytest.raises(ProjectNotFound):
        projects.get(bob, project.id)
    assert projects.get(alice, project.id).title == "Cats"


@pytest.mark.parametrize("bad_id", ["", "../../etc", "0" * 23, "g" * 24, "A" * 24, "0" * 25, None, 7])
def test_ids_that_are_not_project_ids_are_not_found(accounts, people, bad_id):
    projects = Projects(accounts)
    with pytest.raises(ProjectNotFound, match="no project"):
        projects.get(people[0], bad_id)
    assert projects.can(people[0], "" if bad_id is None else str(bad_id), "read") is False


def test_rename_archive_and_the_lists(accounts, people):
    projects = Projects(accounts)
    teacher, alice, bob = people
    first, second = projects.create(alice, "First"), projects.create(bob, "Bob's")
    assert projects.rename(alice, first.id, " Renamed ").title == "Renamed"
    archived = projects.archive(alice, first.id)
    assert archived.archived and projects.mine(alice) == [] and [p.id for p in projects.mine(alice, archived=True)] == [first.id]
    with pytest.raises(NotAllowed, match="archived; restore it first"):
        projects.get(alice, first.id, "write")
    assert (first.path / "data").is_dir()  # archiving keeps every file
    assert not projects.archive(alice, first.id, archived=False).archived
    assert {p.id for p in projects.everyone(teacher)} == {first.id, second.id}
    with pytest.raises(NotAllowed, match="only an admin"):
        projects.everyone(alice)
    with pytest.raises(AccountError, match="no user 'carol'"):
        projects.share(alice, first.id, "carol")
    with pytest.raises(AccountError, match="already open to its owner"):
        projects.share(alice, first.id, "alice")
    assert Projects(accounts).count_by_owner() == {"alice": 1, "bob": 1}


# -- class templates ------------------------------------------------------------------------------------


def test_a_class_template_opens_as_each_users_own_copy(accounts, people):
    projects = Projects(accounts)
    teacher, alice, bob = people
    graph = Graph.load(template_path("cats_vs_dogs_finetune"))
    with pytest.raises(NotAllowed, match="only an admin"):
        projects.publish_template(alice, graph, "Week 1")
    week1 = projects.publish_template(teacher, graph, "Week 1: cats vs dogs")
    assert [t.title for t in projects.templates()] == ["Week 1: cats vs dogs"]

    project, path = projects.open_template(alice, week1.id)
    assert project.owner == "alice" and project.title == "Week 1: cats vs dogs"
    assert path == project.path / "graphs" / "week-1-cats-vs-dogs.json"
    assert Graph.load(path).model_dump() == graph.model_dump()
    # a second copy into the same project gets a free name; the first (edited) is kept
    path.write_text(path.read_text().replace("Cats", "Kittens"))
    edited = path.read_text()
    _, again = projects.open_template(alice, week1.id, project.id)
    assert again.name == "week-1-cats-vs-dogs-2.json" and path.read_text() == edited
    assert sorted(p.name for p in (project.path / "graphs").iterdir()) == ["week-1-cats-vs-dogs-2.json",
                                                                           "week-1-cats-vs-dogs.json"]
    # bob cannot copy into alice's project, even when it is shared with him
    with pytest.raises(ProjectNotFound):
        projects.open_template(bob, week1.id, project.id)
    projects.share(alice, project.id, "bob")
    with pytest.raises(NotAllowed):
        projects.open_template(bob, week1.id, project.id)
    bobs, _ = projects.open_template(bob, week1.id)
    assert bobs.owner == "bob" and bobs.id != project.id
    projects.unpublish_template(teacher, week1.id)
    assert projects.templates() == [] and path.exists()
    with pytest.raises(ProjectNotFound, match="no class template"):
        projects.open_template(alice, week1.id)


# -- disk quota -----------------------------------------------------------------------------------------


def test_usage_counts_a_users_files_once_and_follows_no_link(accounts, people, tmp_path):
    alice = people[1]
    project = Projects(accounts).create(alice, "p")
    (project.path / "data" / "a.bin").write_bytes(b"x" * 1000)
    os.link(project.path / "data" / "a.bin", project.path / "data" / "hard.bin")
    outside = tmp_path / "elsewhere.bin"
    outside.write_bytes(b"y" * 50_000)
    (project.path / "data" / "link.bin").symlink_to(outside)
    (project.path / "data" / "dirlink").symlink_to(tmp_path)
    quota = DiskQuota(accounts, limit=10_000)
    assert quota.usage("alice") == 1000
    assert quota.usage("bob") == 0 and quota.left("alice") == 9000


def test_usage_is_cached_moved_by_writes_and_measured_again_when_asked(accounts, people):
    clock = Clock()
    quota = DiskQuota(accounts, limit=5000, max_age=300, clock=clock)
    data = Projects(accounts).create(people[1], "p").path / "data"
    (data / "a.bin").write_bytes(b"x" * 1000)
    assert quota.usage("alice") == 1000
    (data / "b.bin").write_bytes(b"x" * 2000)  # written behind the quota's back (a run's worker)
    assert quota.usage("alice") == 1000
    quota.add("alice", 2000)  # the server says what it wrote
    assert quota.usage("alice") == 3000
    (data / "c.bin").write_bytes(b"x" * 500)
    quota.forget("alice")
    assert quota.usage("alice") == 3500
    (data / "d.bin").write_bytes(b"x" * 500)
    clock.now += 301
    assert quota.usage("alice") == 4000


def test_over_quota_new_work_is_refused_and_nothing_stored_is_lost(accounts, people):
    quota = DiskQuota(accounts, limit=3000)
    data = Projects(accounts).create(people[1], "p").path / "data"
    (data / "a.bin").write_bytes(b"x" * 2500)
    quota.check("alice")
    quota.check("alice", incoming=500)
    with pytest.raises(QuotaExceeded, match=r"alice's disk quota is full \(2.4 KiB used \+ 1000 B to add, quota "
                                            r"2.9 KiB.*nothing stored was removed"):
        quota.check("alice", incoming=1000)
    (data / "b.bin").write_bytes(b"x" * 600)
    quota.forget("alice")
    with pytest.raises(QuotaExceeded, match="3.0 KiB used, quota 2.9 KiB"):
        quota.check("alice")  # a run, whose size is not known in advance
    assert (data / "a.bin").stat().st_size == 2500 and (data / "b.bin").exists()
    assert quota.left("alice") == 0 and DiskQuota(accounts, limit=None).left("alice") is None
    DiskQuota(accounts, limit=None).check("alice", incoming=10**12)


# -- the command line -----------------------------------------------------------------------------------


def nodeflow(*args, stdin=""):
    return subprocess.run([sys.executable, "-m", "nodeflow.cli", *args], input=stdin, capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


def test_users_commands_as_a_script_runs_them(tmp_path):
    root = str(tmp_path / "root")
    added = nodeflow("users", "add", "teacher", "--admin", "--workspace", root, stdin="s3cret-pass\n")
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == f"added admin teacher in {root}"
    assert nodeflow("users", "add", "alice", "--workspace", root, stdin="alice-pass").returncode == 0
    listed = nodeflow("users", "list", "--workspace", root)
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["NAME", "ROLE", "ADDED", "PROJECTS"]
    assert [line.split()[:2] for line in lines[1:]] == [["alice", "user"], ["teacher", "admin"]]
    assert nodeflow("users", "--workspace", root).stdout == listed.stdout
    changed = nodeflow("users", "passwd", "alice", "--workspace", root, stdin="another-pass\n")
    assert changed.returncode == 0 and "password of alice changed" in changed.stdout
    accounts = Accounts(tmp_path / "root", hasher=CHEAP)
    assert accounts.verify("alice", "another-pass") and accounts.verify("teacher", "s3cret-pass").admin
    removed = nodeflow("users", "remove", "alice", "--workspace", root)
    assert removed.returncode == 0 and f"{root}/removed/alice-" in removed.stdout
    assert [u.name for u in accounts.list()] == ["teacher"]
    for result in (added, listed, changed, removed):
        assert "s3cret-pass" not in result.stdout + result.stderr and "another-pass" not in result.stdout + result.stderr


@pytest.mark.parametrize("args, stdin, message", [
    (["add", "Alice"], "long-enough\n", "error: user name 'Alice' is not allowed"),
    (["add", "alice"], "short\n", "error: a password needs at least 8 characters"),
    (["add", "alice"], "", "error: no password on standard input"),
    (["add", "teacher"], "long-enough\n", "error: user 'teacher' already exists"),
    (["passwd", "carol"], "long-enough\n", "error: no user 'carol'"),
    (["remove", "carol"], "", "error: no user 'carol'"),
])
def test_users_command_errors_are_one_line(tmp_path, monkeypatch, capsys, args, stdin, message):
    Accounts(tmp_path, hasher=CHEAP).add("teacher", "teacher-pass")
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    assert main(["users", *args, "--workspace", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(message) and len(err.strip().splitlines()) == 1, err
    assert [u.name for u in Accounts(tmp_path, hasher=CHEAP).list()] == ["teacher"]


def test_on_a_terminal_the_password_is_asked_twice(tmp_path, monkeypatch, capsys):
    answers = iter(["first-try-1", "first-try-2", "same-pass-1", "same-pass-1"])
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr(users_command.getpass, "getpass", lambda prompt: next(answers))
    root = str(tmp_path / "root")
    assert main(["users", "add", "alice", "--workspace", root]) == 1
    assert "the two passwords differ" in capsys.readouterr().err
    assert main(["users", "add", "alice", "--workspace", root]) == 0
    assert Accounts(tmp_path / "root", hasher=CHEAP).verify("alice", "same-pass-1") is not None


def test_the_users_command_is_in_the_help():
    result = nodeflow("users", "--help")
    assert result.returncode == 0 and all(word in result.stdout for word in ("add", "list", "passwd", "remove"))


# -- any input ---------------------------------------------------------------------------------------------

texts = st.one_of(st.text(max_size=40), st.sampled_from(["..", "../x", "/etc", "a/b", "", " ", "con", "x" * 33,
                                                         "alice", "a\x00b", "\u202e", "0" * 24]))


def state(accounts: Accounts) -> tuple:
    """Everything a refused operation must leave as it was: the rows and the files."""
    rows = tuple(tuple(map(tuple, accounts.db.query(f"SELECT * FROM {table} ORDER BY 1, 2")))
                 for table in ("users", "projects", "shares", "tokens", "class_templates"))
    files = tuple(sorted(str(p.relative_to(accounts.root)) for p in accounts.root.rglob("*")
                         if "users.sqlite" not in p.name))
    return rows, files


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=texts, password=texts, stdin_name=texts)
def test_any_user_name_or_password_is_added_or_refused_in_one_line(tmp_path_factory, name, password, stdin_name):
    root = tmp_path_factory.mktemp("users")
    accounts = Accounts(root, hasher=CHEAP)
    accounts.add("alice", "alice-pass")
    before = state(accounts)
    try:
        accounts.add(name, password)
    except AccountError:
        assert state(accounts) == before
    else:
        assert accounts.verify(name, password) is not None and accounts.user_dir(name).is_dir()
    before = state(accounts)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), \
            unittest.mock.patch.object(sys, "stdin", io.StringIO(password + "\n")), \
            unittest.mock.patch.object(users_command, "Accounts", lambda folder: Accounts(folder, hasher=CHEAP)):
        code = main(["users", "add", "--workspace", str(root), "--", stdin_name])  # "--": a name may start with "-"
    assert code in (0, 1)
    if code == 1:
        assert err.getvalue().startswith("error: ") and len(err.getvalue().strip().splitlines()) == 1
        assert state(accounts) == before


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(ops=st.lists(st.tuples(st.sampled_from(["create", "rename", "archive", "share", "unshare", "get", "token",
                                               "revoke", "open_template"]),
                              st.sampled_from(["alice", "bob", "teacher"]), texts, texts), max_size=8))
def test_any_project_operation_is_done_or_refused_and_refusals_change_nothing(tmp_path_factory, ops):
    accounts = Accounts(tmp_path_factory.mktemp("projects"), hasher=CHEAP)
    people = {u.name: u for u in (accounts.add("teacher", "teacher-pass", admin=True),
                                  accounts.add("alice", "alice-pass"), accounts.add("bob", "bob-pass-1"))}
    projects = Projects(accounts)
    own = {name: projects.create(user, f"{name}'s").id for name, user in people.items()}
    template = projects.publish_template(people["teacher"], Graph.load(template_path("cats_vs_dogs_finetune")), "T")
    for op, who, a, b in ops:
        user = people[who]
        target = own.get(a, a)  # a user's name stands for their first project
        before = state(accounts)
        try:
            if op == "create":
                projects.create(user, a)
            elif op == "rename":
                projects.rename(user, target, b)
            elif op == "archive":
                projects.archive(user, target, archived=bool(len(b) % 2))
            elif op == "share":
                projects.share(user, target, b)
            elif op == "unshare":
                projects.unshare(user, target, b)
            elif op == "get":
                projects.get(user, target, "write" if len(b) % 2 else "read")
            elif op == "token":
                accounts.create_token(who, a)
            elif op == "revoke":
                accounts.revoke_token(who, a)
            else:
                projects.open_template(user, template.id if len(b) % 2 else b, target if a else None)
        except (AccountError, ProjectNotFound, NotAllowed):
            assert state(accounts) == before
        # whatever happened, nobody gained write access to someone else's project
        for name, project_id in own.items():
            for other in people.values():
                if other.name != name:
                    assert not projects.can(other, project_id, "write")


def test_the_classroom_parts_benchmark_runs(tmp_path):
    out = tmp_path / "figures.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "classroom_parts.py"), "--quick", "--json",
                             str(out)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    figures = json.loads(out.read_text())
    assert figures["upload_zip"]["images"] == 20 and figures["quota_measure"]["bytes"] == 200 * 100
    assert set(figures["gate_per_request"]) == {"no gate", "cookie", "token"}
    assert figures["fair_queue_30_users"]["runs"] == 60
    jobs = figures["job_process_ready_with_torch"]
    assert set(jobs) == {"spawn", "fork server"} and all(way["processes"] == 2 for way in jobs.values())
    assert all(way["pss_total_mb"] > 100 for way in jobs.values())  # torch really imported in each
