"""One server that many people share (``nodeflow serve --users``): the open projects and the
machine's one queue. No web code here: :mod:`nodeflow.ui.multiuser` puts it behind pages and routes.

- Each project is a workspace of its own (graphs, ``data/``, its cache, ``runs.sqlite``), opened as
  a :class:`Session` on first use, kept while a page shows it or it has runs to do, and
  closed after ``idle_seconds`` of nobody using it. Nothing is shared between projects: not the
  cache (it would tell one person what another trained), not the run history, not the files.
- :class:`FairTurns` is the :class:`~nodeflow.runqueue.Turns` every project's run queue takes its
  turns from: ``slots`` jobs at once (one on a machine with one GPU; the Dask workers with
  ``--jobs``/``--scheduler``), the others waiting in a :class:`~nodeflow.fairqueue.FairQueue`,
  round-robin by user.
- New work is refused, with the reason, when its owner already has ``queue_limit`` jobs waiting or
  is over their disk quota (:class:`WorkRefused`); nothing stored is touched.
- What one person may hold at once is bounded, so nobody can exhaust the machine for the others:
  ``max_open_projects`` open projects each (over it, their least recently used idle one is closed,
  else the next is refused), ``estimate_limit`` estimates being measured, and per job the admin's
  :class:`~nodeflow.limits.JobLimits` (its worker's memory, image side, batch, devices), which every
  project's session hands to its worker, its estimate process and its nodes.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodeflow.fairqueue import FairQueue
from nodeflow.graph import Graph, GraphFileError
from nodeflow.limits import CLASS_OPEN_PROJECTS, NO_LIMITS, JobLimits
from nodeflow.node import Registry
from nodeflow.runs import has_queued_runs
from nodeflow.session import Session, Sharing
from nodeflow.uploads import UploadLimits
from nodeflow.users import Accounts, DiskQuota, NotAllowed, Project, ProjectNotFound, Projects, QuotaExceeded, User

#: the jobs one person may have waiting (a sweep is one job: its branches take one turn)
QUEUE_LIMIT = 10
#: how long a project nobody uses stays open (its worker process, its state in memory)
IDLE_SECONDS = 600.0
#: a project used this recently is not closed to make room for another (a request may still be using it)
OPEN_GRACE_SECONDS = 5.0
#: the estimates one person may have measured at once (each is a process profiling real batches)
ESTIMATE_LIMIT = 1
#: seconds after a change when an open project's graph is autosaved (as in the one-person editor)
AUTOSAVE_SECONDS = 10.0
#: how many job starts the server remembers (the order the benchmark and an admin look at)
STARTS_KEPT = 1000
#: a job on the machine: (user, project id, its run ids)
Job = tuple[str, str, tuple[int, ...]]
#: a waiting job's key in the fair queue: (project id, its first run id)
JobKey = tuple[str, int]


class WorkRefused(RuntimeError):
    """New work (a run, a sweep, an upload) refused; ``status`` is its HTTP answer: 429 for a full
    queue, 507 for a full disk quota. Nothing was queued or stored."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class QueueEntry:
    """A job on the machine's queue: running (``position`` None) or waiting (1: starts next)."""

    user: str
    project: str
    runs: tuple[int, ...]
    position: int | None

    def to_json(self) -> dict[str, Any]:
        return {"user": self.user, "project": self.project, "runs": list(self.runs),
                "status": "running" if self.position is None else "queued", "position": self.position}


