"""Signing in to a multi-user server, attacked: forged and tampered cookies, replayed sessions,
other people's tokens, guessing passwords, probing for names, redirects elsewhere, cross-site
forms. In-process over ASGI (httpx), the way a browser's requests reach the app."""

from __future__ import annotations

import asyncio
import statistics
import time
from urllib.parse import quote

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi import Depends, FastAPI, WebSocket
from fastapi.responses import HTMLResponse, PlainTextResponse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from itsdangerous import URLSafeTimedSerializer

from nodeflow.users import Accounts, User
from nodeflow.users.accounts import SESSION_SECONDS
from nodeflow.users.login import COOKIE, Backoff, LoginThrottle, current_user, install_login, wait_words

CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
BASE = "http://testserver"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Server:
    """An app with sign-in installed and a few routes of each kind, plus its accounts."""

    def __init__(self, root, hasher=CHEAP, throttle=None) -> None:
        self.clock = Clock(time.time())
        self.accounts = Accounts(root, hasher=hasher, clock=self.clock)
        self.alice = self.accounts.add("alice", "alice-pass")
        self.bob = self.accounts.add("bob", "bob-pass-1")
        self.app = FastAPI()
        self.login = install_login(self.app, self.accounts, throttle=throttle)

        @self.app.get("/api/whoami")
        def whoami(user: User = Depends(current_user)):
            return {"name": user.name}

        @self.app.post("/api/echo")
        def echo(user: User = Depends(current_user)):
            return {"name": user.name}

        @self.app.get("/page")
        def page(user: User = Depends(current_user)):
            return HTMLResponse(f"<p>hello {user.name}</p>")

        @self.app.get("/_nicegui/script.js")
        def script():
            return PlainTextResponse("// public")

        @self.app.websocket("/ws")
        async def socket(ws: WebSocket):
            await ws.accept()
            await ws.send_text(ws.scope["state"]["user"].name)
            await ws.close()

    def client(self, address: str = "10.0.0.1", base: str = BASE) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(self.app, client=(address, 40000)), base_url=base)

    def sessions(self) -> int:
        return self.accounts.db.query("SELECT COUNT(*) AS n FROM sessions")[0]["n"]


@pytest.fixture
def server(tmp_path) -> Server:
    return Server(tmp_path, throttle=LoginThrottle(per_name_at_address=(3, 2.0, 16.0), per_address=(6, 2.0, 16.0),
                                                   clock=Clock()))


async def sign_in(client: httpx.AsyncClient, name: str, password: str, target: str = "/page", **headers) -> httpx.Response:
    return await client.post("/login", data={"name": name, "password": password, "next": target}, headers=headers)


def cookie(value: str) -> dict[str, str]:
    """The session cookie as a browser sends it."""
    return {"cookie": f"{COOKIE}={value}"}


async def whoami(client: httpx.AsyncClient, **kw) -> httpx.Response:
    return await client.get("/api/whoami", **kw)


# -- without signing in --------------------------------------------------------------------------------


async def test_without_signing_in_the_api_answers_401_and_a_page_sends_you_to_the_form(server):
    async with server.client() as client:
        api = await whoami(client)
        assert api.status_code == 401 and api.headers["www-authenticate"] == "Bearer"
        assert api.json() == {"detail": "sign in first, or send 'Authorization: Bearer <API token>'"}
        assert (await client.post("/api/echo", json={})).status_code == 401
        page = await client.get("/page?a=1")
        assert page.status_code == 303 and page.headers["location"] == f"/login?next={quote('/page?a=1', safe='')}"
        assert (await client.post("/page")).status_code == 401
        assert (await client.get("/_nicegui/script.js")).text == "// public"
        form = await client.get("/login?next=/page")
        assert form.status_code == 200 and form.headers["cache-control"] == "no-store"
        for part in ('<form method="post" action="/login">', 'name="name"', 'type="password"',
                     'name="next" value="/page"'):
            assert part in form.text


# -- signing in -----------------------------------------------------------------------------------------


