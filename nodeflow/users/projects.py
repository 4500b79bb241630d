"""Projects of a multi-user server: each a workspace folder of its own, owned by one user,
optionally shared read-only with named users, and class templates that admins publish.

Who may do what, in one place (:meth:`Projects.can`): the owner reads and writes (an archived
project is read-only until restored); a user it is shared with reads; an admin reads any project.
A project that a user may not read does not exist for them: :class:`ProjectNotFound`, the same
answer as for an id nobody has, so ids cannot be probed. Ids are 96 random bits.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nodeflow.graph import Graph
from nodeflow.users.accounts import AccountError, Accounts, User

Action = Literal["read", "write"]
PROJECT_ID = re.compile(r"[0-9a-f]{24}")
MAX_TITLE = 80
#: the folders of a new project (the session adds its cache and runs.sqlite)
PROJECT_FOLDERS = ("data", "graphs")


class ProjectNotFound(LookupError):
    """No such project, or one the user may not read: the HTTP layer answers 404 for both."""

    def __str__(self) -> str:
        return str(self.args[0])


class NotAllowed(PermissionError):
    """The user may read the project but not do this (HTTP 403)."""


@dataclass(frozen=True)
class Project:
    id: str
    owner: str
    title: str
    created: float
    archived: bool
    shared_with: tuple[str, ...]
    #: the project's workspace folder: graphs/, data/ (uploads), its cache and runs.sqlite
    path: Path


@dataclass(frozen=True)
class ClassTemplate:
    id: str
    title: str
    author: str
    created: float


def check_title(title: str, what: str = "a project") -> str:
    title = title.strip() if isinstance(title, str) else ""
    if not title or len(title) > MAX_TITLE or not title.isprintable():
        raise AccountError(f"{what} needs a title of 1 to {MAX_TITLE} printable characters")
    return title


def file_stem(title: str) -> str:
    """A graph file name made from a title: letters, digits, - and _ only."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", title).strip("-_").lower()[:60]
    return stem or "graph"