class FairTurns:
    """The machine's one queue, shared by every project: every job that waits to run is in its
    :class:`FairQueue` (round-robin by user), which alone decides the order jobs start in and the
    places the pages show; at most ``slots`` jobs run at once. A project runs its jobs one after
    another, so a job starts only when its project's run queue asks for it (``acquire``) and nothing
    else of that project runs; the fair queue passes over what cannot start yet.

    A job is known by a key (its project, its first run) and holds its runs, which change as runs of
    a sweep are cancelled; ``sync`` keeps a project's jobs as its run queue has them."""

    def __init__(self, slots: int = 1) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self.slots = slots
        #: the limit on waiting runs is applied where runs are queued (ClassServer.admit), so the fair
        #: queue itself never refuses a job that is already recorded
        self.queue = FairQueue(per_user=None)
        self._cond = threading.Condition()
        #: key -> (user, the job's runs), for every job in the fair queue
        self._jobs: dict[JobKey, tuple[str, tuple[int, ...]]] = {}
        #: project -> (user, runs) of the jobs running now
        self._running: dict[str, tuple[str, tuple[int, ...]]] = {}
        #: project -> the key of the job its run queue asks a turn for
        self._asking: dict[str, JobKey] = {}
        #: projects whose asking job was handed a slot that its thread has not picked up yet
        self._granted: set[str] = set()
        self._closed = False
        #: hand out no more turns (the server is closing its projects)
        self._draining = False
        #: the latest jobs, in the order they started
        self.starts: deque[Job] = deque(maxlen=STARTS_KEPT)
        #: moves whenever a job starts, waits or leaves (what a cached view of the queue keys on)
        self.version = 0

    # -- the Turns protocol, per project (see ProjectTurns) --------------------------------------------
    def acquire(self, user: str, project: str, run_ids: list[int], blocking: bool) -> bool:
        """Without ``blocking``: ask a turn for the job of ``run_ids`` (queued now if it is not yet);
        True when it starts at once, else it waits its turn. With it: wait for the job asked for so,
        answering True when its turn comes and False when it was withdrawn meanwhile (or before)."""
        with self._cond:
            if not blocking:
                if project in self._granted:
                    self._granted.discard(project)
                    return True
                if self._closed:
                    return False
                key = self._key(user, project, tuple(run_ids))
                self._asking[project] = key
                self._hand_out()
                if project in self._granted:
                    self._granted.discard(project)
                    return True
                return False
            while True:
                if project in self._granted:
                    self._granted.discard(project)
                    return True
                if project not in self._asking:  # withdrawn (cancelled, or the project closed)
                    return False
                self._cond.wait()

    def release(self, project: str) -> None:
        with self._cond:
            if self._running.pop(project, None) is not None:
                self._hand_out()

    def sync(self, user: str, project: str, jobs: list[tuple[int, ...]]) -> None:
        """The project's waiting jobs, in its order, as its run queue has them now: new ones join the
        queue at its end, a job whose runs were all cancelled leaves it (its asking thread is told no)."""
        with self._cond:
            kept: set[JobKey] = set()
            for runs in jobs:
                key = next((k for k, (_, held) in self._jobs.items() if k[0] == project and set(held) & set(runs)),
                           None)
                if key is None and not self._closed:
                    key = self._key(user, project, tuple(runs))
                if key is not None:
                    self._jobs[key] = (user, tuple(runs))
                    kept.add(key)
            for key in [k for k in self._jobs if k[0] == project and k not in kept]:
                self._drop(key)
            self._changed()
            self._cond.notify_all()

    def withdraw(self, project: str) -> bool:
        """Take the project's jobs off the queue (the project closes: its runs stay queued for its next
        opening); its asking thread's ``acquire`` answers False. False if nothing of it was waiting."""
        with self._cond:
            keys = [k for k in self._jobs if k[0] == project]
            for key in keys:
                self._drop(key)
            self._changed()
            self._cond.notify_all()
            return bool(keys)

    def drain(self) -> None:
        """Hand out no more turns: jobs that finish free their slots for nobody, so that the projects
        can be closed with their queued runs still queued."""
        with self._cond:
            self._draining = True

    def close(self) -> None:
        """No more turns: every waiting job's ``acquire`` answers False (its runs stay queued)."""
        with self._cond:
            self._closed = True
            for key in list(self._jobs):
                self._drop(key)
            self._changed()
            self._cond.notify_all()

    # -- what is going on ------------------------------------------------------------------------------
    def state(self) -> tuple[list[Job], list[Job], list[Job], int]:
        """(running jobs, waiting jobs in start order, the latest starts, version); a job is
        (user, project, runs)."""
        with self._cond:
            running = [(user, project, runs) for project, (user, runs) in self._running.items()]
            waiting = [(w.user, w.run_id[0], self._jobs[w.run_id][1]) for w in self.queue.snapshot()]
            return running, waiting, list(self.starts), self.version

    def waiting(self, user: str) -> int:
        """How many jobs ``user`` has waiting (a sweep's branches are one job)."""
        with self._cond:
            return sum(1 for owner, _ in self._jobs.values() if owner == user)

    def changed(self) -> None:
        """Something the queue's views show moved outside it: a cached view keyed on ``version`` is
        worked out again."""
        with self._cond:
            self._changed()

    def holds(self, project: str) -> bool:
        """Whether the project has a job running or asking for its turn."""
        with self._cond:
            return project in self._running or project in self._asking

    # -- inside the lock -------------------------------------------------------------------------------
    def _key(self, user: str, project: str, runs: tuple[int, ...]) -> JobKey:
        """The key of the project's job holding ``runs[0]``, queued now if there is none."""
        key = next((k for k, (_, held) in self._jobs.items() if k[0] == project and runs and runs[0] in held), None)
        if key is None:
            key = (project, runs[0] if runs else -1)
            self.queue.push(user, key)
            self._changed()
        self._jobs[key] = (user, runs)
        return key

    def _drop(self, key: JobKey) -> None:
        self.queue.cancel(key)
        self._jobs.pop(key, None)
        if self._asking.get(key[0]) == key:
            del self._asking[key[0]]

    def _start(self, user: str, project: str, runs: tuple[int, ...]) -> None:
        self._running[project] = (user, runs)
        self.starts.append((user, project, runs))

    def _hand_out(self) -> None:
        """Fill the free slots from the fair queue with jobs their projects ask for: a project still
        finishing its previous job, or not asking yet, is passed over until it is."""
        while len(self._running) < self.slots and not self._draining and not self._closed:
            found = self.queue.pop_next(skip=lambda key: key[0] in self._running or self._asking.get(key[0]) != key)
            if found is None:
                break
            user, key = found
            _, runs = self._jobs.pop(key)
            del self._asking[key[0]]
            self._start(user, key[0], runs)
            self._granted.add(key[0])
        self._changed()
        self._cond.notify_all()

    def _changed(self) -> None:
        self.version += 1


