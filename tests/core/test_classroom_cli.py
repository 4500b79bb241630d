"""``nodeflow serve --users`` from the command line: what it refuses in one line before anything
starts, that it really serves the sign-in form, and the class benchmark's smoke run."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

import httpx
import pytest

from nodeflow.cli import byte_size, main
from tests.ui.conftest import Server

from .test_cli import ROOT


def one_line(*args: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(args))
    return code, err.getvalue()


@pytest.mark.parametrize("extra,says", [
    (["--token", "secret"], "error: --token is for one person; with --users everyone signs in"),
    (["--allow-root", "/srv/data"], "error: --allow-root is not available with --users"),
    (["--queue-limit", "0"], "error: --queue-limit 0: give 1 or more"),
])
def test_what_serve_users_refuses_is_one_line(tmp_path, extra, says):
    code, err = one_line("serve", "--users", "--workspace", str(tmp_path), *extra)
    assert code == 1 and err.startswith(says) and len(err.strip().splitlines()) == 1, err


def test_a_quota_is_a_size():
    assert byte_size("5G") == 5 * 2**30 and byte_size("500M") == 500 * 2**20 and byte_size("1.5GiB") == 1.5 * 2**30
    assert byte_size("123") == 123 and byte_size("64 kb") == 64 * 1024
    code, err = one_line("serve", "--users", "--quota", "lots")
    assert code == 2 and "argument --quota: 'lots' is not a size" in err and len(err.splitlines()) == 1, err


def test_serve_users_signs_people_in_before_anything(tmp_path):
    server = Server(tmp_path / "root", "--users",
                    command=(sys.executable, "-m", "nodeflow.cli", "--no-plugins", "serve"))
    try:
        page = httpx.get(server.url + "/", timeout=30)
        assert page.status_code == 303 and page.headers["location"] == "/login?next=%2F"
        assert 'action="/login"' in httpx.get(server.url + "/login", timeout=30).text
        assert httpx.get(server.url + "/api/projects", timeout=30).status_code == 401
        assert httpx.get(server.url + "/api/graph", timeout=30).status_code == 401  # no one-person API either
    finally:
        server.stop()
    assert "nodeflow server for 0 user(s)" in server.log.read_text()
    assert "nodeflow users add NAME --admin" in server.log.read_text()


def test_the_class_benchmark_runs(tmp_path):
    out = tmp_path / "classroom.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "classroom.py"), "--quick", "--json", str(out)],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert figures["unfinished"] == [] and figures["status_latency_while_running"]["n"] > 0
    order = figures["start_order"]
    assert len(order) == 4 + 2 and order[-2:] == ["student00#2", "student00#3"]  # the greedy user's extras last
