"""The multi-user editor put together (``nodeflow serve --users``): the site of
:mod:`nodeflow.ui.multiuser` (sign-in, each project's API, the site's routes, the sockets' guard) and the
pages of :mod:`nodeflow.ui.project_pages`, on NiceGUI's app."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from nicegui import app, ui

from nodeflow.server import ClassServer
from nodeflow.uploads import remove_leftovers
from nodeflow.users.login import LoginThrottle, install_login

from .api import RequestGuard, restrict_socket_origins
from .flow_editor import BundleMissing, check_bundle
from .multiuser import PUBLIC, MultiUser, ProjectRouter, add_site_routes, guard_sockets
from .open_pages import OpenPages
from .assignments_page import install_assignments
from .project_pages import add_pages


def install_multiuser(server: ClassServer, *, secure: bool = False,
                      throttle: LoginThrottle | None = None) -> MultiUser:
    """Register the multi-user site on NiceGUI's app (once per process, before it starts). The
    address the sign-in limits count is the connection's peer: start the server with
    :func:`serve_users` (or uvicorn with ``proxy_headers`` off, or on for named proxies only)."""
    mu = MultiUser(server)
    for user in server.accounts.list():  # uploads a killed process left half-done
        for project in server.projects.mine(user) + server.projects.mine(user, archived=True):
            remove_leftovers(project.path / "data")
    app.add_middleware(RequestGuard, check_host=False)
    app.add_middleware(ProjectRouter, mu=mu)
    login = install_login(app, server.accounts, throttle=throttle, secure=secure, public=PUBLIC)
    mu.open_pages = OpenPages(server, login)
    restrict_socket_origins(check_host=False)
    guard_sockets(mu)
    add_site_routes(mu)
    add_pages(mu)
    install_assignments(mu)  # class competitions: /api/assignments, /assignments/ID
    for start in (lambda: threading.Thread(target=server.resume_queued, daemon=True).start(), mu.watch_idle,
                  mu.open_pages.start):
        start() if app.is_started else app.on_startup(start)  # a test installs it into a running app
    app.on_shutdown(mu.open_pages.stop)
    app.on_shutdown(mu.close)
    return mu


def serve_users(server: ClassServer, host: str = "127.0.0.1", port: int = 8080, secure: bool = False,
                trusted_proxies: Sequence[str] = ()) -> None:
    """Start the multi-user editor on ``host:port`` and block until the server stops.

    A client's address (which the sign-in limits count) is the connection's peer. Only the
    ``trusted_proxies`` (addresses or networks) may name another in ``X-Forwarded-For``; by default
    none may, not even one on this machine (uvicorn would trust 127.0.0.1, so any local program
    could pose as a new address with each guess)."""
    try:
        check_bundle()
    except BundleMissing as exc:
        raise SystemExit(f"nodeflow serve: {exc}") from None
    install_multiuser(server, secure=secure)
    users = server.accounts.list()
    if not users:
        print(f"nodeflow: no users in {server.root} yet; add one with "
              f"'nodeflow users add NAME --admin --workspace {server.root}'", flush=True)
    print(f"nodeflow server for {len(users)} user(s): http://{host}:{port}/", flush=True)
    ui.run(host=host, port=port, reload=False, show=False, title="nodeflow", favicon="🔀",
           show_welcome_message=False, **proxy_settings(trusted_proxies))


def proxy_settings(trusted_proxies: Sequence[str]) -> dict[str, Any]:
    """uvicorn's settings for whose ``X-Forwarded-For`` counts: the named proxies' only, none by default."""
    trusted = [p for p in trusted_proxies if p]
    return {"proxy_headers": bool(trusted), "forwarded_allow_ips": trusted or None}
