"""A per-user disk quota over everything in a user's folder: uploads, caches, checkpoints, runs.

Measuring walks the folder, which costs time in proportion to its files, so a figure is kept
for :attr:`DiskQuota.max_age` seconds and moved by the writes the server makes itself
(:meth:`DiskQuota.add`); after a run, which writes in another process, call
:meth:`DiskQuota.forget`. Over quota, new work is refused (:meth:`DiskQuota.check`); nothing
already stored is touched.

Uploads are admitted here too (:meth:`DiskQuota.reserve`), as one decision: at most
``uploads_at_once`` per user arriving at once, each counted while its bytes arrive against what
the quota has left after the user's other uploads in flight, so uploads arriving together can
never store more than the quota between them.
"""

from __future__ import annotations

import os
import stat as stat_mode
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path

from nodeflow.words import format_bytes
from nodeflow.users.accounts import Accounts

#: uploads one person may have arriving at once; one more is refused (HTTP 429)
UPLOADS_AT_ONCE = 2
#: how often a measurement that raced a write is taken again before it is used uncached
MEASURE_TRIES = 3


class QuotaExceeded(Exception):
    """New work refused because the user's folder is over their quota (HTTP 507 or 413)."""


class TooManyUploads(Exception):
    """An upload refused because its user already has ``uploads_at_once`` arriving (HTTP 429)."""


def folder_bytes(folder: Path, skip: Collection[Path] = ()) -> int:
    """The bytes of the regular files under ``folder``; links are not followed, a file with
    several hard links counts once, and the folders in ``skip`` (uploads in flight, which their
    reservations count) are left out."""
    seen: set[tuple[int, int]] = set()
    skipped = {os.path.normpath(p) for p in skip}
    total = 0
    for base, dirs, files in os.walk(folder, followlinks=False):
        if skipped:
            dirs[:] = [d for d in dirs if os.path.join(base, d) not in skipped]
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