async def test_signing_in_sets_a_signed_httponly_strict_cookie(server):
    async with server.client() as client:
        response = await sign_in(client, "alice", "alice-pass")
        assert response.status_code == 303 and response.headers["location"] == "/page"
        cookie = response.headers["set-cookie"]
        attributes = [a.strip().lower() for a in cookie.split(";")]
        assert attributes[0].startswith(f"{COOKIE}=")
        assert {"httponly", "samesite=strict", "path=/", f"max-age={SESSION_SECONDS}"} <= set(attributes)
        assert "secure" not in attributes  # plain http on loopback; see the https test
        assert "alice-pass" not in cookie and "alice" not in cookie
        assert (await whoami(client)).json() == {"name": "alice"}
        assert (await client.get("/page")).text == "<p>hello alice</p>"
    async with server.client(base="https://testserver") as client:
        response = await sign_in(client, "bob", "bob-pass-1")
        assert "secure" in [a.strip().lower() for a in response.headers["set-cookie"].split(";")]


async def test_a_failed_sign_in_does_not_say_which_part_was_wrong(server):
    async with server.client() as client:
        wrong_password = await sign_in(client, "alice", "not-her-password")
        unknown_name = await sign_in(client, "zed", "alice-pass")
        empty = await sign_in(client, "", "")
    assert wrong_password.status_code == unknown_name.status_code == empty.status_code == 401
    echoed = lambda r, name: r.text.replace(f'value="{name}"', 'value=""')  # noqa: E731 (the name typed is kept)
    assert echoed(wrong_password, "alice") == echoed(unknown_name, "zed") == empty.text
    assert "Wrong name or password." in wrong_password.text and "set-cookie" not in wrong_password.headers
    assert server.sessions() == 0


async def test_an_unknown_name_takes_as_long_as_a_wrong_password(tmp_path):
    """With a hash cost that dominates a request (as Argon2's does), the two cannot be told apart.
    Without the decoy hash an unknown name would answer in a fraction of the time."""
    server = Server(tmp_path, hasher=PasswordHasher(time_cost=2, memory_cost=16 * 1024, parallelism=1),
                    throttle=LoginThrottle(per_name_at_address=(1000, 1, 600), per_address=(1000, 1, 600)))
    times = {"alice": [], "nobody-at-all": []}
    async with server.client() as client:
        await sign_in(client, "alice", "warm-up")
        for _ in range(7):
            for name in times:
                start = time.perf_counter()
                assert (await sign_in(client, name, "wrong-password")).status_code == 401
                times[name].append(time.perf_counter() - start)
    ratio = statistics.median(times["nobody-at-all"]) / statistics.median(times["alice"])
    assert 0.5 < ratio < 2.0, times


async def test_failed_sign_ins_from_one_address_never_keep_the_owner_out_at_another(tmp_path):
    """With the server's own limits: a dozen wrong passwords for alice, from one address, slow
    that address down; alice at her own address signs in as usual."""
    clock = Clock()
    server = Server(tmp_path, throttle=LoginThrottle(clock=clock))
    async with server.client("10.66.0.1") as attacker:
        answers = [(await sign_in(attacker, "alice", f"guess-{i}")).status_code for i in range(12)]
        assert 401 in answers and answers[-1] == 429
    async with server.client("10.0.2.1") as owner:
        assert (await sign_in(owner, "alice", "alice-pass")).status_code == 303
        assert (await sign_in(owner, "alice", "alice-pass")).status_code == 303


