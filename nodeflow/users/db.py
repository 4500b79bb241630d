"""The one SQLite file (``ROOT/users.sqlite``) that holds a multi-user server's accounts, sign-in
sessions, API tokens, projects, shares and class templates.

One file, so that removing a user removes everything of theirs in one transaction (foreign keys
cascade). WAL mode lets ``nodeflow users ...`` change accounts while the server runs.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    password TEXT NOT NULL,
    admin INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    digest TEXT PRIMARY KEY,
    user TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (user);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    label TEXT NOT NULL,
    digest TEXT NOT NULL,
    created REAL NOT NULL,
    last_used REAL
);
CREATE INDEX IF NOT EXISTS tokens_by_user ON tokens (user);
CREATE TABLE IF NOT EXISTS projects (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    title TEXT NOT NULL,
    created REAL NOT NULL,
    archived INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS projects_by_owner ON projects (owner, created);
CREATE TABLE IF NOT EXISTS shares (
    project TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    user TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    PRIMARY KEY (project, user)
);
CREATE INDEX IF NOT EXISTS shares_by_user ON shares (user);
CREATE TABLE IF NOT EXISTS class_templates (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    author TEXT NOT NULL,
    graph TEXT NOT NULL,
    created REAL NOT NULL
);
"""


class Database:
    """One connection shared by threads (serialised by a lock), as the run store does."""

    def __init__(self, path: Path, schema: str = SCHEMA) -> None:
        """``schema``: the tables (the accounts' by default; a server's assignments keep theirs so)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():  # it holds password hashes: its owner's only (SQLite gives its journals the same mode)
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # as the run store: whole transactions, fewer fsyncs
        self._db.execute("PRAGMA foreign_keys=ON")
        with self._lock:
            self._db.executescript(schema)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: all of it or none of it."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def query(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, tuple(args)).fetchall()

    def changes(self) -> ChangeProbe:
        """A cheap way to learn that someone changed the database (see :class:`ChangeProbe`)."""
        return ChangeProbe(self.path)


class ChangeProbe:
    """Whether the database changed since the last look, whoever changed it: this process or another
    (``nodeflow users remove`` while the server runs). SQLite's ``PRAGMA data_version`` moves with
    every commit made on any *other* connection, so the probe keeps a read-only connection of its
    own; asking costs microseconds and no lock, so it can be asked on every socket event. Use one
    probe from one thread at a time."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True, timeout=5,
                                   check_same_thread=False, isolation_level=None)

    def version(self) -> int:
        """A number that differs from the last one returned after any commit in between."""
        return self._db.execute("PRAGMA data_version").fetchone()[0]

    def close(self) -> None:
        self._db.close()
