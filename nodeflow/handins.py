"""Handing in on a shared server: a student's trained-model node becomes a hand-in of an assignment
(:mod:`nodeflow.assignments`), which waits its turn in the machine's one fair queue and is then scored
by the server in a process of its own. No web code here: :mod:`nodeflow.ui.assignments_page` puts it
behind routes and a page."""

from __future__ import annotations

import threading
from pathlib import Path

from nodeflow.assignments import TRAINED, AssignmentError, Assignments, Handin
from nodeflow.server import ClassServer, WorkRefused
from nodeflow.users import AccountError, NotAllowed, ProjectNotFound, User

#: what a refused hand-in raises (each with the reason a person reads)
REFUSALS = (AssignmentError, NotAllowed, ProjectNotFound, AccountError, WorkRefused)


class Handins:
    """Hand-ins of one server: taken in, queued on the machine's fair queue, scored one at a time as
    the queue gives them a turn."""

    def __init__(self, server: ClassServer, store: Assignments) -> None:
        self.server = server
        self.store = store
        self._done: dict[int, threading.Event] = {}
        self._lock = threading.Lock()

    def hand_in(self, user: User, assignment_id: str, project_id: str, node: str) -> Handin:
        """Hand in the current cached model of ``node`` in ``user``'s own project ``project_id``.
        Refused (nothing recorded) for a project that is not theirs, a node that is not there, gives no
        trained model or is not trained, after the deadline, on a closed assignment, over the day's limit."""
        desk = self.store.desk(user)
        assignment = desk.get(assignment_id)
        if not isinstance(node, str) or not node:
            raise AssignmentError("name the node to hand in")
        project = self.server.projects.get(user, project_id, "write")
        if project.owner != user.name:
            raise NotAllowed(f"hand in a model of a project of your own; '{project.title}' is {project.owner}'s")
        desk.check_open(assignment, user.name)
        session = self.server.session(project)
        graph = session.document.graph
        try:
            spec = graph.node(node)
        except KeyError:
            raise AssignmentError(f"project '{project.title}' has no node '{node[:64]}'", 404) from None
        registry = self.server.registry
        node_type = registry.get(spec.type) if spec.type in registry else None
        if node_type is None or not any(p.type.name == TRAINED for p in node_type.outputs):
            raise AssignmentError(f"node '{node}' gives no trained model; hand in a trainer's node", 422)
        key = session.executor.keys(graph).get(node)
        entry = Path(project.path) / "cache" / key[:2] / key if key else None
        if entry is None or not (entry / "meta.json").is_file():
            raise AssignmentError(f"node '{node}' is not trained: run it, then hand it in", 409)
        handin = desk.record(assignment, user.name, project.id, node, key, graph, entry)
        self.submit(handin)
        return handin

    def hand_in_or_refusal(self, user: User, assignment_id: str, project_id: str, node: str) -> Handin | str:
        """:meth:`hand_in`, or the reason it was refused (nothing recorded then), for a page to show."""
        try:
            return self.hand_in(user, assignment_id, project_id, node)
        except REFUSALS as exc:
            return str(exc.args[0]) if exc.args else str(exc)

    def submit(self, handin: Handin) -> None:
        """Score the hand-in when the machine's fair queue gives it a turn (on a thread of its own)."""
        with self._lock:
            done = self._done.setdefault(handin.id, threading.Event())
        threading.Thread(target=self._score, args=(handin, done), daemon=True,
                         name=f"nodeflow-handin-{handin.id}").start()

    def _score(self, handin: Handin, done: threading.Event) -> None:
        turns = self.server.turns
        job = f"handin-{handin.id}"
        try:
            if not turns.acquire(handin.user, job, [handin.id], blocking=False) and \
                    not turns.acquire(handin.user, job, [handin.id], blocking=True):
                return  # the server is closing: it stays queued, scored after the next start
            try:
                self.store.score(handin)
            finally:
                turns.release(job)
        finally:
            done.set()

    def wait(self, handin_id: int, timeout: float | None = None) -> bool:
        """Until the hand-in's scoring ended (or the server stopped waiting for it); False on timeout."""
        with self._lock:
            done = self._done.setdefault(int(handin_id), threading.Event())
        return done.wait(timeout)

    def resume(self) -> list[int]:
        """Queue again the hand-ins that were not scored when the server last stopped."""
        pending = self.store.pending()
        for handin in pending:
            self.submit(handin)
        return [h.id for h in pending]


__all__ = ["Handins"]