async def test_each_failure_past_the_free_ones_doubles_the_wait_up_to_the_cap(server):
    """3 free failures of alice at one address; then 2, 4, 8, 16, 16 seconds after each failure
    (the fixture's limits). A refused attempt adds nothing, the right password ends it."""
    clock = server.login.throttle.pairs.clock
    async with server.client("10.0.1.1") as client:
        for i in range(3):
            assert (await sign_in(client, "alice", f"guess-{i}")).status_code == 401
        for wait in (2, 4, 8, 16, 16):
            refused = await sign_in(client, "alice", "alice-pass")  # the right one, but it is not even checked
            assert refused.status_code == 429 and "set-cookie" not in refused.headers
            assert int(refused.headers["retry-after"]) == wait
            assert f"Too many failed sign-ins. Try again in {wait} seconds." in refused.text
            clock.now += wait - 0.5
            assert int((await sign_in(client, "alice", "alice-pass")).headers["retry-after"]) == 1
            clock.now += 0.5
            assert (await sign_in(client, "alice", "still-a-guess")).status_code == 401
        clock.now += 16
        assert len(server.login.throttle.pairs) == 1
        assert (await sign_in(client, "alice", "alice-pass")).status_code == 303
        assert len(server.login.throttle.pairs) == 0  # the slate is clean again
        assert (await sign_in(client, "bob", "bob-pass-1")).status_code == 303
    # an unknown name is slowed down alike, so the limit does not tell which names exist
    async with server.client("10.0.3.1") as client:
        for i in range(3):
            assert (await sign_in(client, "nobody", f"guess-{i}")).status_code == 401
        assert (await sign_in(client, "nobody", "guess")).status_code == 429


def test_a_key_quiet_for_long_enough_starts_over_and_minutes_are_said_as_minutes():
    clock = Clock()
    backoff = Backoff(free=1, first=60, cap=600, forget=3600, clock=clock)
    for _ in range(5):
        backoff.failed("k")
    assert backoff.wait("k") == 600
    clock.now += 3599
    assert backoff.wait("k") == 0  # the cap has passed long since, but the failures still count
    backoff.failed("k")
    assert backoff.wait("k") == 600
    clock.now += 3600
    assert backoff.wait("k") == 0 and len(backoff) == 0
    backoff.failed("k")
    assert backoff.wait("k") == 60  # counted from one again
    assert [wait_words(s) for s in (0.2, 1, 59.5, 89, 90, 150, 600)] == [
        "1 second", "1 second", "60 seconds", "89 seconds", "2 minutes", "2 minutes", "10 minutes"]


async def test_failed_sign_ins_are_limited_per_address_whatever_the_name(server):
    async with server.client("10.9.9.9") as client:
        for i in range(6):
            assert (await sign_in(client, f"name{i}", "guess")).status_code == 401
        assert (await sign_in(client, "alice", "alice-pass")).status_code == 429
        server.login.throttle.addresses.clock.now += 2
        # once the wait is over, the class behind the address signs in one after another, without
        # each sign-in restarting the wait for the next
        assert (await sign_in(client, "alice", "alice-pass")).status_code == 303
        assert (await sign_in(client, "bob", "bob-pass-1")).status_code == 303
        assert (await sign_in(client, "name7", "guess")).status_code == 401
        assert int((await sign_in(client, "alice", "alice-pass")).headers["retry-after"]) == 4
    async with server.client("10.9.9.10") as client:
        assert (await sign_in(client, "alice", "alice-pass")).status_code == 303


async def test_a_burst_of_guesses_sent_at_once_is_limited_too(server):
    """The attempts are counted before their passwords are checked, not after."""
    async with server.client("10.7.7.7") as client:
        answers = await asyncio.gather(*(sign_in(client, "alice", f"guess-{i}") for i in range(12)))
    assert sorted(r.status_code for r in answers) == [401] * 3 + [429] * 9


async def test_signing_in_at_one_address_does_not_use_up_its_allowance(server):
    """A class behind one address signs in all day; only failures count."""
    async with server.client("10.8.8.8") as client:
        for _ in range(20):
            assert (await sign_in(client, "bob", "bob-pass-1")).status_code == 303
        for i in range(5):
            assert (await sign_in(client, f"typo{i}", "guess")).status_code == 401
        assert (await sign_in(client, "alice", "alice-pass")).status_code == 303


async def test_signing_in_clears_the_accounts_failures(server):
    async with server.client() as client:
        for _ in range(2):
            await sign_in(client, "alice", "guess")
        assert (await sign_in(client, "alice", "alice-pass")).status_code == 303
        for _ in range(2):
            await sign_in(client, "alice", "guess")
        assert (await sign_in(client, "alice", "alice-pass")).status_code == 303


