"""NiceGUI's user simulation (``nicegui.testing``) with the heap frozen around it, and nodeflow's modules
kept.

The simulation runs a full garbage collection on entry and on exit, and with torch and the app imported
that walks millions of long-lived objects (~0.5 s each, most of what an in-process app fixture cost).
Freezing what exists now keeps those collections to the objects the test makes; unfreezing afterwards
hands the rest back to the collector, so nothing is kept for good.

On exit the simulation also drops from ``sys.modules`` every module that registered a page, and its
parents (``nodeflow``, ``nodeflow.ui``...), so that a module declaring ``@ui.page`` at import registers
it again. nodeflow registers its pages when an app is made, not at import; dropping them only made a
later ``import nodeflow.ui.app`` bind a second ``nodeflow`` without its ``ui`` attribute. They are put
back."""

from __future__ import annotations

import gc
import sys
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

    ours = {name: module for name, module in sys.modules.items() if name.split(".")[0] in ("nodeflow", "nodes")}
    try:
        with heap_frozen():
            async with user_simulation() as user:
                yield user
    finally:
        for name, module in ours.items():
            sys.modules.setdefault(name, module)