class Reservation:
    """One upload's hold on its user's quota while its bytes arrive. It holds what it has written
    (:meth:`take` before each write, :meth:`give_back` for what it removed) and at least the
    ``claim`` it came with (the size its request announced, up to what was free), so the user's
    other uploads see that room as taken. At the end it becomes usage (:meth:`settle`) or is
    released (:meth:`release`); either way it stops counting."""

    def __init__(self, quota: DiskQuota, user: str, claim: int) -> None:
        self.quota = quota
        self.user = user
        self.claim = claim
        self.held = 0
        #: the staging folder the upload writes into, left out when the user's folder is measured
        self.folder: Path | None = None
        self.open = True

    @property
    def counted(self) -> int:
        """The bytes the user's other uploads must leave to this one."""
        return max(self.claim, self.held)

    def take(self, nbytes: int) -> None:
        """Count ``nbytes`` about to be written, or raise QuotaExceeded (nothing is counted then)."""
        self.quota._take(self, nbytes)

    def give_back(self, nbytes: int) -> None:
        """``nbytes`` this upload wrote were removed again (a zip, once unpacked)."""
        with self.quota._lock:
            self.held = max(0, self.held - nbytes)

    def settle(self, kept: int, commit: Callable[[], None] = lambda: None) -> None:
        """The upload is kept: ``commit`` moves it into place, and ``kept`` bytes become usage."""
        self.quota._settle(self, kept, commit)

    def release(self) -> None:
        """The upload ended without keeping anything (refused, or its client went away)."""
        self.quota._settle(self, None, lambda: None)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class DiskQuota:
    """``limit`` bytes per user (None: no limit, usage still measured); the admission of uploads,
    ``uploads_at_once`` per user."""

    def __init__(self, accounts: Accounts, limit: int | None, max_age: float = 300.0,
                 clock: Callable[[], float] = time.monotonic, uploads_at_once: int = UPLOADS_AT_ONCE) -> None:
        self.accounts = accounts
        self.limit = limit
        self.max_age = max_age
        self.clock = clock
        self.uploads_at_once = uploads_at_once
        self._lock = threading.Lock()
        #: user -> (bytes, when measured)
        self._known: dict[str, tuple[int, float]] = {}
        #: user -> their uploads arriving now
        self._arriving: dict[str, list[Reservation]] = {}
        #: user -> how often their figure moved: a measurement that overlapped a move is not kept
        self._moves: dict[str, int] = {}

    def usage(self, user: str) -> int:
        """The bytes stored in the user's folder (uploads still arriving not included)."""
        with self._lock:
            known = self._known.get(user)
            moves = self._moves.get(user, 0)
        if known is not None and self.clock() - known[1] < self.max_age:
            return known[0]
        for _ in range(MEASURE_TRIES):
            with self._lock:
                skip = [r.folder for r in self._arriving.get(user, []) if r.folder is not None]
            measured = folder_bytes(self.accounts.user_dir(user), skip)
            with self._lock:
                if self._moves.get(user, 0) == moves:
                    self._known[user] = (measured, self.clock())
                    return measured
                moves = self._moves.get(user, 0)
        return measured  # writes keep racing the walk: use it, keep nothing

    def add(self, user: str, nbytes: int) -> None:
        """The server wrote (or, negative, freed) ``nbytes`` in the user's folder."""
        with self._lock:
            self._moved(user)
            if user in self._known:
                used, when = self._known[user]
                self._known[user] = (max(0, used + nbytes), when)

    def forget(self, user: str) -> None:
        """Measure again next time (after a run, which wrote in another process)."""
        with self._lock:
            self._moved(user)
            self._known.pop(user, None)

    def arriving(self, user: str) -> tuple[int, int]:
        """The user's uploads arriving now: how many, and the bytes they hold."""
        with self._lock:
            mine = self._arriving.get(user, [])
            return len(mine), sum(r.counted for r in mine)

    def left(self, user: str) -> int | None:
        """Bytes the user may still write, or None without a limit (uploads arriving count as written)."""
        if self.limit is None:
            return None
        used = self.usage(user)
        return max(0, self.limit - used - self.arriving(user)[1])

    def check(self, user: str, incoming: int = 0) -> None:
        """Refuse new work (a run, an upload of ``incoming`` bytes) when it would not fit."""
        if self.limit is None:
            return
        used = self.usage(user)
        arriving = self.arriving(user)[1]
        if used + arriving < self.limit and used + arriving + incoming <= self.limit:
            return
        what = (f"{format_bytes(used)} used" + (f" + {format_bytes(arriving)} arriving in uploads" if arriving else "")
                + (f" + {format_bytes(incoming)} to add" if incoming else ""))
        raise QuotaExceeded(f"{user}'s disk quota is full ({what}, quota {format_bytes(self.limit)}: uploads, "
                            "caches and checkpoints); nothing stored was removed: remove uploads you no longer "
                            "need (DELETE /api/p/PROJECT/data/NAME), or ask an admin for a larger quota")

    # -- uploads ---------------------------------------------------------------------------------------
    def reserve(self, user: str, expected: int = 0) -> Reservation:
        """Admit one upload of ``user`` announcing ``expected`` bytes (0: not known), or refuse it:
        TooManyUploads when ``uploads_at_once`` of theirs are arriving already, QuotaExceeded when
        their quota has no room left beside them. Use the reservation as a context manager, or end
        it with :meth:`Reservation.settle` or :meth:`Reservation.release`."""
        used = self.usage(user)
        with self._lock:
            mine = self._arriving.setdefault(user, [])
            if len(mine) >= self.uploads_at_once:
                raise TooManyUploads(f"{user} has {len(mine)} uploads arriving already, as many at once as one "
                                     f"person may (uploads_at_once = {self.uploads_at_once}); send this one when "
                                     "one of them has finished")
            claim = max(0, expected)
            if self.limit is not None:
                arriving = sum(r.counted for r in mine)
                room = self.limit - used - arriving
                if room <= 0:
                    raise QuotaExceeded(f"{user}'s disk quota is full ({format_bytes(used)} used"
                                        + (f" + {format_bytes(arriving)} arriving in other uploads" if arriving else "")
                                        + f", quota {format_bytes(self.limit)})")
                claim = min(claim, room)
            reservation = Reservation(self, user, claim)
            mine.append(reservation)
            return reservation

    def _take(self, reservation: Reservation, nbytes: int) -> None:
        if not reservation.open:
            raise RuntimeError("this upload's reservation has ended")
        used = self.usage(reservation.user) if self.limit is not None else 0
        with self._lock:
            if self.limit is not None:
                others = sum(r.counted for r in self._arriving.get(reservation.user, []) if r is not reservation)
                room = self.limit - used - others
                if reservation.held + nbytes > room:
                    raise QuotaExceeded(
                        f"the upload is larger than what your disk quota has left ({format_bytes(max(room, 0))}: "
                        f"quota {format_bytes(self.limit)}, {format_bytes(used)} used"
                        + (f", {format_bytes(others)} held by your other uploads arriving now" if others else "")
                        + ")")
            reservation.held += nbytes

    def _settle(self, reservation: Reservation, kept: int | None, commit: Callable[[], None]) -> None:
        """End ``reservation``; with ``kept``, run ``commit`` (the move into place) and count the bytes
        as used. The figure is marked as moved on both sides of the commit, so a measurement that
        walked the folder while it happened is taken again instead of kept."""
        user = reservation.user
        with self._lock:
            if not reservation.open:
                return
            self._moved(user)
        committed = False
        try:
            if kept is not None:
                commit()
                committed = True
        finally:
            with self._lock:
                reservation.open = False
                mine = self._arriving.get(user, [])
                if reservation in mine:
                    mine.remove(reservation)
                if not mine:
                    self._arriving.pop(user, None)
                self._moved(user)
                if committed and user in self._known:
                    used, when = self._known[user]
                    self._known[user] = (used + (kept or 0), when)

    def _moved(self, user: str) -> None:
        self._moves[user] = self._moves.get(user, 0) + 1