class Projects:
    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts
        self.db = accounts.db
        self.clock = accounts.clock

    def folder(self, owner: str, project_id: str) -> Path:
        return self.accounts.user_dir(owner) / "projects" / project_id

    # -- access ----------------------------------------------------------------------------------------
    def can(self, user: User, project: Project | str, action: Action) -> bool:
        if isinstance(project, str):
            try:
                project = self._load(project)
            except ProjectNotFound:
                return False
        if project.owner == user.name:
            return action == "read" or not project.archived
        return action == "read" and (user.admin or user.name in project.shared_with)

    def get(self, user: User, project_id: str, need: Action = "read") -> Project:
        """The project, if ``user`` may ``need`` it; ProjectNotFound if they may not even read it."""
        project = self._load(project_id)
        if not self.can(user, project, "read"):
            raise ProjectNotFound(f"no project '{project_id}'")
        if need == "write" and not self.can(user, project, "write"):
            why = "it is archived; restore it first" if project.owner == user.name else \
                f"it is {project.owner}'s, open to you read-only"
            raise NotAllowed(f"project '{project.title}' cannot be changed: {why}")
        return project

    def _load(self, project_id: str) -> Project:
        if not isinstance(project_id, str) or not PROJECT_ID.fullmatch(project_id):
            raise ProjectNotFound(f"no project '{str(project_id)[:40]}'")
        rows = self.db.query("SELECT * FROM projects WHERE id = ?", (project_id,))
        if not rows:
            raise ProjectNotFound(f"no project '{project_id}'")
        return self._project(rows[0])

    def _project(self, row) -> Project:
        shared = tuple(r["user"] for r in self.db.query("SELECT user FROM shares WHERE project = ? ORDER BY user",
                                                         (row["id"],)))
        return Project(row["id"], row["owner"], row["title"], row["created"], bool(row["archived"]), shared,
                       self.folder(row["owner"], row["id"]))

    # -- a user's projects ---------------------------------------------------------------------------
    def create(self, user: User, title: str) -> Project:
        title = check_title(title)
        project_id = secrets.token_hex(12)
        folder = self.folder(user.name, project_id)
        for name in PROJECT_FOLDERS:
            (folder / name).mkdir(parents=True, exist_ok=True)
        with self.db.tx() as db:
            db.execute("INSERT INTO projects (id, owner, title, created) VALUES (?, ?, ?, ?)",
                       (project_id, user.name, title, self.clock()))
        return self._load(project_id)

    def rename(self, user: User, project_id: str, title: str) -> Project:
        self._own(user, project_id, "rename")
        with self.db.tx() as db:
            db.execute("UPDATE projects SET title = ? WHERE id = ?", (check_title(title), project_id))
        return self._load(project_id)

    def archive(self, user: User, project_id: str, archived: bool = True) -> Project:
        """Archive (hide from the list, read-only) or restore a project; its files stay."""
        self._own(user, project_id, "archive")
        with self.db.tx() as db:
            db.execute("UPDATE projects SET archived = ? WHERE id = ?", (int(archived), project_id))
        return self._load(project_id)

    def mine(self, user: User, archived: bool = False) -> list[Project]:
        """The user's own projects, newest first (the archived ones when ``archived``)."""
        rows = self.db.query("SELECT * FROM projects WHERE owner = ? AND archived = ? ORDER BY created DESC, id",
                             (user.name, int(archived)))
        return [self._project(r) for r in rows]

    def shared_with_me(self, user: User) -> list[Project]:
        rows = self.db.query("SELECT p.* FROM projects p JOIN shares s ON s.project = p.id "
                             "WHERE s.user = ? AND p.archived = 0 ORDER BY p.created DESC, p.id", (user.name,))
        return [self._project(r) for r in rows]

    def everyone(self, user: User) -> list[Project]:
        """Every project on the server, for an admin (a teacher looking at the class's work)."""
        if not user.admin:
            raise NotAllowed("only an admin can list every project")
        return [self._project(r) for r in self.db.query("SELECT * FROM projects ORDER BY owner, created DESC, id")]

    def count_by_owner(self) -> dict[str, int]:
        """User -> how many projects they own (archived ones too)."""
        return {r["owner"]: r["n"] for r in self.db.query("SELECT owner, COUNT(*) AS n FROM projects GROUP BY owner")}

    def share(self, user: User, project_id: str, other: str) -> Project:
        """Let ``other`` read the project (never write)."""
        self._own(user, project_id, "share")
        if other == user.name:
            raise AccountError("a project is already open to its owner")
        self.accounts.require(other)
        with self.db.tx() as db:
            db.execute("INSERT OR IGNORE INTO shares (project, user) VALUES (?, ?)", (project_id, other))
        return self._load(project_id)

    def unshare(self, user: User, project_id: str, other: str) -> Project:
        self._own(user, project_id, "unshare")
        with self.db.tx() as db:
            db.execute("DELETE FROM shares WHERE project = ? AND user = ?", (project_id, other))
        return self._load(project_id)

    def _own(self, user: User, project_id: str, what: str) -> Project:
        project = self.get(user, project_id)
        if project.owner != user.name:
            raise NotAllowed(f"only {project.owner} can {what} project '{project.title}'")
        return project

    # -- class templates -------------------------------------------------------------------------------
    def publish_template(self, user: User, graph: Graph, title: str) -> ClassTemplate:
        """An admin offers ``graph`` to the class; everyone can open their own copy of it."""
        if not user.admin:
            raise NotAllowed("only an admin can publish a class template")
        template = ClassTemplate(secrets.token_hex(12), check_title(title, "a class template"), user.name,
                                 self.clock())
        with self.db.tx() as db:
            db.execute("INSERT INTO class_templates (id, title, author, graph, created) VALUES (?, ?, ?, ?, ?)",
                       (template.id, template.title, template.author, graph.dumps(), template.created))
        return template

    def templates(self) -> list[ClassTemplate]:
        return [ClassTemplate(r["id"], r["title"], r["author"], r["created"]) for r in
                self.db.query("SELECT id, title, author, created FROM class_templates ORDER BY created, id")]

    def unpublish_template(self, user: User, template_id: str) -> None:
        """Take a template off the list; the copies people opened stay theirs."""
        if not user.admin:
            raise NotAllowed("only an admin can unpublish a class template")
        with self.db.tx() as db:
            if not db.execute("DELETE FROM class_templates WHERE id = ?", (template_id,)).rowcount:
                raise ProjectNotFound(f"no class template '{str(template_id)[:40]}'")

    def open_template(self, user: User, template_id: str, project_id: str | None = None) -> tuple[Project, Path]:
        """The user's own copy of a class template: a graph file in ``project_id`` (which they must
        be able to write), or in a new project named after the template. Returns the project and
        the graph file; an existing file is never overwritten (the copy gets a free name)."""
        rows = self.db.query("SELECT title, graph FROM class_templates WHERE id = ?", (template_id,))
        if not rows:
            raise ProjectNotFound(f"no class template '{str(template_id)[:40]}'")
        graph = Graph.loads(rows[0]["graph"], f"class template '{rows[0]['title']}'")
        project = self.get(user, project_id, "write") if project_id is not None else self.create(user, rows[0]["title"])
        return project, _save_new(project.path / "graphs", file_stem(rows[0]["title"]), graph)


def _save_new(folder: Path, stem: str, graph: Graph) -> Path:
    """Save ``graph`` whole under the first free name ``stem.json``, ``stem-2.json``, ...: written
    aside, then hard-linked to the name, which fails rather than replace a file that is there."""
    folder.mkdir(parents=True, exist_ok=True)
    staged = folder / f".{stem}.{secrets.token_hex(4)}.tmp"
    graph.save(staged)
    try:
        for n in itertools.count(1):
            path = folder / (f"{stem}.json" if n == 1 else f"{stem}-{n}.json")
            try:
                os.link(staged, path)
                return path
            except FileExistsError:
                continue
    finally:
        staged.unlink(missing_ok=True)