def test_the_backoff_holds_bounded_memory():
    clock = Clock()
    backoff = Backoff(free=1, first=60, cap=600, max_keys=50, clock=clock)
    for i in range(1000):
        backoff.failed(("name", f"10.0.{i // 256}.{i % 256}"))
        backoff.failed(("name", f"10.0.{i // 256}.{i % 256}"))
    assert len(backoff) == 50
    assert backoff.wait(("name", "10.0.3.231")) == 120  # the newest are kept
    assert backoff.wait(("name", "10.0.0.0")) == 0  # the oldest were forgotten
    for _ in range(10_000):  # a count past any float's exponent still gives the cap
        backoff.failed("many")
    assert backoff.wait("many") == 600


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from(["fail", "forgive", "clear"]), st.integers(0, 5),
                                st.floats(0, 100, allow_nan=False)), max_size=80))
def test_any_run_of_attempts_waits_as_its_failures_say(steps):
    """Against a plain count of failures per key: right after a failure the wait is the delay for
    that count (none for the free ones, then doubling to the cap), later never more, never below 0."""
    clock = Clock()
    backoff = Backoff(free=2, first=1.0, cap=60.0, forget=10**9, clock=clock)
    counts: dict[int, int] = {}
    tickets: dict[int, list] = {}

    def delay(failures: int) -> float:
        return 0.0 if failures < 2 else min(60.0, 2.0 ** (failures - 2))

    for action, key, later in steps:
        clock.now += later
        if action == "fail":
            tickets.setdefault(key, []).append(backoff.failed(key))
            counts[key] = counts.get(key, 0) + 1
            assert backoff.wait(key) == delay(counts[key])
        elif action == "forgive" and tickets.get(key):
            backoff.forgive(key, tickets[key].pop())
            counts[key] -= 1
        elif action == "clear":
            backoff.clear(key)
            counts.pop(key, None)
            tickets.pop(key, None)
        for other in range(6):
            assert 0.0 <= backoff.wait(other) <= delay(counts.get(other, 0))
    assert len(backoff) == sum(1 for n in counts.values() if n > 0)


# -- the cookie, attacked ---------------------------------------------------------------------------------


async def signed_in(server: Server, name: str = "alice", password: str = "alice-pass") -> str:
    async with server.client() as client:
        response = await sign_in(client, name, password)
        assert response.status_code == 303
        return response.cookies[COOKIE]


async def test_forged_and_tampered_cookies_open_nothing(server):
    good = await signed_in(server)
    secret = server.login.session_secret(good)
    payload, stamp, signature = good.split(".")
    flipped = payload[:-1] + ("A" if payload[-1] != "A" else "B")
    forged = [
        URLSafeTimedSerializer(b"k" * 32, salt="nodeflow.session").dumps(secret),  # another key
        URLSafeTimedSerializer(server.login.signer.secret_keys[-1], salt="other").dumps(secret),  # another salt
        f"{flipped}.{stamp}.{signature}", f"{payload}.{stamp}.{signature[:-2]}", f"{payload}.{stamp}.",
        server.login.signer.dumps("a-session-that-never-was"),  # signed right, but no such session
        server.login.signer.dumps({"user": "alice"}), secret, "", "..", "a" * 5000,
    ]
    async with server.client() as client:
        assert (await whoami(client, headers=cookie(good))).json() == {"name": "alice"}
        for value in forged:
            assert (await whoami(client, headers=cookie(value))).status_code == 401, value
            assert (await client.get("/page", headers=cookie(value))).status_code == 303


