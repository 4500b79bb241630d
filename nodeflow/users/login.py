"""Signing in to a multi-user server: a login form, ``POST /login`` and ``/logout``, and a gate
in front of every other route.

A request is someone's when it carries either ``Authorization: Bearer <API token>`` or the
session cookie. The cookie holds a random session secret, signed with itsdangerous (the signer
Starlette's SessionMiddleware uses) under a key kept in ``ROOT/session.key``; the server keeps
the secret's digest, so signing out or a new password ends a session for good. The cookie is
HttpOnly and SameSite=Strict (and Secure over https). Without either, an API request gets 401
and a page redirects to the form.

A failed sign-in answers the same whichever part was wrong, takes as long for an unknown name as
for a wrong password (see :meth:`Accounts.verify`), and slows down the next attempts of that name
from that address, and of that address (:class:`LoginThrottle`): a wait that grows with each
failure, during which attempts are refused without checking the password. The address is the
connection's peer; only a proxy the admin names (``serve --trusted-proxy``) may say whose request
it forwards.

What a request signed in with (:class:`Credential`) travels with it, so a page and its socket can be
ended when that credential ends (signing out, a new password, the account removed).
"""

from __future__ import annotations

import html
import math
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, quote, urlsplit

import anyio
from fastapi import FastAPI, Request
from starlette.requests import HTTPConnection
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

from nodeflow.users.accounts import SESSION_SECONDS, Accounts, User

COOKIE = "nodeflow_session"
LOGIN_PATH, LOGOUT_PATH = "/login", "/logout"
#: NiceGUI's scripts, styles and favicon carry no data; its websocket must check the page's user itself
PUBLIC_PREFIXES = ("/_nicegui/", "/_nicegui_ws/", "/favicon")
MAX_FORM_BYTES = 8192
#: password checks at once: Argon2 takes 64 MiB each, so a burst of sign-ins cannot take the memory
CONCURRENT_CHECKS = 4


@dataclass(frozen=True)
class Credential:
    """What a request signed in with: a session's secret (from the cookie) or an API token. A page
    keeps the one it was built with, so that it ends when the credential does."""

    kind: Literal["session", "token"]
    secret: str = field(repr=False)


class Backoff:
    """Failures per key, and how long they make the next attempt wait: the first ``free`` cost
    nothing; after them each attempt must come ``first`` seconds after the last failure, doubling
    with each further failure up to ``cap`` (OWASP's advice: a slowdown that grows, never a lockout
    that someone else can set off). A key with no failure for ``forget`` seconds starts over.
    Memory is bounded: at most ``max_keys`` keys, the least recently failed forgotten first."""

    def __init__(self, free: int, first: float, cap: float, forget: float = 3600.0, max_keys: int = 20_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if free < 0 or first <= 0 or cap < first or forget <= 0 or max_keys < 1:
            raise ValueError("Backoff needs free >= 0, 0 < first <= cap, forget > 0 and max_keys >= 1")
        self.free, self.first, self.cap, self.forget, self.max_keys = free, first, cap, forget, max_keys
        self.clock = clock
        #: key -> [failures, time of the last one]
        self._failures: OrderedDict[Hashable, list[float]] = OrderedDict()

    def _entry(self, key: Hashable) -> list[float] | None:
        entry = self._failures.get(key)
        if entry is not None and self.clock() - entry[1] >= self.forget:
            del self._failures[key]
            return None
        return entry

    def delay(self, failures: int) -> float:
        """How long after the last of ``failures`` failures the next attempt must wait."""
        if failures < self.free:
            return 0.0
        return min(self.cap, self.first * 2.0 ** min(failures - self.free, 64))

    def wait(self, key: Hashable) -> float:
        """Seconds until ``key`` may try again (0: now)."""
        entry = self._entry(key)
        if entry is None:
            return 0.0
        return max(0.0, entry[1] + self.delay(int(entry[0])) - self.clock())

    def failed(self, key: Hashable) -> tuple[float, float | None]:
        """Count a failure now; returns what :meth:`forgive` needs to take it back."""
        entry = self._entry(key)
        self._failures.pop(key, None)
        now = self.clock()
        self._failures[key] = [(entry[0] if entry else 0) + 1, now]
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)
        return now, entry[1] if entry else None

    def clear(self, key: Hashable) -> None:
        self._failures.pop(key, None)

    def forgive(self, key: Hashable, failure: tuple[float, float | None]) -> None:
        """Take back ``failure`` (an attempt counted in advance that succeeded): one failure fewer,
        and, when none came after it, the wait runs from the failure before it again, so that people
        signing in one after another at a slowed-down address do not each restart its wait."""
        entry = self._failures.get(key)
        if entry is None:
            return
        entry[0] -= 1
        stamp, before = failure
        if entry[0] <= 0:
            del self._failures[key]
        elif entry[1] == stamp and before is not None:
            entry[1] = before

    def __len__(self) -> int:
        return len(self._failures)