class ProjectTurns:
    """One project's view of the machine's :class:`FairTurns` (the ``turns`` of its run queue).
    ``on_release`` runs when a job's turn ends, before the next job gets the slot."""

    def __init__(self, turns: FairTurns, user: str, project: str,
                 on_release: Callable[[], None] = lambda: None) -> None:
        self.turns = turns
        self.user = user
        self.project = project
        self.on_release = on_release
        self.left = False

    def acquire(self, run_ids: list[int], blocking: bool) -> bool:
        return not self.left and self.turns.acquire(self.user, self.project, run_ids, blocking)

    def release(self, run_ids: list[int]) -> None:
        try:
            self.on_release()
        finally:
            self.turns.release(self.project)

    def leave(self) -> None:
        self.left = True
        self.turns.withdraw(self.project)

    def queue_changed(self, jobs: list[tuple[int, ...]]) -> None:
        """The project's waiting jobs changed (one queued, runs cancelled): the machine's queue holds
        them as they are now."""
        self.turns.sync(self.user, self.project, jobs)


def open_project(server: ClassServer, project: Project, **kwargs: Any) -> Session:
    """One project's session on a shared server, built with the server's rules passed in
    (:class:`~nodeflow.session.Sharing`): its runs take turns with everyone's; a run or a sweep is
    refused while its owner is over their queue limit or disk quota; queued runs show their place in
    the machine's queue; an estimate is refused while its owner has ``estimate_limit`` being measured;
    and when a job's turn ends its worker process ends too, so the memory (on a GPU, the GPU memory)
    it held is free for the next person's job."""
    opened: list[Session] = []
    turns = ProjectTurns(server.turns, project.owner, project.id,
                         on_release=lambda: opened[0].free_worker() if opened else None)
    sharing = Sharing(owner=project.owner, turns=turns, admit=lambda: server.admit(project.owner),
                      placing=lambda run_id, here: server.position(project.id, run_id),
                      queue_changed=turns.queue_changed, finished=lambda run_id: server.quota.forget(project.owner),
                      estimating=lambda: server.estimating(project.owner))
    graph, path, unsaved = latest_graph(project.path)
    session = Session(server.registry, project.path, graph=graph, path=path, allowed_roots=[], sharing=sharing,
                      **kwargs)
    session.document.dirty = unsaved
    opened.append(session)
    return session