async def test_a_cookie_ends_with_logout_a_new_password_removal_or_age(server):
    async with server.client() as client:
        saved = await signed_in(server)
        response = await client.post("/logout", headers=cookie(saved))
        assert response.status_code == 303 and response.headers["location"] == "/login"
        assert f'{COOKIE}=""' in response.headers["set-cookie"] and "max-age=0" in response.headers["set-cookie"].lower()
        assert (await whoami(client, headers=cookie(saved))).status_code == 401  # replaying it does not work

        saved = await signed_in(server)
        server.accounts.set_password("alice", "a-new-password")
        assert (await whoami(client, headers=cookie(saved))).status_code == 401

        saved = await signed_in(server, "bob", "bob-pass-1")
        server.clock.now += SESSION_SECONDS + 1
        assert (await whoami(client, headers=cookie(saved))).status_code == 401
        server.clock.now -= SESSION_SECONDS + 1

        saved = await signed_in(server, "bob", "bob-pass-1")
        server.accounts.remove("bob")
        assert (await whoami(client, headers=cookie(saved))).status_code == 401


async def test_signing_in_again_ends_the_session_the_browser_had(server):
    old = await signed_in(server)
    async with server.client() as client:
        response = await client.post("/login", data={"name": "bob", "password": "bob-pass-1"}, headers=cookie(old))
        assert response.status_code == 303
        assert (await whoami(client, headers=cookie(old))).status_code == 401
    assert server.sessions() == 1


# -- API tokens -------------------------------------------------------------------------------------------


async def test_a_token_acts_as_its_owner_and_a_bad_one_is_not_rescued_by_a_cookie(server):
    a_info, a_token = server.accounts.create_token("alice", "script")
    _, b_token = server.accounts.create_token("bob", "script")
    alices_cookie = await signed_in(server)
    bearer = lambda token: {"Authorization": f"Bearer {token}"}  # noqa: E731
    async with server.client() as client:
        assert (await whoami(client, headers=bearer(a_token))).json() == {"name": "alice"}
        assert (await whoami(client, headers=bearer(b_token))).json() == {"name": "bob"}
        # bob's token wins over alice's cookie: the request is bob's, never alice's
        assert (await whoami(client, headers={**bearer(b_token), **cookie(alices_cookie)})).json() == {"name": "bob"}
        b_secret = b_token.split("_", 2)[2]
        for bad in (f"nf_{a_info.id}_{b_secret}", a_token[:-1] + ("x" if a_token[-1] != "x" else "y"), "", "nf_",
                    alices_cookie):
            response = await whoami(client, headers={**bearer(bad), **cookie(alices_cookie)})
            assert response.status_code == 401, bad
        assert (await whoami(client, headers={"Authorization": f"Basic {a_token}"})).status_code == 401
        assert (await client.post("/api/echo", headers=bearer(a_token))).json() == {"name": "alice"}
        server.accounts.revoke_token("alice", a_info.id)
        assert (await whoami(client, headers=bearer(a_token))).status_code == 401


# -- where a sign-in may come from and lead to ------------------------------------------------------------


@pytest.mark.parametrize("target, lands", [
    ("/page?x=1", "/page?x=1"), ("//evil.example/x", "/"), ("https://evil.example", "/"), ("/\\evil.example", "/"),
    ("javascript:alert(1)", "/"), ("/ok\nSet-Cookie: x=1", "/"), ("", "/"),
])
async def test_after_signing_in_you_land_on_this_server_only(server, target, lands):
    async with server.client() as client:
        response = await sign_in(client, "alice", "alice-pass", target)
        assert response.status_code == 303 and response.headers["location"] == lands


async def test_what_the_form_echoes_is_escaped(server):
    attack = '/"><script>alert(1)</script>'
    async with server.client() as client:
        page = await client.get("/login", params={"next": attack})
        refused = await sign_in(client, attack, "password", target=attack)
    for response in (page, refused):
        assert "<script>" not in response.text and "&quot;&gt;&lt;script&gt;" in response.text


async def test_a_form_sent_from_another_site_is_refused(server):
    saved = await signed_in(server)
    async with server.client() as client:
        response = await sign_in(client, "alice", "alice-pass", origin="http://evil.example")
        assert response.status_code == 403 and "set-cookie" not in response.headers
        assert (await sign_in(client, "alice", "alice-pass", origin="http://testserver:8080")).status_code == 403
        assert (await client.post("/logout", headers={**cookie(saved), "origin": "http://evil.example"})
                ).status_code == 403
        assert (await whoami(client, headers=cookie(saved))).json() == {"name": "alice"}
        assert (await sign_in(client, "alice", "alice-pass", origin="http://testserver")).status_code == 303


