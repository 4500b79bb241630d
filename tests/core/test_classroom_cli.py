"""``nodeflow serve --users`` from the command line: what it refuses in one line before anything
starts (its limits' flags among it), that it really serves the sign-in form, and the class
benchmark's smoke run."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

import argparse

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodeflow.cli import build_parser, byte_size, class_limits_for, host_list, job_memory, main, whole_number
from nodeflow.limits import CLASS_BATCH, CLASS_IMAGE_SIDE, CLASS_OPEN_PROJECTS, MIN_JOB_MEMORY, machine_devices
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
    (["--max-devices", "64"], f"error: --max-devices 64: this machine has {machine_devices('auto')} device(s)"),
    (["--device", "cpu", "--max-devices", "2"], "error: --max-devices 2: this machine has 1 device(s) for --device cpu"),
    (["--job-memory", "8G", "--in-process"], "error: --job-memory holds the worker process of each job, and "
                                             "--in-process runs them in the server process"),
])
def test_what_serve_users_refuses_is_one_line(tmp_path, extra, says):
    code, err = one_line("serve", "--users", "--workspace", str(tmp_path), *extra)
    assert code == 1 and err.startswith(says) and len(err.strip().splitlines()) == 1, err


def test_a_quota_is_a_size():
    assert byte_size("5G") == 5 * 2**30 and byte_size("500M") == 500 * 2**20 and byte_size("1.5GiB") == 1.5 * 2**30
    assert byte_size("123") == 123 and byte_size("64 kb") == 64 * 1024
    code, err = one_line("serve", "--users", "--quota", "lots")
    assert code == 2 and "argument --quota: 'lots' is not a size" in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("flag,value,says", [
    ("--job-memory", "lots", "'lots' is not a size"),
    ("--job-memory", "512M", "'512M' is too little: a job's worker needs about 1 GiB to start"),
    ("--job-memory", "9" * 30, "is not a size"),
    ("--max-image-side", "4", "'4' is not a whole number from 8 to 4096"),
    ("--max-batch", "0", "'0' is not a whole number from 1 to 4096"),
    ("--max-batch", "-5", "'-5' is not a whole number from 1 to 4096"),
    ("--max-devices", "two", "'two' is not a whole number from 1 to 64"),
    ("--max-open-projects", "0", "'0' is not a whole number from 1 to 1000"),
    ("--rendezvous-hosts", "gpu1,,gpu2", "'' is not a host name or address"),
    ("--rendezvous-hosts", "gpu1;rm -rf", "'gpu1;rm -rf' is not a host name or address"),
])
def test_a_bad_limit_is_refused_in_one_line_naming_the_flag(flag, value, says):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["serve", "--users", flag, value])  # main answers the exit code, never SystemExit
    errors = [line for line in err.getvalue().splitlines() if "error:" in line]
    assert code == 2 and len(err.getvalue().splitlines()) == 1 and len(errors) == 1 and f"argument {flag}: " in errors[0] and says in errors[0], \
        err.getvalue()
    assert "Traceback" not in err.getvalue()


def test_the_limits_flags_reach_the_job_limits_and_the_rest_are_class_defaults():
    given = build_parser().parse_args(["serve", "--users", "--job-memory", "1.5G", "--max-image-side", "384",
                                       "--max-batch", "32", "--rendezvous-hosts", "gpu1.lab, 10.0.0.7,gpu1.lab",
                                       "--max-open-projects", "3"])
    limits = class_limits_for(given)
    assert (limits.memory_bytes, limits.max_image_side, limits.max_batch) == (1.5 * 2**30, 384, 32)
    assert limits.rendezvous_hosts == ("gpu1.lab", "10.0.0.7") and given.max_open_projects == 3
    assert limits.max_devices == machine_devices("auto")
    default = class_limits_for(build_parser().parse_args(["serve", "--users", "--device", "cpu"]))
    assert (default.max_image_side, default.max_batch, default.max_devices) == (CLASS_IMAGE_SIDE, CLASS_BATCH, 1)
    assert default.rendezvous_hosts == () and default.memory_bytes >= MIN_JOB_MEMORY  # no other machine by default
    assert build_parser().parse_args(["serve", "--users"]).max_open_projects == CLASS_OPEN_PROJECTS
    in_process = class_limits_for(build_parser().parse_args(["serve", "--users", "--in-process"]))
    assert in_process.memory_bytes is None and in_process.max_batch == CLASS_BATCH  # no worker to hold


UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


@given(st.integers(min_value=1, max_value=2**20), st.sampled_from(sorted(UNITS)), st.sampled_from(["", "B", "iB"]),
       st.booleans())
def test_a_size_is_its_number_times_its_unit(number, unit, suffix, lower):
    text = f"{number}{unit}{suffix if unit else ''}"
    text = text.lower() if lower else text
    expected = number * UNITS[unit]
    assert byte_size(text) == expected
    if expected >= MIN_JOB_MEMORY:
        assert job_memory(text) == expected
    else:
        with pytest.raises(argparse.ArgumentTypeError, match="is too little"):
            job_memory(text)


@given(st.text(max_size=40))
def test_any_text_is_a_size_or_refused_naming_it(text):
    for parse in (byte_size, job_memory):
        try:
            count = parse(text)
        except argparse.ArgumentTypeError as exc:
            assert f"'{text}'" in str(exc)
        else:
            assert 0 < count <= 2**60


@given(st.text(max_size=20))
def test_any_text_is_a_whole_number_in_range_or_refused(text):
    try:
        count = whole_number(1, 4096)(text)
    except argparse.ArgumentTypeError as exc:
        assert "is not a whole number from 1 to 4096" in str(exc)
    else:
        assert 1 <= count <= 4096 and count == int(text)


@given(st.lists(st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,20}[a-z0-9])?", fullmatch=True), min_size=1, max_size=4))
def test_host_lists_keep_each_host_once_in_order(hosts):
    assert host_list(",".join(hosts)) == tuple(dict.fromkeys(hosts))


@given(st.text(max_size=30))
def test_any_text_is_a_host_list_or_refused_naming_the_bad_host(text):
    try:
        hosts = host_list(text)
    except argparse.ArgumentTypeError as exc:
        assert "is not a host name or address" in str(exc)
    else:
        assert hosts and all(h and "," not in h and " " not in h for h in hosts)


def test_serve_users_signs_people_in_before_anything(tmp_path):
    server = Server(tmp_path / "root", "--users", "--job-memory", "2G", "--max-batch", "64", "--max-open-projects", "3",
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
