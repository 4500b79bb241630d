"""Accounts of a multi-user server: users, their passwords, sign-in sessions and API tokens.

Passwords are hashed with Argon2id (argon2-cffi, RFC 9106's low-memory profile) and never kept
or printed in clear. Sessions and API tokens are random secrets of which only a SHA-256 digest
is stored: they carry 256 bits of entropy, so a fast hash is enough, and a stolen database
opens nothing. A token names its row (``nf_<id>_<secret>``), so checking it is one lookup and
one constant-time comparison.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from nodeflow.users.db import Database

#: user names become folder names: lower-case letters, digits, and . _ - inside, at most 32
NAME_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,30}[a-z0-9])?")
#: names a Windows file system refuses as folder names
RESERVED_NAMES = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
MIN_PASSWORD, MAX_PASSWORD = 8, 1024
#: how long a sign-in lasts
SESSION_SECONDS = 7 * 24 * 3600
TOKEN_PREFIX = "nf"
MAX_TOKEN_LABEL = 64
#: a token's "last used" is kept to the minute
TOKEN_USE_RESOLUTION = 60.0


class AccountError(ValueError):
    """A refused account operation; the message says what to change (one line on the CLI)."""


@dataclass(frozen=True)
class User:
    name: str
    admin: bool
    created: float


@dataclass(frozen=True)
class TokenInfo:
    """What may be shown about a token after it was created: never its secret."""

    id: str
    label: str
    created: float
    last_used: float | None


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise AccountError(f"user name {str(name)[:40]!r} is not allowed: use 1 to 32 lower-case letters, digits "
                           "and . _ - (starting and ending with a letter or digit)")
    if name in RESERVED_NAMES:
        raise AccountError(f"user name '{name}' is reserved by some file systems; choose another")
    return name


def check_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise AccountError(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"a password may have at most {MAX_PASSWORD} characters")
    return password


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


class Accounts:
    """The accounts kept in ``root`` (``root/users.sqlite``); each user's files live under
    ``root/users/NAME``. ``hasher`` is argon2-cffi's default unless a test passes a cheaper one."""

    def __init__(self, root: Path, hasher: PasswordHasher | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.root = Path(root)
        self.db = Database(self.root / "users.sqlite")
        self.hasher = hasher or PasswordHasher()
        self.clock = clock
        #: verified against when the name is unknown, so that an unknown name takes as long as a wrong
        #: password; made at the first sign-in (the commands that only manage accounts never need it)
        self._decoy: str | None = None

    def close(self) -> None:
        self.db.close()

    def user_dir(self, name: str) -> Path:
        return self.root / "users" / check_name(name)

    # -- users ---------------------------------------------------------------------------------------
    def add(self, name: str, password: str, admin: bool = False) -> User:
        check_name(name)
        hashed = self.hasher.hash(check_password(password))
        now = self.clock()
        with self.db.tx() as db:
            if db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise AccountError(f"user '{name}' already exists")
            db.execute("INSERT INTO users (name, password, admin, created) VALUES (?, ?, ?, ?)",
                       (name, hashed, int(admin), now))
        self.user_dir(name).mkdir(parents=True, exist_ok=True)
        return User(name, admin, now)

    def get(self, name: str) -> User | None:
        rows = self.db.query("SELECT name, admin, created FROM users WHERE name = ?", (name,))
        return _user(rows[0]) if rows else None

    def require(self, name: str) -> User:
        user = self.get(name)
        if user is None:
            raise AccountError(f"no user '{str(name)[:40]}' (see 'nodeflow users list')")
        return user

    def list(self) -> list[User]:
        return [_user(row) for row in self.db.query("SELECT name, admin, created FROM users ORDER BY name")]

    def set_password(self, name: str, password: str) -> None:
        """Also ends the user's sign-ins everywhere (API tokens stay: they are separate keys)."""
        hashed = self.hasher.hash(check_password(password))
        with self.db.tx() as db:
            if not db.execute("UPDATE users SET password = ? WHERE name = ?", (hashed, name)).rowcount:
                raise AccountError(f"no user '{str(name)[:40]}' (see 'nodeflow users list')")
            db.execute("DELETE FROM sessions WHERE user = ?", (name,))

    def remove(self, name: str) -> Path | None:
        """Delete the account, its sessions, tokens, projects' records and shares. Its files are
        moved aside to ``root/removed/NAME-TIME`` (returned), so nothing is lost and a new user of
        the same name starts empty."""
        with self.db.tx() as db:
            if not db.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount:
                raise AccountError(f"no user '{str(name)[:40]}' (see 'nodeflow users list')")
        folder = self.user_dir(name)
        if not folder.exists():
            return None
        aside = self.root / "removed" / f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(self.clock()))}"
        while aside.exists():
            aside = aside.with_name(aside.name + "-1")
        aside.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(folder, aside)
        return aside

    def verify(self, name: str, password: str) -> User | None:
        """The user when ``password`` is theirs, else None. An unknown name costs one hash too,
        so the time taken tells nothing about which names exist."""
        if self._decoy is None:
            self._decoy = self.hasher.hash(secrets.token_hex(16))
        rows = self.db.query("SELECT name, admin, created, password FROM users WHERE name = ?", (name,))
        stored = rows[0]["password"] if rows else self._decoy
        try:
            ok = self.hasher.verify(stored, password)
        except (VerificationError, InvalidHashError, TypeError):
            ok = False
        if not rows or not ok:
            return None
        if self.hasher.check_needs_rehash(stored):  # the hasher's parameters were raised since
            with self.db.tx() as db:
                db.execute("UPDATE users SET password = ? WHERE name = ?", (self.hasher.hash(password), name))
        return _user(rows[0])

    # -- sign-in sessions ----------------------------------------------------------------------------
    def start_session(self, user: User) -> str:
        """A new sign-in for ``user``: a secret for the session cookie (only its digest is stored)."""
        secret = secrets.token_urlsafe(32)
        now = self.clock()
        with self.db.tx() as db:
            db.execute("DELETE FROM sessions WHERE created < ?", (now - SESSION_SECONDS,))
            db.execute("INSERT INTO sessions (digest, user, created) VALUES (?, ?, ?)", (digest(secret), user.name, now))
        return secret

    def session_user(self, secret: str) -> User | None:
        rows = self.db.query("SELECT u.name, u.admin, u.created, s.created AS started FROM sessions s "
                             "JOIN users u ON u.name = s.user WHERE s.digest = ?", (digest(secret),))
        if not rows or rows[0]["started"] < self.clock() - SESSION_SECONDS:
            return None
        return _user(rows[0])

    def end_session(self, secret: str) -> None:
        with self.db.tx() as db:
            db.execute("DELETE FROM sessions WHERE digest = ?", (digest(secret),))

    # -- API tokens ----------------------------------------------------------------------------------
    def create_token(self, name: str, label: str) -> tuple[TokenInfo, str]:
        """A new API token for ``name``; the secret string is returned here once and never again."""
        label = label.strip() if isinstance(label, str) else ""
        if not label or len(label) > MAX_TOKEN_LABEL or not label.isprintable():
            raise AccountError(f"a token needs a name of 1 to {MAX_TOKEN_LABEL} printable characters")
        token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        now = self.clock()
        with self.db.tx() as db:
            if not db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise AccountError(f"no user '{str(name)[:40]}' (see 'nodeflow users list')")
            db.execute("INSERT INTO tokens (id, user, label, digest, created) VALUES (?, ?, ?, ?, ?)",
                       (token_id, name, label, digest(secret), now))
        return TokenInfo(token_id, label, now, None), f"{TOKEN_PREFIX}_{token_id}_{secret}"

    def tokens(self, name: str) -> list[TokenInfo]:
        return [TokenInfo(r["id"], r["label"], r["created"], r["last_used"]) for r in
                self.db.query("SELECT id, label, created, last_used FROM tokens WHERE user = ? ORDER BY created",
                              (name,))]

    def revoke_token(self, name: str, token_id: str) -> None:
        """Revoke one of ``name``'s own tokens; another user's token id is as unknown as a made-up one."""
        with self.db.tx() as db:
            if not db.execute("DELETE FROM tokens WHERE id = ? AND user = ?", (token_id, name)).rowcount:
                raise AccountError(f"no token '{str(token_id)[:20]}' of yours")

    def token_user(self, token: str, touch: bool = True) -> User | None:
        """The user an API token belongs to, or None for anything else (compared in constant time).
        ``touch`` notes its use (a check that the token still stands is not a use)."""
        prefix, _, rest = token.partition("_")
        token_id, _, secret = rest.partition("_")
        if prefix != TOKEN_PREFIX or not token_id or not secret:
            return None
        rows = self.db.query("SELECT u.name, u.admin, u.created, t.digest, t.last_used FROM tokens t "
                             "JOIN users u ON u.name = t.user WHERE t.id = ?", (token_id,))
        if not rows or not hmac.compare_digest(rows[0]["digest"], digest(secret)):
            return None
        now = self.clock()
        # a script polling is not a write per call
        if touch and (rows[0]["last_used"] or 0) < now - TOKEN_USE_RESOLUTION:
            with self.db.tx() as db:
                db.execute("UPDATE tokens SET last_used = ? WHERE id = ?", (now, token_id))
        return _user(rows[0])


def _user(row) -> User:
    return User(row["name"], bool(row["admin"]), row["created"])
