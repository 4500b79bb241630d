"""Polling for a condition that another process or thread brings about."""

from __future__ import annotations

import time


def wait_for(condition, timeout=60.0):
    """True once ``condition()`` holds, False if it still does not after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False
