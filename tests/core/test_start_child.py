"""Where a user's work runs (nodeflow.worker.start_child): a child of the fork server, not of this process, with
torch already imported there, and yet with this process's environment and folder as they are when it starts,
as a newly started program would have them."""

from __future__ import annotations

import os
import sys

from nodeflow.node import preloaded_modules
from nodeflow.worker import end_child, start_child


def _report(conn, name: str) -> None:
    """Answer what a job would see of its start, then wait to be let go."""
    conn.send({"parent": os.getppid(), "variable": os.environ.get(name), "folder": os.getcwd(),
               "loaded": sorted(m for m in ("torch", "torchvision") if m in sys.modules)})
    conn.recv()


def started(name: str) -> dict:
    process, conn = start_child(_report, "nodeflow-test-child", name)
    try:
        return conn.recv()
    finally:
        end_child(process, conn)


def test_a_child_starts_from_the_fork_server_with_torch_ready():
    assert {"torch", "torchvision"} <= set(preloaded_modules())  # what the built-in catalogue asks for
    seen = started("NODEFLOW_TEST_UNSET")
    assert seen["parent"] != os.getpid()  # forked by the fork server: nothing of this process's state
    assert seen["loaded"] == ["torch", "torchvision"]  # imported before the child's own code ran


def test_a_child_gets_the_environment_and_folder_of_the_moment_it_starts(tmp_path, monkeypatch):
    started("NODEFLOW_TEST_UNSET")  # the fork server is running, with the environment of before
    monkeypatch.setenv("NODEFLOW_TEST_VARIABLE", "set after the fork server started")
    monkeypatch.chdir(tmp_path)
    seen = started("NODEFLOW_TEST_VARIABLE")
    assert seen["variable"] == "set after the fork server started"
    assert seen["folder"] == str(tmp_path)
    monkeypatch.delenv("NODEFLOW_TEST_VARIABLE")
    assert started("NODEFLOW_TEST_VARIABLE")["variable"] is None  # removed variables are gone there too