async def test_a_form_that_is_too_large_or_not_a_form_is_refused(server):
    async with server.client() as client:
        big = await client.post("/login", data={"name": "alice", "password": "x" * 9000})
        assert big.status_code == 413
        as_json = await client.post("/login", json={"name": "alice", "password": "alice-pass"})
        assert as_json.status_code == 415
    assert server.sessions() == 0


# -- the websocket ------------------------------------------------------------------------------------------


async def open_socket(server: Server, cookie: str | None) -> list[dict]:
    """Drive the app's websocket route as a server would; returns what the app sent."""
    headers = [(b"host", b"testserver")] + ([(b"cookie", f"{COOKIE}={cookie}".encode())] if cookie else [])
    scope = {"type": "websocket", "path": "/ws", "raw_path": b"/ws", "query_string": b"", "headers": headers,
             "scheme": "ws", "server": ("testserver", 80), "client": ("10.0.0.1", 4000), "subprotocols": [],
             "root_path": "", "asgi": {"version": "3.0"}}
    incoming = [{"type": "websocket.connect"}]
    sent: list[dict] = []

    async def receive():
        if incoming:
            return incoming.pop(0)
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    await asyncio.wait_for(server.app(scope, receive, send), timeout=10)
    return sent


async def test_a_websocket_needs_a_signed_in_cookie(server):
    assert [m["type"] for m in await open_socket(server, None)] == ["websocket.close"]
    assert (await open_socket(server, "forged"))[0] == {"type": "websocket.close", "code": 1008}
    sent = await open_socket(server, await signed_in(server))
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[1]["text"] == "alice"


# -- any input ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory) -> Server:
    return Server(tmp_path_factory.mktemp("fuzz"), throttle=LoginThrottle(per_name_at_address=(10**6, 1, 1),
                                                                         per_address=(10**6, 1, 1)))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(fields=st.dictionaries(st.sampled_from(["name", "password", "next", "other"]), st.text(max_size=60)),
       raw=st.binary(max_size=200), content_type=st.sampled_from(["application/x-www-form-urlencoded",
                                                                  "multipart/form-data", "text/plain", ""]),
       origin=st.one_of(st.none(), st.text(max_size=40)))
def test_any_sign_in_request_is_answered_without_a_5xx_and_changes_nothing(fuzz_server, fields, raw, content_type,
                                                                           origin):
    users_before = fuzz_server.accounts.db.query("SELECT * FROM users ORDER BY name")

    async def attempt():
        headers = {"content-type": content_type} if content_type else {}
        if origin is not None and origin.isascii() and origin.isprintable():
            headers["origin"] = origin
        async with fuzz_server.client() as client:
            by_form = await client.post("/login", data=fields, headers={k: v for k, v in headers.items()
                                                                       if k != "content-type"})
            by_bytes = await client.post("/login", content=raw, headers=headers)
            return by_form, by_bytes

    sessions = fuzz_server.sessions()
    for response in asyncio.run(attempt()):
        assert response.status_code in (401, 403, 413, 415, 429), response.text
    assert fuzz_server.sessions() == sessions
    assert fuzz_server.accounts.db.query("SELECT * FROM users ORDER BY name") == users_before


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(authorization=st.one_of(st.none(), st.text(max_size=80)), cookie=st.one_of(st.none(), st.text(max_size=200)))
def test_any_credential_that_is_not_one_gets_401(fuzz_server, authorization, cookie):
    headers = {}
    if authorization is not None and authorization.isascii() and authorization.isprintable():
        headers["authorization"] = authorization
    if cookie is not None and cookie.isascii() and cookie.isprintable() and ";" not in cookie:
        headers["cookie"] = f"{COOKIE}={cookie}"

    async def attempt():
        async with fuzz_server.client() as client:
            return await client.get("/api/whoami", headers=headers)

    assert asyncio.run(attempt()).status_code == 401
