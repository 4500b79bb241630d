"""The open pages and sockets of a shared server, and how they end when the right to them does.

A page remembers the credential it was built with (a sign-in's secret, or an API token) and, for a
project's editor, the project. Signing out, a new password, the account removed (perhaps by
``nodeflow users remove`` in another process) or a project no longer shared all end up as a commit
to the accounts' database; a watcher notices the commit (SQLite's ``PRAGMA data_version``, a few
microseconds a look), asks again for each open page and socket whether it still stands, and closes
those that do not: the browser is sent to the sign-in page (or, for a project no longer theirs to
read, to the project list), the page client is deleted, so its timers stop, and its sockets are cut.
A sign-out made here wakes the watcher at once.

Between the commit and the close a socket may still send events: each one is checked against the
database as it stands (:meth:`OpenPages.allows`), so none of them runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from nicegui import Client, core, run

from nodeflow.users import User
from nodeflow.users.login import LOGIN_PATH, Credential, Login

if TYPE_CHECKING:
    from nodeflow.server import ClassServer

#: how often the watcher looks for a change of the accounts' database
WATCH_SECONDS = 0.2


@dataclass(frozen=True)
class OpenPage:
    """A page client as it was built: for whom, with which credential, showing which project."""

    client_id: str
    user: str
    credential: Credential | None
    project: str | None
    path: str


@dataclass(frozen=True)
class OpenSocket:
    user: str
    credential: Credential | None


class OpenPages:
    """The page clients and sockets of signed-in people, each kept as long as its credential (and,
    for an editor, the right to read its project) stands. Used on the event loop only (its pages,
    socket events, and the watcher all live there)."""

    def __init__(self, server: ClassServer, login: Login, interval: float = WATCH_SECONDS) -> None:
        self.server = server
        self.login = login
        self.interval = interval
        self.pages: dict[str, OpenPage] = {}
        self.sockets: dict[str, OpenSocket] = {}
        self._probe = server.accounts.db.changes()
        self._stopped = False
        self._version: int | None = None
        #: (user, credential, project) -> whether it stands, as of ``_version``
        self._verdicts: dict[tuple[str, Credential | None, str | None], bool] = {}
        self._unchecked = False
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        login.on_session_end.append(self.wake)

    # -- what is open ----------------------------------------------------------------------------------
    def add(self, client: Client, user: User, project: str | None = None) -> None:
        """``client`` is ``user``'s page (showing ``project``), built with the request's credential."""
        request = client.request
        credential = getattr(request.state, "credential", None)
        self.pages[client.id] = OpenPage(client.id, user.name, credential, project, request.url.path)
        self._unchecked = True  # built, perhaps, just after its credential ended: the watcher looks again
        client.on_delete(lambda: self.pages.pop(client.id, None))

    def owner(self, client_id: Any) -> str | None:
        page = self.pages.get(client_id) if isinstance(client_id, str) else None
        return page.user if page is not None else None

    def connected(self, sid: str, user: User, credential: Credential | None) -> None:
        self.sockets[sid] = OpenSocket(user.name, credential)

    def disconnected(self, sid: str) -> None:
        self.sockets.pop(sid, None)

    def socket_user(self, sid: str) -> str | None:
        socket = self.sockets.get(sid)
        return socket.user if socket is not None else None

    # -- whether it still stands -----------------------------------------------------------------------
    def _stands(self, user: str, credential: Credential | None, project: str | None) -> bool:
        """Whether ``credential`` is still ``user``'s and lets them read ``project``: asked of the
        database once per change of it."""
        if self._stopped:  # the server is going: nothing more runs
            return False
        version = self._probe.version()
        if version != self._version:
            self._verdicts.clear()
            self._version = version
        key = (user, credential, project)
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self._verdicts[key] = self._ask(user, credential, project)
        return verdict

    def _ask(self, user: str, credential: Credential | None, project: str | None) -> bool:
        found = self.login.user_for(credential, touch=False)
        if found is None or found.name != user:
            return False
        return project is None or self.server.projects.can(found, project, "read")

    def allows(self, sid: str, client_id: str) -> bool:
        """Whether an event of socket ``sid`` for page ``client_id`` may run: both are the same
        user's, and both still stand."""
        page, socket = self.pages.get(client_id), self.sockets.get(sid)
        if page is None or socket is None or page.user != socket.user:
            return False
        if self._stands(socket.user, socket.credential, None) and self._stands(page.user, page.credential,
                                                                                  page.project):
            return True
        self.wake()
        return False

    def ended(self) -> tuple[dict[str, str], list[str]]:
        """The pages that no longer stand (client id -> where to send the browser) and the sockets
        whose own credential ended."""
        pages = {}
        for page in list(self.pages.values()):
            if not self._stands(page.user, page.credential, None):
                pages[page.client_id] = f"{LOGIN_PATH}?next={quote(page.path, safe='')}"
            elif not self._stands(page.user, page.credential, page.project):
                pages[page.client_id] = "/"  # still signed in: back to the project list
        sockets = [sid for sid, s in list(self.sockets.items()) if not self._stands(s.user, s.credential, None)]
        return pages, sockets

    # -- closing what ended ----------------------------------------------------------------------------
    async def close_ended(self) -> int:
        """Close every page and socket that no longer stands; returns how many pages."""
        pages, sockets = self.ended()
        cut = set(sockets)
        for client_id, target in pages.items():
            self.pages.pop(client_id, None)  # its events are refused from here on
            cut.update(sid for sid in list(self.sockets) if client_id in core.sio.rooms(sid))
            client = Client.instances.get(client_id)
            if client is None:
                continue
            if client.has_socket_connection:
                with contextlib.suppress(Exception):  # a socket gone already: it is cut below anyway
                    await core.sio.emit("open", {"path": target, "new_tab": False}, room=client_id)
            for task in list(getattr(client, "_delete_tasks", {}).values()):
                task.cancel()  # NiceGUI's own deletion after a lost socket would delete it twice
            if client_id in Client.instances:
                client.delete()
        for sid in cut:  # after the page was sent on: the socket's queue sends in order
            self.sockets.pop(sid, None)
            with contextlib.suppress(Exception):
                await core.sio.disconnect(sid)
        return len(pages)

    def wake(self) -> None:
        """Look now rather than at the next tick (from any thread)."""
        if self._loop is not None and self._wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nothing to wake
                self._loop.call_soon_threadsafe(self._wake.set)

    async def watch(self) -> None:
        """Until cancelled: after each change of the accounts' database (or a page built since the
        last look), close what ended."""
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        seen = None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            version = self._probe.version()
            if version != seen or self._unchecked:
                seen, self._unchecked = version, False
                try:
                    await self.close_ended()
                    await run.io_bound(self.server.drop_removed)
                except Exception as exc:  # the watcher must outlive one bad look
                    core.app.handle_exception(exc)

    def start(self) -> None:
        from nicegui import background_tasks

        self._task = background_tasks.create(self.watch(), name="nodeflow open pages")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._stopped = True
        self._probe.close()
