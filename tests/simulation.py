"""NiceGUI's user simulation (``nicegui.testing``) with the heap frozen around it.

The simulation runs a full garbage collection on entry and on exit, and with torch and the app imported
that walks millions of long-lived objects (~0.5 s each, most of what an in-process app fixture cost).
Freezing what exists now keeps those collections to the objects the test makes; unfreezing afterwards
hands the rest back to the collector, so nothing is kept for good."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any


@contextmanager
def heap_frozen() -> Iterator[None]:
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@asynccontextmanager
async def app_simulation() -> AsyncIterator[Any]:
    """``user_simulation()`` on a frozen heap: yields the simulated user."""
    from nicegui.testing.user_simulation import user_simulation

    with heap_frozen():
        async with user_simulation() as user:
            yield user
