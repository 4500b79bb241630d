"""``nodeflow serve --users --trusted-proxy ADDR``: which addresses it takes, what it refuses in one
line, and that the server it starts believes the named proxy's ``X-Forwarded-For`` (no one else's:
tests/ui/test_classroom_client_address.py)."""

from __future__ import annotations

import argparse
import contextlib
import io
import ipaddress
import re
import sys

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodeflow.cli import main, proxy_addresses
from nodeflow.users import Accounts
from tests.ui.classroom_server import CHEAP
from tests.ui.conftest import Server


def test_proxies_are_addresses_or_networks_one_or_many():
    assert proxy_addresses("127.0.0.1") == ["127.0.0.1"]
    assert proxy_addresses(" 10.0.0.5, 10.1.0.0/16 ,::1,") == ["10.0.0.5", "10.1.0.0/16", "::1"]
    for refused, says in (("*", "never '*'"), ("proxy.example", "not an address"), ("10.0.0.0/33", "not an address"),
                          (",", "give the proxy's address"), ("a\nb", "'a\\nb' is not")):
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(says)):
            proxy_addresses(refused)


@given(st.text(max_size=80))
def test_any_proxy_argument_is_taken_as_networks_or_refused_with_a_reason(text):
    try:
        found = proxy_addresses(text)
    except argparse.ArgumentTypeError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert found and all(ipaddress.ip_network(part, strict=False) for part in found)


def test_what_is_refused_is_said_in_one_line(tmp_path):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["serve", "--users", "--workspace", str(tmp_path), "--trusted-proxy", "*"])
    assert code == 2 and "argument --trusted-proxy: '*' is not an address or network" in err.getvalue()
    assert len(err.getvalue().strip().splitlines()) == 1
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["serve", "--workspace", str(tmp_path), "--trusted-proxy", "127.0.0.1"])
    assert code == 1 and err.getvalue().startswith("error: --trusted-proxy is for --users")
    assert len(err.getvalue().strip().splitlines()) == 1


def test_the_served_site_believes_the_named_proxy(tmp_path):
    root = tmp_path / "root"
    accounts = Accounts(root, hasher=CHEAP)  # the hash's own parameters are what the server checks with
    accounts.add("alice", "alice-password")
    accounts.close()
    server = Server(root, "--users", "--trusted-proxy", "10.9.0.0/16,127.0.0.1",
                    command=(sys.executable, "-m", "nodeflow.cli", "--no-plugins", "serve"))
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            def attempt(password: str, forwarded_for: str) -> int:
                return client.post("/login", data={"name": "alice", "password": password},
                                   headers={"X-Forwarded-For": forwarded_for}).status_code

            answers = [attempt(f"guess-{i}", "198.51.100.7") for i in range(12)]
            assert answers[:5] == [401] * 5 and 429 in answers[5:], answers
            assert attempt("alice-password", "198.51.100.8") == 303
    finally:
        server.stop()
