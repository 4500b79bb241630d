"""Whose address the sign-in limits count, on the real server (``serve --users`` on loopback, as
``tests.ui.classroom_server`` starts it): the connection's peer, unless the admin names the proxy in
front (``--trusted-proxy``); a client that is no such proxy cannot pose as a new address with each
guess by sending ``X-Forwarded-For``."""

from __future__ import annotations

import sys

import httpx
import pytest

from nodeflow.users import Accounts
from tests.ui.classroom_server import CHEAP

from .conftest import Server


def start(tmp_path, *extra: str) -> Server:
    accounts = Accounts(tmp_path / "root", hasher=CHEAP)
    accounts.add("alice", "alice-password")
    accounts.close()
    return Server(tmp_path / "root", "--in-process", *extra,
                  command=(sys.executable, "-m", "tests.ui.classroom_server"))


def attempt(client: httpx.Client, name: str, password: str, forwarded_for: str | None = None) -> int:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return client.post("/login", data={"name": name, "password": password}, headers=headers).status_code


@pytest.fixture
def server(tmp_path):
    server = start(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def proxied(tmp_path):
    server = start(tmp_path, "--trusted-proxy", "127.0.0.1")
    yield server
    server.stop()


def test_a_rotating_x_forwarded_for_from_a_client_that_is_no_trusted_proxy_still_meets_the_limit(server):
    """A new name and a new claimed address with each guess: all of them count against the peer
    (the server's own limit for an address: 30 failures, then a growing wait)."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        answers = [attempt(client, f"name{i}", "guess", forwarded_for=f"198.51.100.{i}") for i in range(40)]
        assert answers[:30] == [401] * 30 and 429 in answers[30:], answers
        assert attempt(client, "alice", "alice-password", forwarded_for="203.0.113.9") == 429  # not a new address


def test_the_named_proxys_x_forwarded_for_names_the_client(proxied):
    with httpx.Client(base_url=proxied.url, timeout=30) as client:
        answers = [attempt(client, "alice", f"guess-{i}", forwarded_for="198.51.100.7") for i in range(12)]
        assert answers[:5] == [401] * 5 and 429 in answers[5:], answers  # that client is slowed down...
        assert attempt(client, "alice", "alice-password", forwarded_for="198.51.100.8") == 303  # ...not another
        assert attempt(client, "alice", "alice-password") == 303  # nor the proxy itself