class LoginThrottle:
    """Failed sign-ins slow down the next attempt per name *at* an address, and per address.
    Never per name alone: then anyone could keep the owner out by failing on purpose, while the
    owner at another address signs in as usual. A class behind one address (a school's NAT)
    shares the address's allowance, so it is the larger one; guesses spread over many addresses
    are slowed by the password hash itself (:data:`CONCURRENT_CHECKS` at once)."""

    def __init__(self, per_name_at_address: tuple[int, float, float] = (5, 1.0, 300.0),
                 per_address: tuple[int, float, float] = (30, 1.0, 60.0), forget: float = 3600.0,
                 max_keys: int = 20_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.pairs = Backoff(*per_name_at_address, forget=forget, max_keys=max_keys, clock=clock)
        self.addresses = Backoff(*per_address, forget=forget, max_keys=max_keys, clock=clock)

    def begin(self, name: str, address: str) -> tuple[float, Any]:
        """Seconds until this name at this address may try again (0: now), and the ticket that
        :meth:`succeeded` takes. An attempt allowed now is counted as failed until then, so a burst
        of attempts sent at once cannot all pass the check while their passwords are verified."""
        wait = max(self.pairs.wait((name, address)), self.addresses.wait(address))
        if wait:
            return wait, None
        self.pairs.failed((name, address))
        return 0.0, self.addresses.failed(address)

    def succeeded(self, name: str, address: str, ticket: Any) -> None:
        self.pairs.clear((name, address))
        self.addresses.forgive(address, ticket)


def wait_words(seconds: float) -> str:
    """How long, as the refusal says it: "3 seconds", "1 minute", "5 minutes"."""
    if seconds < 90:
        whole = max(1, math.ceil(seconds))
        return f"{whole} second{'s' if whole > 1 else ''}"
    minutes = max(1, round(seconds / 60))
    return f"{minutes} minute{'s' if minutes > 1 else ''}"


def signing_key(root: Path) -> bytes:
    """The server's cookie-signing key, made once (readable by its owner only). Deleting the file
    signs everyone out."""
    path = Path(root) / "session.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes()
        if len(key) < 32:
            raise ValueError(f"{path} holds no usable key (delete it to make a new one; everyone signs in again)")
        return key
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a path on this server only, never another site."""
    if not value or len(value) > 2000 or not value.startswith("/") or value.startswith(("//", "/\\")) \
            or not value.isprintable() or urlsplit(value).netloc:
        return "/"
    return value


def same_origin(request: Request) -> bool:
    """A form post from this server's own page (or from a client that sends no Origin, a script)."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    parts = urlsplit(origin)
    host = request.headers.get("host", "")
    return f"{parts.scheme}://{parts.netloc}".lower() == f"{request.url.scheme}://{host}".lower()


class Login:
    """The routes and the check of a multi-user server; see :func:`install_login`."""

    def __init__(self, accounts: Accounts, key: bytes, throttle: LoginThrottle | None = None,
                 secure: bool = False, api_prefix: str = "/api/", public: tuple[str, ...] = PUBLIC_PREFIXES) -> None:
        self.accounts = accounts
        self.signer = URLSafeTimedSerializer(key, salt="nodeflow.session")
        self.throttle = throttle or LoginThrottle()
        self.secure = secure
        self.api_prefix = api_prefix
        self.public = public
        self._checks = anyio.CapacityLimiter(CONCURRENT_CHECKS)
        #: called after this server ends a sign-in (the multi-user site closes its pages then)
        self.on_session_end: list[Callable[[], None]] = []

    # -- who is asking ---------------------------------------------------------------------------------
    def session_secret(self, cookie: str | None) -> str | None:
        if not cookie:
            return None
        try:
            secret = self.signer.loads(cookie, max_age=SESSION_SECONDS)
        except BadSignature:  # forged, tampered with, or expired
            return None
        return secret if isinstance(secret, str) else None

    def credential_of(self, request: HTTPConnection) -> Credential | None:
        header = request.headers.get("authorization")
        if header is not None:  # a credential that fails is not made good by a cookie beside it
            scheme, _, token = header.partition(" ")
            return Credential("token", token.strip()) if scheme.lower() == "bearer" else None
        secret = self.session_secret(request.cookies.get(COOKIE))
        return Credential("session", secret) if secret else None

    def user_for(self, credential: Credential | None, touch: bool = True) -> User | None:
        """Whose ``credential`` is, now (None once it has ended). ``touch``: note a token's use."""
        if credential is None:
            return None
        if credential.kind == "token":
            return self.accounts.token_user(credential.secret, touch=touch)
        return self.accounts.session_user(credential.secret)

    def user_of(self, request: HTTPConnection) -> User | None:
        return self.user_for(self.credential_of(request))

    # -- routes ---------------------------------------------------------------------------------------
    async def page(self, request: Request) -> HTMLResponse:
        return login_page(safe_next(request.query_params.get("next")))

    async def submit(self, request: Request) -> Response:
        if not same_origin(request):
            return login_page("/", "This form was sent from another site.", 403)
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != \
                "application/x-www-form-urlencoded":
            return login_page("/", "Send the form as application/x-www-form-urlencoded.", 415)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                return login_page("/", "The form is too large.", 413)
        form = parse_qs(body.decode("utf-8", "replace"), max_num_fields=10)
        name = (form.get("name") or [""])[0].strip().lower()[:64]
        password = (form.get("password") or [""])[0]
        target = safe_next((form.get("next") or [""])[0])
        address = request.client.host if request.client else "unknown"  # the peer, or what a trusted proxy says
        wait, ticket = self.throttle.begin(name, address)
        if wait:
            response = login_page(target, f"Too many failed sign-ins. Try again in {wait_words(wait)}.", 429, name)
            response.headers["Retry-After"] = str(math.ceil(wait))
            return response
        user = await anyio.to_thread.run_sync(self.accounts.verify, name, password, limiter=self._checks)
        if user is None:
            return login_page(target, "Wrong name or password.", 401, name)
        self.throttle.succeeded(name, address, ticket)
        previous = self.session_secret(request.cookies.get(COOKIE))
        if previous:
            self.end_session(previous)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(COOKIE, self.signer.dumps(self.accounts.start_session(user)), max_age=SESSION_SECONDS,
                            path="/", httponly=True, samesite="strict",
                            secure=self.secure or request.url.scheme == "https")
        return response

    async def logout(self, request: Request) -> Response:
        if not same_origin(request):
            return login_page("/", "This form was sent from another site.", 403)
        secret = self.session_secret(request.cookies.get(COOKIE))
        if secret:
            self.end_session(secret)
        response = RedirectResponse(LOGIN_PATH, status_code=303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict",
                               secure=self.secure or request.url.scheme == "https")
        return response

    def end_session(self, secret: str) -> None:
        """End a sign-in, and tell whoever keeps pages open with it (:attr:`on_session_end`) at once."""
        self.accounts.end_session(secret)
        for hook in list(self.on_session_end):
            hook()

    def refusal(self, scope: dict[str, Any]) -> Response:
        """What an unauthenticated request gets: 401 for the API, the form for a page."""
        path = scope.get("path", "")
        if path.startswith(self.api_prefix) or scope.get("method", "GET") not in ("GET", "HEAD"):
            return JSONResponse({"detail": "sign in first, or send 'Authorization: Bearer <API token>'"},
                                status_code=401, headers={"WWW-Authenticate": "Bearer"})
        query = scope.get("query_string", b"").decode("latin-1")
        return RedirectResponse(f"{LOGIN_PATH}?next={quote(path + ('?' + query if query else ''), safe='')}",
                                status_code=303)


class LoginGate:
    """ASGI middleware: every request outside the login routes and NiceGUI's static files must be
    someone's; ``scope["state"]["user"]`` (``request.state.user``) then says whose, and
    ``scope["state"]["credential"]`` with what."""

    def __init__(self, app: Any, login: Login) -> None:
        self.app = app
        self.login = login

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path in (LOGIN_PATH, LOGOUT_PATH) or path.startswith(self.login.public):
            await self.app(scope, receive, send)
            return
        credential = self.login.credential_of(HTTPConnection(scope))
        user = await anyio.to_thread.run_sync(self.login.user_for, credential)
        if user is None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            else:
                await self.login.refusal(scope)(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["user"], state["credential"] = user, credential
        await self.app(scope, receive, send)


def current_user(request: Request) -> User:
    """The signed-in user of a request that passed the gate (a FastAPI dependency)."""
    user = getattr(request.state, "user", None)
    if not isinstance(user, User):
        raise LookupError("current_user needs install_login's gate in front of this route")
    return user


def install_login(app: FastAPI, accounts: Accounts, *, throttle: LoginThrottle | None = None,
                  secure: bool = False, api_prefix: str = "/api/",
                  public: tuple[str, ...] = PUBLIC_PREFIXES) -> Login:
    """Turn on sign-in for ``app`` (a FastAPI or NiceGUI app, before it starts): the form at
    ``GET /login``, ``POST /login`` and ``POST /logout``, and the gate in front of everything
    else. ``secure`` marks the cookie Secure even when a proxy in front speaks https for us."""
    login = Login(accounts, signing_key(accounts.root), throttle, secure, api_prefix, public)
    app.add_api_route(LOGIN_PATH, login.page, methods=["GET"], include_in_schema=False)
    app.add_api_route(LOGIN_PATH, login.submit, methods=["POST"], include_in_schema=False)
    app.add_api_route(LOGOUT_PATH, login.logout, methods=["POST"], include_in_schema=False)
    app.add_middleware(LoginGate, login=login)
    return login


def login_page(target: str, message: str = "", status: int = 200, name: str = "") -> HTMLResponse:
    """A plain form that works without scripts, keeping the name typed (never the password);
    every value written into it is escaped."""
    note = f'<p class="error" role="alert">{html.escape(message)}</p>' if message else ""
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · nodeflow</title>
<style>
body {{ font-family: system-ui, sans-serif; background: #f4f5f7; display: grid; place-items: center;
       min-height: 100vh; margin: 0; }}
form {{ background: #fff; padding: 2rem; border-radius: 8px; box-shadow: 0 1px 4px #0002; width: 18rem; }}
label {{ display: block; margin: .8rem 0 .2rem; }}
input[type=text], input[type=password] {{ width: 100%; box-sizing: border-box; padding: .5rem; font-size: 1rem; }}
button {{ margin-top: 1.2rem; width: 100%; padding: .6rem; font-size: 1rem; }}
.error {{ color: #b00020; }}
</style></head>
<body><form method="post" action="{LOGIN_PATH}">
<h1>nodeflow</h1>{note}
<input type="hidden" name="next" value="{html.escape(target)}">
<label for="name">Name</label>
<input id="name" name="name" type="text" value="{html.escape(name)}" autocomplete="username" required autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button>
</form></body></html>
"""
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})
