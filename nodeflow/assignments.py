"""Class competitions on a shared server: an admin sets an assignment with a hidden test set, students
hand in a trained model, the server scores it and keeps an honest leaderboard.

- The hidden set is an upload like any other (the upload rules: streaming limits, zip bombs, paths),
  looked at by the dataset doctor, and stored in ``ROOT/assignments/ID/data/hidden``: outside every
  project, so a graph's path pointing there is refused as any path outside the project is
  (:mod:`nodeflow.paths`), and no project route can name it.
- A hand-in freezes the node's current cached model (its cache entry is copied beside the hand-in),
  waits its turn in the machine's fair queue (:class:`~nodeflow.server.FairTurns`), and is scored by
  the server itself in a process of its own under the job's limits: the catalogue's image folder and
  evaluate nodes on the hidden images, fed the frozen model. Nothing of the student's graph runs.
- Nothing about a hidden image reaches a student: no name, no label, no path, no prediction. What a
  student sees is counts and shares: the leaderboard's accuracy with its 95% Wilson interval, and
  whether it is tied with the best (McNemar's exact test on the same images).
- Before the deadline the board scores on a fixed public half of the hidden set, after it on the
  private half (Kaggle's split): a model tuned to the public half gains nothing on the private one.

Who may do what is decided once, in :meth:`Assignments.desk`: an admin gets the whole object, anyone
else a :class:`StudentDesk` bound to their name that offers the student operations and nothing else.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import secrets
import shutil
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from nodeflow.compare import interval, mcnemar
from nodeflow.graph import Graph
from nodeflow.limits import NO_LIMITS, JobLimits, limit_memory
from nodeflow.node import Registry
from nodeflow.project_data import ProjectData
from nodeflow.uploads import UploadLimits
from nodeflow.users import User
from nodeflow.users.db import Database
from nodeflow.users.projects import check_title
from nodeflow.worker import start_child

#: the folder of a server's assignments, under its root
FOLDER = "assignments"
#: the hidden set's folder name in an assignment's data folder
HIDDEN = "hidden"
#: a tie with the best: McNemar's exact p-value at least this
TIE_P = 0.05
#: hand-ins one student may make per day, unless the assignment says otherwise
PER_DAY = 5
#: the port type of a trained model (what a hand-in hands in)
TRAINED = "TrainedModel"
#: the node types the server scores with (found in the catalogue by type)
SCORING_TYPES = ("data.image_folder", "data.format", "eval.evaluate")
#: the scoring nodes' ids in the scoring graph (no student's graph has ids with this prefix... and if
#: it did, they are renamed: see _scoring_graph)
PREFIX = "__hidden_"
SCORE_FILE = "score.json"

SCHEMA = """
CREATE TABLE IF NOT EXISTS assignments (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    created REAL NOT NULL,
    deadline REAL,
    per_day INTEGER NOT NULL,
    closed INTEGER NOT NULL DEFAULT 0,
    secret TEXT NOT NULL,
    images INTEGER NOT NULL,
    classes TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS handins (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    assignment TEXT NOT NULL REFERENCES assignments (id) ON DELETE CASCADE,
    user TEXT NOT NULL,
    project TEXT NOT NULL,
    node TEXT NOT NULL,
    key TEXT NOT NULL,
    handed_in REAL NOT NULL,
    status TEXT NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS handins_by_user ON handins (assignment, user, handed_in);
"""


class AssignmentError(ValueError):
    """A refused assignment operation; ``status`` is its HTTP answer. Nothing was changed."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


class AssignmentNotFound(AssignmentError):
    def __init__(self, assignment_id: str) -> None:
        super().__init__(f"no assignment '{str(assignment_id)[:40]}'", 404)


@dataclass(frozen=True)
class Assignment:
    id: str
    title: str
    created: float
    deadline: float | None
    per_day: int
    closed: bool
    images: int
    classes: tuple[str, ...]

    def to_json(self, now: float) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "created": iso(self.created),
                "deadline": iso(self.deadline) if self.deadline is not None else None,
                "handins_per_day": self.per_day, "closed": self.closed, "images": self.images,
                "classes": list(self.classes), "board": phase(self, now)}


@dataclass(frozen=True)
class Handin:
    id: int
    assignment: str
    user: str
    project: str
    node: str
    key: str
    handed_in: float
    status: str
    error: str | None

    def to_json(self, teacher: bool) -> dict[str, Any]:
        shown = {"id": self.id, "assignment": self.assignment, "user": self.user, "project": self.project,
                 "node": self.node, "handed_in_at": iso(self.handed_in), "status": self.status}
        if self.status == "failed":  # a scoring error may name hidden files: the teacher reads it
            shown["error"] = self.error if teacher else "scoring failed; your teacher can see why"
        return shown


def iso(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, timezone.utc).isoformat(timespec="seconds")


def parse_deadline(text: str | None) -> float | None:
    """An ISO 8601 date and time (UTC unless it names its zone); None or blank for none."""
    if text is None or not str(text).strip():
        return None
    try:
        when = datetime.fromisoformat(str(text).strip())
    except ValueError:
        raise AssignmentError(f"the deadline {str(text)[:40]!r} is not an ISO 8601 date and time, e.g. "
                              "2026-12-24T18:00:00+01:00") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def phase(assignment: Assignment, now: float) -> str:
    """Which half of the hidden set the board scores on now: public before the deadline, private after."""
    return "private" if assignment.deadline is not None and now >= assignment.deadline else "public"


def public_half(files: list[str], secret: str) -> set[str]:
    """A fixed half of the hidden files (the first half in an order drawn from the assignment's secret,
    per class so each half has every class): the public half; the rest is private."""
    by_class: dict[str, list[str]] = {}
    for name in files:
        by_class.setdefault(name.split("/", 1)[0], []).append(name)
    public: set[str] = set()
    for names in by_class.values():
        ranked = sorted(names, key=lambda n: hashlib.sha256(f"{secret}/{n}".encode()).hexdigest())
        public.update(ranked[:len(ranked) // 2])
    return public


# -- scoring, in a process of its own --------------------------------------------------------------------


def _upstream_formatter(graph: Graph, node: str) -> dict[str, Any] | None:
    """The params of the formatter that feeds ``node``'s data (through augmentations), if any: the
    hidden images are formatted as the model was trained on them."""
    incoming = {(e.target, e.target_port): e.source for e in graph.edges}
    specs = {n.id: n for n in graph.nodes}
    source = incoming.get((node, "data"))
    seen = set()
    while source is not None and source not in seen:
        seen.add(source)
        spec = specs[source]
        if spec.type == "data.format":
            return dict(spec.params)
        source = incoming.get((source, "data"))
    return None


def _scoring_graph(student: Graph, node: str, model_port: str, hidden: Path) -> Graph:
    """The student's graph with the server's scoring nodes added: the hidden folder as one split,
    formatted as the model's training data was, scored by evaluate with the model of ``node``."""
    data = student.model_dump(mode="json")
    data["nodes"] = [n for n in data["nodes"] if not n["id"].startswith(PREFIX)]
    data["edges"] = [e for e in data["edges"] if not (e["source"].startswith(PREFIX) or e["target"].startswith(PREFIX))]
    formatter = _upstream_formatter(student, node)
    data["nodes"].append({"id": PREFIX + "data", "type": "data.image_folder",
                          "params": {"root": str(hidden), "validation_fraction": 0.0, "test_fraction": 0.0}})
    feed = PREFIX + "data"
    if formatter is not None:
        data["nodes"].append({"id": PREFIX + "format", "type": "data.format", "params": formatter})
        data["edges"].append({"source": feed, "source_port": "data", "target": PREFIX + "format",
                              "target_port": "data"})
        feed = PREFIX + "format"
    data["nodes"].append({"id": PREFIX + "eval", "type": "eval.evaluate", "params": {"split": "train"}})
    data["edges"] += [{"source": node, "source_port": model_port, "target": PREFIX + "eval", "target_port": "model"},
                      {"source": feed, "source_port": "data", "target": PREFIX + "eval", "target_port": "data"}]
    data.pop("groups", None)
    return Graph.from_data(data)


def score_in_process(conn, origins, folder: str, hidden: str, graph_text: str, node: str, key: str, device: str,
                     limits: JobLimits) -> None:
    """The scoring process: the job's memory limit first, then the frozen model (from the hand-in's
    own cache) scored on the hidden images by the catalogue's evaluate node. Sends ("score", dict) or
    ("failed", message, traceback)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        limit_memory(limits.memory_bytes)
        from nodeflow.executor import Executor
        from nodeflow.predictions import PredictionStore

        registry = Registry.rebuild(origins)
        executor = Executor(registry, Path(folder), device=device, allowed_roots=[Path(hidden), Path(folder)],
                            limits=limits)
        student = Graph.loads(graph_text, "the handed-in graph")
        spec = student.node(node)
        node_type = registry.get(spec.type)
        port = next(p.name for p in node_type.outputs if p.type.name == TRAINED)
        graph = _scoring_graph(student, node, port, Path(hidden))
        checked = executor.check(graph)
        outputs = executor.cache.get(key, node_type)[0]  # the frozen model, never computed here
        eval_id = PREFIX + "eval"
        values = {node: outputs}
        outcome = executor.compute(checked, eval_id, checked.keys[eval_id], lambda event: None, threading.Event(),
                                   values=values)
        if outcome.status not in ("ran", "cached"):
            conn.send(("failed", outcome.error or outcome.status, outcome.traceback or ""))
            return
        found = PredictionStore(executor.cache, Path(folder)).of(checked.keys[eval_id])["train"]
        root = Path(hidden).resolve()
        names = []
        for name in found.files:
            path = Path(name)
            try:
                names.append(path.resolve().relative_to(root).as_posix())
            except ValueError:
                names.append(path.as_posix())
        classes = list(found.classes)
        confusion = np.zeros((len(classes), len(classes)), dtype=int)
        np.add.at(confusion, (found.true.astype(int), found.predicted.astype(int)), 1)
        conn.send(("score", {"files": names, "correct": [bool(c) for c in found.correct],
                             "classes": classes, "confusion": confusion.tolist()}))
    except Exception as exc:  # told to the teacher as the hand-in's error
        conn.send(("failed", f"{type(exc).__name__}: {exc}", traceback.format_exc()))


def score_handin(registry: Registry, folder: Path, hidden: Path, graph_text: str, node: str, key: str,
                 device: str = "cpu", limits: JobLimits = NO_LIMITS) -> dict[str, Any]:
    """Score one hand-in in a process of its own under ``limits``; RuntimeError naming why it failed."""
    process, parent = start_child(score_in_process, "nodeflow-scoring", registry.origins, str(folder), str(hidden),
                                  graph_text, node, key, device, limits)
    try:
        while True:
            if parent.poll(0.2):
                try:
                    message = parent.recv()
                except EOFError:
                    message = None
                break
            if not process.is_alive():
                message = parent.recv() if parent.poll(0) else None
                break
    finally:
        process.join(10)
        if process.is_alive():
            process.kill()
        parent.close()
    if message is None:
        raise RuntimeError(limits.died_under(f"the scoring process ended (exit code {process.exitcode})"))
    if message[0] == "failed":
        raise RuntimeError(limits.name_memory_limit(message[1]) or message[1])
    return message[1]


# -- the store ---------------------------------------------------------------------------------------------


class Assignments:
    """A server's assignments and hand-ins (``ROOT/assignments/``): ``assignments.sqlite`` and one
    folder per assignment (its hidden set, and one folder per hand-in: the frozen model, the graph it
    came from, its score). ``clock`` gives the time (seconds since the epoch): tests pass their own."""

    def __init__(self, root: Path, registry: Registry | None = None, *, clock: Callable[[], float] = time.time,
                 upload_limits: UploadLimits = UploadLimits(), limits: JobLimits = NO_LIMITS,
                 device: str = "cpu") -> None:
        self.folder = Path(root) / FOLDER
        self.folder.mkdir(parents=True, exist_ok=True)
        self.registry = registry
        self.clock = clock
        self.upload_limits = upload_limits
        self.limits = limits
        self.device = device
        self._lock = threading.RLock()
        #: WAL, so that ``nodeflow assignments ...`` may change it while the server runs
        self.db = Database(self.folder / "assignments.sqlite", SCHEMA)
        self._scores: dict[int, dict[str, Any]] = {}

    def close(self) -> None:
        self.db.close()

    # -- assignments -------------------------------------------------------------------------------------
    def hidden_dir(self, assignment_id: str) -> Path:
        return self.folder / assignment_id / "data" / HIDDEN

    def hidden_data(self, assignment_id: str) -> ProjectData:
        """The assignment's data folder as an upload target and a dataset for the doctor (the upload
        rules and the doctor, exactly as a project's)."""
        return ProjectData(self.folder / assignment_id, "admin", None, self.upload_limits, self.registry,
                           [self.folder / assignment_id], job_limits=self.limits)

    def new_id(self) -> str:
        return secrets.token_hex(6)

    def add(self, assignment_id: str, title: str, deadline: float | None, per_day: int = PER_DAY) -> Assignment:
        """Record an assignment whose hidden set was received in ``hidden_dir(assignment_id)``: the
        dataset doctor looks at it first, and a set it cannot read, with fewer than two classes or with
        unreadable images is refused (its folder removed)."""
        try:
            title = check_title(title, "an assignment")
        except ValueError as exc:
            raise AssignmentError(str(exc)) from None
        if not isinstance(per_day, int) or not 1 <= per_day <= 1000:
            raise AssignmentError(f"handins_per_day must be a whole number from 1 to 1000, got {str(per_day)[:20]}")
        try:
            splits = [s for s in ("train", "validation", "test") if (self.hidden_dir(assignment_id) / s).is_dir()]
            if splits:
                raise AssignmentError(f"the test set is one folder per class; it has {', '.join(splits)}/ folders: "
                                      "zip the class folders of the images to score on")
            try:
                found = self.hidden_data(assignment_id).doctor(HIDDEN)
            except LookupError as exc:
                raise AssignmentError(str(exc.args[0]) if exc.args else str(exc)) from None
            except ValueError as exc:
                raise AssignmentError(str(exc).replace(f"data/{HIDDEN}", "the test set")) from None
            classes = tuple(sorted(row["class"] for row in found["balance"]))
            if len(classes) < 2:
                raise AssignmentError(f"the test set needs at least two class folders; it has {len(classes)}")
            unreadable = found["counts"].get("unreadable", 0)
            if unreadable:
                raise AssignmentError(f"the test set has {unreadable} unreadable image(s); the dataset doctor names "
                                      "them: fix the zip and send it again")
            files = self._hidden_files(assignment_id)
            created = self.clock()
            with self.db.tx() as db:
                db.execute("INSERT INTO assignments VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?)",
                           (assignment_id, title, created, deadline, per_day, secrets.token_hex(16), len(files),
                            json.dumps(classes)))
        except BaseException:
            shutil.rmtree(self.folder / assignment_id, ignore_errors=True)
            raise
        return self.get(assignment_id)

    def create_from_zip(self, title: str, source: Path | io.BufferedIOBase, deadline: float | None,
                        per_day: int = PER_DAY) -> Assignment:
        """An assignment whose hidden set is the zip ``source`` (the command line's way)."""
        from nodeflow.uploads import receive_zip

        assignment_id = self.new_id()
        try:
            receive_zip(source, self.folder / assignment_id / "data", HIDDEN, self.upload_limits)
        except BaseException:
            shutil.rmtree(self.folder / assignment_id, ignore_errors=True)
            raise
        return self.add(assignment_id, title, deadline, per_day)

    def _hidden_files(self, assignment_id: str) -> list[str]:
        root = self.hidden_dir(assignment_id)
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and not p.is_symlink())

    def get(self, assignment_id: str) -> Assignment:
        rows = self.db.query("SELECT id, title, created, deadline, per_day, closed, images, classes FROM assignments "
                             "WHERE id = ?", (str(assignment_id),))
        row = rows[0] if rows else None
        if row is None:
            raise AssignmentNotFound(assignment_id)
        return Assignment(row[0], row[1], row[2], row[3], row[4], bool(row[5]), row[6], tuple(json.loads(row[7])))

    def list(self) -> list[Assignment]:
        ids = [r[0] for r in self.db.query("SELECT id FROM assignments ORDER BY created")]
        return [self.get(i) for i in ids]

    def close_assignment(self, assignment_id: str) -> Assignment:
        """No more hand-ins; the board stays."""
        self.get(assignment_id)
        with self.db.tx() as db:
            db.execute("UPDATE assignments SET closed = 1 WHERE id = ?", (assignment_id,))
        return self.get(assignment_id)

    def remove(self, assignment_id: str) -> str:
        """The assignment, its hidden set and every hand-in, gone."""
        self.get(assignment_id)
        with self.db.tx() as db:
            db.execute("DELETE FROM handins WHERE assignment = ?", (assignment_id,))
            db.execute("DELETE FROM assignments WHERE id = ?", (assignment_id,))
        shutil.rmtree(self.folder / assignment_id, ignore_errors=True)
        return assignment_id

    # -- hand-ins ----------------------------------------------------------------------------------------
    def check_open(self, assignment: Assignment, user: str) -> None:
        """Refuse a hand-in after the deadline, on a closed assignment, or over the day's limit (as the
        assignment is now: closed meanwhile too)."""
        assignment = self.get(assignment.id)
        now = self.clock()
        if assignment.closed:
            raise AssignmentError(f"'{assignment.title}' is closed; it takes no more hand-ins", 409)
        if assignment.deadline is not None and now >= assignment.deadline:
            raise AssignmentError(f"the deadline of '{assignment.title}' ({iso(assignment.deadline)}) has passed; "
                                  "it takes no more hand-ins", 409)
        day = datetime.fromtimestamp(now, timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        start = day.timestamp()
        count = self.db.query("SELECT COUNT(*) FROM handins WHERE assignment = ? AND user = ? AND handed_in >= ? "
                              "AND handed_in < ?", (assignment.id, user, start, start + 86400))[0][0]
        if count >= assignment.per_day:
            raise AssignmentError(f"you have handed in {count} times today, the most per day for "
                                  f"'{assignment.title}' (handins_per_day = {assignment.per_day}); the next day "
                                  f"starts at {iso(start + 86400)}", 429)

    def record(self, assignment: Assignment, user: str, project: str, node: str, key: str, graph: Graph,
               cache_entry: Path) -> Handin:
        """Record a hand-in (the limits checked again under the lock): the model's cache entry copied
        beside it, frozen, with the graph it came from. Queued for scoring."""
        with self._lock:
            self.check_open(assignment, user)
            with self.db.tx() as db:
                handin_id = db.execute("INSERT INTO handins (assignment, user, project, node, key, handed_in, status) "
                                       "VALUES (?, ?, ?, ?, ?, ?, 'queued')",
                                       (assignment.id, user, project, node, key, self.clock())).lastrowid
            folder = self.handin_dir(assignment.id, handin_id)
            try:
                target = folder / "cache" / key[:2] / key
                shutil.copytree(cache_entry, target, symlinks=True)
                (folder / "graph.json").write_text(graph.dumps())
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                with self.db.tx() as db:
                    db.execute("DELETE FROM handins WHERE id = ?", (handin_id,))
                raise
        return self.handin(handin_id)

    def handin_dir(self, assignment_id: str, handin_id: int) -> Path:
        return self.folder / assignment_id / "handins" / str(int(handin_id))

    def handin(self, handin_id: int | str) -> Handin:
        try:
            number = int(handin_id)
        except (TypeError, ValueError):
            raise AssignmentError(f"no hand-in '{str(handin_id)[:20]}'", 404) from None
        rows = self.db.query("SELECT id, assignment, user, project, node, key, handed_in, status, error FROM handins "
                             "WHERE id = ?", (number,))
        if not rows:
            raise AssignmentError(f"no hand-in '{number}'", 404)
        return Handin(*rows[0])

    def handins(self, assignment_id: str, user: str | None = None) -> list[Handin]:
        self.get(assignment_id)
        query = "SELECT id FROM handins WHERE assignment = ?" + (" AND user = ?" if user is not None else "")
        ids = [r[0] for r in self.db.query(query + " ORDER BY handed_in, id",
                                           (assignment_id,) + ((user,) if user is not None else ()))]
        return [self.handin(i) for i in ids]

    def pending(self) -> list[Handin]:
        """Hand-ins not scored yet (queued, or being scored when the server stopped)."""
        ids = [r[0] for r in self.db.query("SELECT id FROM handins WHERE status IN ('queued', 'scoring') ORDER BY id")]
        return [self.handin(i) for i in ids]

    def _set_status(self, handin_id: int, status: str, error: str | None = None) -> None:
        with self.db.tx() as db:
            db.execute("UPDATE handins SET status = ?, error = ? WHERE id = ?", (status, error, handin_id))

    def score(self, handin: Handin) -> Handin:
        """Score the hand-in now (in a process of its own, under the job's limits) and keep its score."""
        if self.registry is None or any(t not in self.registry for t in SCORING_TYPES):
            self._set_status(handin.id, "failed", "this server's catalogue has no " + ", ".join(SCORING_TYPES))
            return self.handin(handin.id)
        folder = self.handin_dir(handin.assignment, handin.id)
        self._set_status(handin.id, "scoring")
        try:
            found = score_handin(self.registry, folder, self.hidden_dir(handin.assignment),
                                 (folder / "graph.json").read_text(), handin.node, handin.key, self.device,
                                 self.limits)
        except Exception as exc:
            self._set_status(handin.id, "failed", str(exc))
            return self.handin(handin.id)
        (folder / SCORE_FILE).write_text(json.dumps(found))
        self._set_status(handin.id, "scored")
        return self.handin(handin.id)

    def _score_of(self, handin: Handin) -> dict[str, Any] | None:
        if handin.status != "scored":
            return None
        if handin.id not in self._scores:
            found = json.loads((self.handin_dir(handin.assignment, handin.id) / SCORE_FILE).read_text())
            found["by_file"] = dict(zip(found["files"], found["correct"]))
            self._scores[handin.id] = found
        return self._scores[handin.id]

    # -- the board ---------------------------------------------------------------------------------------
    def _half(self, assignment: Assignment, which: str) -> list[str]:
        secret = self.db.query("SELECT secret FROM assignments WHERE id = ?", (assignment.id,))[0][0]
        files = self._hidden_files(assignment.id)
        public = public_half(files, secret)
        return [f for f in files if (f in public) == (which == "public")]

    def leaderboard(self, assignment_id: str, viewer: str | None = None, half: str | None = None) -> dict[str, Any]:
        """Each student's best and latest scored hand-in, scored on the half the time says (or ``half``):
        accuracy, its 95% Wilson interval, and whether it is tied with the best hand-in on the board
        (McNemar's exact test on the same images, p >= 0.05)."""
        assignment = self.get(assignment_id)
        which = half or phase(assignment, self.clock())
        files = self._half(assignment, which)
        scored = []
        for handin in self.handins(assignment_id):
            found = self._score_of(handin)
            if found is not None:
                correct = np.array([bool(found["by_file"].get(f, False)) for f in files], dtype=bool)
                scored.append((handin, correct))
        by_user: dict[str, list[tuple[Handin, np.ndarray]]] = {}
        for handin, correct in scored:
            by_user.setdefault(handin.user, []).append((handin, correct))
        shown: list[tuple[Handin, np.ndarray, list[str]]] = []
        for user, theirs in by_user.items():
            best = max(theirs, key=lambda hc: (int(hc[1].sum()), -hc[0].handed_in, -hc[0].id))
            latest = theirs[-1]
            if best[0].id == latest[0].id:
                shown.append((best[0], best[1], ["best", "latest"]))
            else:
                shown += [(best[0], best[1], ["best"]), (latest[0], latest[1], ["latest"])]
        top = max(shown, key=lambda row: (int(row[1].sum()), -row[0].handed_in), default=None)
        rows = []
        for handin, correct, kinds in shown:
            ci = interval(int(correct.sum()), len(files))
            tied = top is not None and (handin.id == top[0].id or
                                        (len(files) > 0 and mcnemar(correct, top[1]) >= TIE_P))
            rows.append({"user": handin.user, "handin": handin.id, "kinds": kinds,
                         "accuracy": _number(ci.value), "ci_low": _number(ci.low), "ci_high": _number(ci.high),
                         "images": len(files), "handed_in_at": iso(handin.handed_in), "tied_with_best": bool(tied),
                         "best": top is not None and handin.id == top[0].id,
                         "mine": viewer is not None and handin.user == viewer})
        rows.sort(key=lambda r: (-(r["accuracy"] or 0), r["handed_in_at"], r["handin"]))
        return {"assignment": assignment.id, "title": assignment.title, "half": which, "images": len(files),
                "deadline": iso(assignment.deadline) if assignment.deadline is not None else None, "rows": rows}

    def grades_csv(self, assignment_id: str) -> str:
        """One line per student: their best hand-in on the private half (the grade), its interval, on
        the public half too, and how many hand-ins they made."""
        private = {r["user"]: r for r in self.leaderboard(assignment_id, half="private")["rows"] if "best" in r["kinds"]}
        public = {r["user"]: r for r in self.leaderboard(assignment_id, half="public")["rows"] if "best" in r["kinds"]}
        counts: dict[str, int] = {}
        for handin in self.handins(assignment_id):
            counts[handin.user] = counts.get(handin.user, 0) + 1
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["user", "handins", "best_handin", "private_accuracy", "private_ci_low", "private_ci_high",
                         "public_accuracy", "tied_with_best"])
        for user in sorted(counts):
            row, pub = private.get(user), public.get(user)
            writer.writerow([user, counts[user], row["handin"] if row else "", _cell(row, "accuracy"),
                             _cell(row, "ci_low"), _cell(row, "ci_high"), _cell(pub, "accuracy"),
                             row["tied_with_best"] if row else ""])
        return out.getvalue()

    def detail(self, handin_id: int | str) -> dict[str, Any]:
        """The teacher's look at one hand-in: its graph (to read), its confusion matrix on the hidden set,
        its accuracy on the whole set and on each half, and its error if scoring failed."""
        handin = self.handin(handin_id)
        folder = self.handin_dir(handin.assignment, handin.id)
        graph = json.loads((folder / "graph.json").read_text()) if (folder / "graph.json").is_file() else None
        found = self._score_of(handin)
        shown = {**handin.to_json(teacher=True), "graph": graph}
        if found is not None:
            shown["confusion"] = {"classes": found["classes"], "matrix": found["confusion"]}
            shown["accuracy"] = float(np.mean(found["correct"])) if found["correct"] else None
            assignment = self.get(handin.assignment)
            for which in ("public", "private"):
                files = self._half(assignment, which)
                shown[f"{which}_accuracy"] = (sum(bool(found["by_file"].get(f, False)) for f in files) / len(files)
                                              if files else None)
        return shown

    # -- who may do what: the one place ------------------------------------------------------------------
    def desk(self, user: User) -> Assignments | StudentDesk:
        """What ``user`` may do with the assignments: an admin everything, anyone else the student's
        operations only, as themselves (deny by default: a method not on the desk is not there)."""
        return self if user.admin else StudentDesk(self, user.name)


def _number(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _cell(row: dict[str, Any] | None, name: str) -> str:
    return "" if row is None or row[name] is None else f"{row[name]:.4f}"


class StudentDesk:
    """A student's way to the assignments: the list, their own hand-ins, the leaderboard. Nothing here
    names a hidden image, its label or a path to it."""

    __slots__ = ("_store", "user")

    def __init__(self, store: Assignments, user: str) -> None:
        self._store = store
        self.user = user

    def list(self) -> list[Assignment]:
        return self._store.list()

    def get(self, assignment_id: str) -> Assignment:
        return self._store.get(assignment_id)

    def handins(self, assignment_id: str) -> list[Handin]:
        return self._store.handins(assignment_id, self.user)

    def handin(self, handin_id: int | str) -> Handin:
        found = self._store.handin(handin_id)
        if found.user != self.user:
            raise AssignmentError(f"no hand-in '{str(handin_id)[:20]}'", 404)
        return found

    def leaderboard(self, assignment_id: str) -> dict[str, Any]:
        return self._store.leaderboard(assignment_id, viewer=self.user)

    def check_open(self, assignment: Assignment, user: str) -> None:
        self._store.check_open(assignment, self.user)

    def record(self, assignment: Assignment, user: str, *args: Any) -> Handin:
        return self._store.record(assignment, self.user, *args)


#: the operations a student may call (and the teacher's on top of them): the desk's own methods
STUDENT_OPERATIONS = frozenset(n for n in vars(StudentDesk) if not n.startswith("_") and callable(vars(StudentDesk)[n]))

__all__ = ["Assignment", "AssignmentError", "AssignmentNotFound", "Assignments", "Handin", "StudentDesk",
           "parse_deadline", "phase", "public_half", "score_handin"]
