"""The order in which a shared server starts its users' runs: round-robin by user, not first come.

Each user's runs keep their own order; the next run to start is the first queued run of the user
who was served longest ago (a user never served before comes first, then by who queued first).
So when one student queues five runs and another queues one after them, the second student's run
starts as soon as the first student's first run has. Each user may have at most ``per_user``
runs waiting. Pure bookkeeping: the scheduler calls it and owns the runs themselves.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass

RunId = Hashable


class QueueFull(Exception):
    """The user already has as many runs waiting as they may (HTTP 429)."""


@dataclass(frozen=True)
class Waiting:
    run_id: RunId
    user: str
    #: 1 = the next run to start
    position: int


class FairQueue:
    def __init__(self, per_user: int | None = 10) -> None:
        """``per_user`` None: no limit here (a server that admits work in one place of its own)."""
        if per_user is not None and per_user < 1:
            raise ValueError(f"per_user must be at least 1, got {per_user}")
        self.per_user = per_user
        self._lock = threading.Lock()
        self._queues: dict[str, deque[RunId]] = {}
        self._owner: dict[RunId, str] = {}
        #: user -> the tick of their last run started; users never served have none
        self._served: dict[str, int] = {}
        #: user -> the tick at which their current spell of waiting began (ties among the never-served)
        self._since: dict[str, int] = {}
        self._ticks = itertools.count()
        #: the start order while nothing changes
        self._cached: list[RunId] | None = None

    def push(self, user: str, run_id: RunId) -> int:
        """Queue ``run_id`` for ``user``; returns its position. QueueFull past the user's limit."""
        with self._lock:
            if run_id in self._owner:
                raise ValueError(f"run {run_id!r} is already queued")
            waiting = self._queues.setdefault(user, deque())
            if self.per_user is not None and len(waiting) >= self.per_user:
                raise QueueFull(f"{user} already has {len(waiting)} runs waiting, the most one user may queue; "
                                "wait for one to start or cancel one")
            if not waiting:
                self._since[user] = next(self._ticks)
            waiting.append(run_id)
            self._owner[run_id] = user
            self._cached = None
            return self._order().index(run_id) + 1

    def pop_next(self, skip: Callable[[RunId], bool] | None = None) -> tuple[str, RunId] | None:
        """The run to start now and its user, taken off the queue; None when nothing waits. ``skip``:
        runs that cannot start yet; a user whose runs all wait so is passed over, and otherwise their
        first run that can start goes (their order among the runs that can start is kept)."""
        with self._lock:
            ready: dict[str, RunId] = {}
            for user, runs in self._queues.items():
                found = next((r for r in runs if not (skip and skip(r))), None) if skip else (runs[0] if runs else None)
                if found is not None:
                    ready[user] = found
            if not ready:
                return None
            user = min(ready, key=lambda u: (self._served.get(u, -1), self._since[u]))
            run_id = ready[user]
            self._queues[user].remove(run_id)
            self._served[user] = next(self._ticks)
            self._forget(user, run_id)
            return user, run_id

    def cancel(self, run_id: RunId) -> bool:
        """Take a waiting run off the queue; False if it is not waiting (started, or unknown)."""
        with self._lock:
            user = self._owner.get(run_id)
            if user is None:
                return False
            self._queues[user].remove(run_id)
            self._forget(user, run_id)
            return True

    def owner(self, run_id: RunId) -> str | None:
        with self._lock:
            return self._owner.get(run_id)

    def position(self, run_id: RunId) -> int | None:
        """1 for the next run to start, and so on; None if it is not waiting."""
        with self._lock:
            if run_id not in self._owner:
                return None
            return self._order().index(run_id) + 1

    def snapshot(self, user: str | None = None) -> list[Waiting]:
        """The waiting runs in the order they will start (an admin's view); with ``user``, only
        theirs, each with its place in the whole queue."""
        with self._lock:
            order = [Waiting(run_id, self._owner[run_id], i + 1) for i, run_id in enumerate(self._order())]
        return order if user is None else [w for w in order if w.user == user]

    def __len__(self) -> int:
        with self._lock:
            return len(self._owner)

    # -- the rule played forward ------------------------------------------------------------------------
    def _order(self) -> list[RunId]:
        """Every waiting run in start order: pop_next played forward, kept until the queue changes
        (status polls ask far more often than runs come and go)."""
        if self._cached is None:
            turns = [(self._served.get(user, -1), self._since[user], user) for user in self._queues]
            heapq.heapify(turns)
            left = {user: (len(runs), iter(runs)) for user, runs in self._queues.items()}
            tick = max(self._served.values(), default=0)
            order = []
            while turns:
                _, since, user = heapq.heappop(turns)
                count, runs = left[user]
                order.append(next(runs))
                left[user] = (count - 1, runs)
                if count > 1:
                    tick += 1
                    heapq.heappush(turns, (tick, since, user))
            self._cached = order
        return self._cached

    def _forget(self, user: str, run_id: RunId) -> None:
        self._cached = None
        del self._owner[run_id]
        if not self._queues[user]:
            del self._queues[user]
            self._since.pop(user, None)
