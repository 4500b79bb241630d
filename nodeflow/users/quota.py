"""A per-user disk quota over everything in a user's folder: uploads, caches, checkpoints, runs.

Measuring walks the folder, which costs time in proportion to its files, so a figure is kept
for :attr:`DiskQuota.max_age` seconds and moved by the writes the server makes itself
(:meth:`DiskQuota.add`); after a run, which writes in another process, call
:meth:`DiskQuota.forget`. Over quota, new work is refused (:meth:`DiskQuota.check`); nothing
already stored is touched.
"""

from __future__ import annotations

import os
import stat as stat_mode
import threading
import time
from collections.abc import Callable
from pathlib import Path

from nodeflow.executor import format_bytes
from nodeflow.users.accounts import Accounts


class QuotaExceeded(Exception):
    """New work refused because the user's folder is over their quota (HTTP 507 or 413)."""


def folder_bytes(folder: Path) -> int:
    """The bytes of the regular files under ``folder``; links are not followed and a file with
    several hard links counts once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for base, dirs, files in os.walk(folder, followlinks=False):
        for name in files + dirs:
            try:
                stat = os.lstat(os.path.join(base, name))
            except OSError:  # removed while we walk
                continue
            if not stat_mode.S_ISREG(stat.st_mode):
                continue
            if stat.st_nlink > 1:
                if (stat.st_dev, stat.st_ino) in seen:
                    continue
                seen.add((stat.st_dev, stat.st_ino))
            total += stat.st_size
    return total


class DiskQuota:
    """``limit`` bytes per user (None: no limit, usage still measured)."""

    def __init__(self, accounts: Accounts, limit: int | None, max_age: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.accounts = accounts
        self.limit = limit
        self.max_age = max_age
        self.clock = clock
        self._lock = threading.Lock()
        #: user -> (bytes, when measured)
        self._known: dict[str, tuple[int, float]] = {}

    def usage(self, user: str) -> int:
        with self._lock:
            known = self._known.get(user)
        if known is not None and self.clock() - known[1] < self.max_age:
            return known[0]
        measured = folder_bytes(self.accounts.user_dir(user))
        with self._lock:
            self._known[user] = (measured, self.clock())
        return measured

    def add(self, user: str, nbytes: int) -> None:
        """The server wrote (or, negative, freed) ``nbytes`` in the user's folder."""
        with self._lock:
            if user in self._known:
                used, when = self._known[user]
                self._known[user] = (max(0, used + nbytes), when)

    def forget(self, user: str) -> None:
        """Measure again next time (after a run, which wrote in another process)."""
        with self._lock:
            self._known.pop(user, None)

    def left(self, user: str) -> int | None:
        """Bytes the user may still write, or None without a limit."""
        return None if self.limit is None else max(0, self.limit - self.usage(user))

    def check(self, user: str, incoming: int = 0) -> None:
        """Refuse new work (a run, an upload of ``incoming`` bytes) when it would not fit."""
        if self.limit is None:
            return
        used = self.usage(user)
        if used < self.limit and used + incoming <= self.limit:
            return
        what = f"{format_bytes(used)} used" + (f" + {format_bytes(incoming)} to add" if incoming else "")
        raise QuotaExceeded(f"{user}'s disk quota is full ({what}, quota {format_bytes(self.limit)}: uploads, "
                            "caches and checkpoints); nothing stored was removed: remove uploads you no longer "
                            "need (DELETE /api/p/PROJECT/data/NAME), or ask an admin for a larger quota")