def latest_graph(project: Path) -> tuple[Graph | None, Path | None, bool]:
    """What a project opens with: its most recently written graph, in ``graphs/`` (a class template's
    copy, say) or among the autosaves of changes that were never saved (then for the file it was
    opened from, if that is still there). Returns (graph, its file, whether it is unsaved)."""
    def newest_first(paths):
        return sorted((p for p in paths if p.is_file() and not p.is_symlink()), key=lambda p: p.stat().st_mtime,
                      reverse=True)

    saved = newest_first((project / "graphs").glob("*.json"))
    unsaved = newest_first((project / "autosave").glob("*/*.json"))
    for path in sorted(saved[:1] + unsaved[:1], key=lambda p: p.stat().st_mtime, reverse=True) + saved[1:]:
        try:
            graph = Graph.load(path)
        except GraphFileError:
            continue
        if path in saved:
            return graph, path, False
        source = project / "graphs" / f"{path.parent.name}.json"
        return graph, source if source.is_file() else None, True
    return None, None, False


class ClassServer:
    """The accounts, projects, open project sessions, fair queue and quotas of one server folder."""

    def __init__(self, root: Path, registry: Registry, accounts: Accounts | None = None, *,
                 device: str = "auto", isolate: bool = True, cluster: Any = None, slots: int = 1,
                 quota_bytes: int | None = None, queue_limit: int = QUEUE_LIMIT,
                 idle_seconds: float = IDLE_SECONDS, mlflow_uri: str | None = None,
                 upload_limits: UploadLimits = UploadLimits(), clock: Callable[[], float] = time.monotonic,
                 limits: JobLimits = NO_LIMITS, max_open_projects: int = CLASS_OPEN_PROJECTS,
                 estimate_limit: int = ESTIMATE_LIMIT) -> None:
        """``limits``: what each job may use (``serve --job-memory`` ...), handed to every project's
        worker, estimate process and nodes; ``max_open_projects`` and ``estimate_limit``: per person."""
        if max_open_projects < 1 or estimate_limit < 1:
            raise ValueError(f"max_open_projects and estimate_limit must be at least 1, got {max_open_projects} "
                             f"and {estimate_limit}")
        self.root = Path(root)
        self.registry = registry
        self.accounts = accounts or Accounts(self.root)
        self.projects = Projects(self.accounts)
        self.quota = DiskQuota(self.accounts, quota_bytes)
        self.turns = FairTurns(slots)
        self.queue_limit = queue_limit
        #: what one upload may hold (what the disk quota has left is added per upload)
        self.upload_limits = upload_limits
        self.idle_seconds = idle_seconds
        self.mlflow_uri = mlflow_uri
        self.clock = clock
        #: what each job may use
        self.limits = limits
        self.max_open_projects = max_open_projects
        self.estimate_limit = estimate_limit
        self._session_args = {"device": device, "isolate": isolate and cluster is None,
                              "autosave_delay": AUTOSAVE_SECONDS, "limits": limits, "estimates_apart": True}
        self.cluster = cluster
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._opening: dict[str, threading.Lock] = {}
        #: project id -> its owner, for the projects being opened now (they count as open)
        self._reserved: dict[str, str] = {}
        #: user -> their estimates being measured now
        self._estimates: dict[str, int] = {}
        self._used: dict[str, float] = {}
        self._holds: dict[str, int] = {}
        self._order: tuple[int, dict[tuple[str, int], int], list[QueueEntry]] | None = None
        self._closed = False

    # -- open projects ---------------------------------------------------------------------------------
    def session(self, project: Project) -> Session:
        """The project's open session, opened now if it is not (one per project, however many ask).
        Its owner may have ``max_open_projects`` open: over that, their least recently used project
        that is idle (no page shows it, nothing of it runs, waits or is being estimated) is closed,
        and with none idle the project is refused (WorkRefused, 429), so that nobody can hold the
        server's files open for the others."""
        return self._session(project, limited=True)

    def _session(self, project: Project, limited: bool) -> Session:
        with self._lock:
            if self._closed:
                raise RuntimeError("the server is shutting down")
            self._used[project.id] = self.clock()
            found = self._sessions.get(project.id)
            if found is not None:
                return found
            opening = self._opening.setdefault(project.id, threading.Lock())
        with opening:
            with self._lock:
                found = self._sessions.get(project.id)
            if found is not None:
                return found
            self._make_room(project, limited)
            try:
                cluster = self.cluster.share() if self.cluster is not None else None
                session = open_project(self, project, cluster=cluster, **self._session_args)
                session.mlflow_uri = self.mlflow_uri
            except BaseException:
                with self._lock:
                    self._reserved.pop(project.id, None)
                raise
            with self._lock:
                self._reserved.pop(project.id, None)
                self._sessions[project.id] = session
                self._used[project.id] = self.clock()
            return session

    def _make_room(self, project: Project, limited: bool) -> None:
        """Count ``project`` as open for its owner (reserved until its session is made), first closing
        their least recently used idle project when they are at ``max_open_projects``; WorkRefused
        when none of theirs is idle. ``limited`` False: counted, never refused (runs queued before a
        restart go on)."""
        owner = project.owner
        while True:
            with self._lock:
                mine = [pid for pid, s in self._sessions.items() if s.owner == owner]
                held = len(mine) + sum(1 for pid, user in self._reserved.items() if user == owner)
                if not limited or held < self.max_open_projects:
                    self._reserved[project.id] = owner
                    return
                now = self.clock()
                candidates = sorted((pid for pid in mine if not self._holds.get(pid)
                                     and now - self._used.get(pid, now) >= OPEN_GRACE_SECONDS),
                                    key=lambda pid: self._used.get(pid, now))
                sessions = {pid: self._sessions[pid] for pid in candidates}
            idle = next((pid for pid in candidates if self._idle(pid, sessions[pid])), None)
            if idle is None:
                raise WorkRefused(f"'{project.title}' was not opened: {owner} already has {held} projects open, the "
                                  f"most one person may have at once ({self.max_open_projects}; serve "
                                  "--max-open-projects), and each of them is shown on a page, running, waiting or "
                                  "being estimated; close one of their pages or wait for its runs to end", 429)
            with self._lock:
                if self._holds.get(idle) or self._sessions.get(idle) is not sessions[idle]:
                    continue  # shown or replaced meanwhile: look again
                del self._sessions[idle]
            sessions[idle].close()

    def _idle(self, project_id: str, session: Session) -> bool:
        """Nothing of the project runs, waits for its turn, is queued or is being estimated."""
        return not (session.queue.running or self.turns.holds(project_id) or session.runs.queued()
                    or session.estimator.measuring)

    @contextlib.contextmanager
    def estimating(self, user: str) -> Iterator[None]:
        """Count an estimate of ``user``'s while it is measured; WorkRefused (429) when they have
        ``estimate_limit`` being measured already."""
        with self._lock:
            count = self._estimates.get(user, 0)
            if count >= self.estimate_limit:
                raise WorkRefused(f"nothing was estimated: {user} already has {count} estimate(s) being measured, "
                                  f"the most one person may have at once ({self.estimate_limit}); wait for it to "
                                  "finish", 429)
            self._estimates[user] = count + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._estimates.pop(user) - 1
                if left:
                    self._estimates[user] = left

    def open_sessions(self) -> dict[str, Session]:
        with self._lock:
            return dict(self._sessions)

    def hold(self, project_id: str) -> None:
        """A page shows the project: keep it open while it does."""
        with self._lock:
            self._holds[project_id] = self._holds.get(project_id, 0) + 1

    def let_go(self, project_id: str) -> None:
        with self._lock:
            left = self._holds.get(project_id, 0) - 1
            if left > 0:
                self._holds[project_id] = left
            else:
                self._holds.pop(project_id, None)
            self._used[project_id] = self.clock()

    def close_idle(self) -> list[str]:
        """Close the projects nobody has used for ``idle_seconds``: no page shows them, nothing of
        theirs runs or waits. Returns their ids."""
        now = self.clock()
        with self._lock:
            idle = [(pid, s) for pid, s in self._sessions.items() if not self._holds.get(pid)
                    and now - self._used.get(pid, now) >= self.idle_seconds]
        closing = []
        for project_id, session in idle:
            if not self._idle(project_id, session):
                continue
            with self._lock:
                if self._holds.get(project_id) or self._sessions.get(project_id) is not session:
                    continue
                del self._sessions[project_id]
            session.close()
            closing.append(project_id)
        return closing

    def drop_removed(self) -> list[str]:
        """Close, writing nothing, the open projects whose owners are no longer users (removed while
        the server runs, from another process too): their folders were moved away, and nothing of
        theirs may make them again. Returns the projects' ids."""
        users = {u.name for u in self.accounts.list()}
        with self._lock:
            gone = [(pid, s) for pid, s in self._sessions.items() if s.owner not in users]
            for pid, _ in gone:
                del self._sessions[pid]
        for project_id, session in gone:
            self.turns.withdraw(project_id)
            session.abandon()
        return [pid for pid, _ in gone]

    def resume_queued(self) -> list[str]:
        """Open the projects that have runs queued from before the last stop, so they run without
        waiting for their owners to come back."""
        resumed = []
        for user in self.accounts.list():
            for project in self.projects.mine(user):
                if has_queued_runs(project.path):
                    self._session(project, limited=False)
                    resumed.append(project.id)
        return resumed

    def close(self) -> None:
        """Close every project (a running job stops, a waiting one stops waiting; their runs stay
        queued for the next start), then the turns."""
        with self._lock:
            self._closed = True
            sessions = list(self._sessions.values())
            self._sessions.clear()
        self.turns.drain()
        for session in sessions:
            session.close()
        self.turns.close()

    # -- new work --------------------------------------------------------------------------------------
    def admit(self, user: str) -> None:
        """Refuse new work (a run, a sweep) from ``user`` when their queue or their disk quota is full."""
        try:
            self.quota.check(user)
        except QuotaExceeded as exc:
            raise WorkRefused(f"nothing was queued: {exc}", 507) from None
        waiting = self.waiting_jobs(user)
        if waiting >= self.queue_limit:
            raise WorkRefused(f"nothing was queued: you already have {waiting} runs waiting, the most one person "
                              f"may have ({self.queue_limit}; a sweep counts once); wait for one to start or "
                              "cancel one", 429)

    def waiting_jobs(self, user: str) -> int:
        """The jobs of ``user``'s projects that wait to run (a sweep's branches are one job), as the
        machine's queue holds them."""
        return self.turns.waiting(user)

    # -- the machine's queue ---------------------------------------------------------------------------
    def queue(self, user: User | None = None) -> list[QueueEntry]:
        """The machine's jobs: running first, then waiting in the order the fair queue will start them.
        With ``user``, only theirs (every job for an admin)."""
        entries = self._queue()[2]
        if user is None or user.admin:
            return entries
        return [e for e in entries if e.user == user.name]

    def position(self, project_id: str, run_id: int) -> int | None:
        """A queued run's place in the machine's queue (1: starts next)."""
        return self._queue()[1].get((project_id, run_id))

    def _queue(self) -> tuple[int, dict[tuple[str, int], int], list[QueueEntry]]:
        """The queue as the pages show it, read from the machine's queue (kept while it does not move)."""
        running, waiting, _, version = self.turns.state()
        cached = self._order
        if cached is not None and cached[0] == version:
            return cached
        entries = [QueueEntry(user, project, runs, None) for user, project, runs in running]
        positions: dict[tuple[str, int], int] = {}
        for place, (user, project, runs) in enumerate(waiting, start=1):
            entries.append(QueueEntry(user, project, runs, place))
            positions.update({(project, r): place for r in runs})
        self._order = (version, positions, entries)
        return self._order

    def cancel(self, user: User, project_id: str, run_id: int | str) -> str:
        """Cancel a run of the machine's queue: one's own, or anyone's for an admin (ProjectNotFound,
        RunNotFound or NotAllowed otherwise)."""
        project = self.projects.get(user, project_id)
        if project.owner != user.name and not user.admin:
            raise NotAllowed(f"only {project.owner} or an admin can cancel runs of project '{project.title}'")
        session = self.session(project)
        return session.queue.cancel(session.runs.get(run_id)["id"])  # RunNotFound for a run the project does not have

    # -- a project as a user may see it ----------------------------------------------------------------
    def project_for(self, user: User, project_id: str, need: str = "read") -> Project:
        """``projects.get`` (ProjectNotFound: 404, NotAllowed: 403)."""
        return self.projects.get(user, project_id, need)  # type: ignore[arg-type]

    def project_title(self, user: User, project_id: str) -> str | None:
        """A project's title for ``user``; None for one they may not read (an admin reads all)."""
        try:
            return self.projects.get(user, project_id).title
        except ProjectNotFound:
            return None


__all__ = ["ClassServer", "FairTurns", "ProjectTurns", "QueueEntry", "WorkRefused", "latest_graph", "open_project"]
