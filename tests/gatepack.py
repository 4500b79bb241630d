"""Test nodes for the shared server: one that runs for as long as a test wants (it waits for a file to
appear, or for a stop), one that takes a given amount of memory.
Beside the test pack (``tests/nodepack.py``) for the tests of the shared server's queue."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pydantic import Field

from nodeflow.node import Node, NodeParams, Port
from tests.nodepack import NUMBER, record_run


class Gate(Node):
    """Waits until the file ``until`` exists, then gives ``value``; stops when asked to."""

    type = "test.gate"
    title = "Gate"
    category = "Test"
    outputs = (Port("value", NUMBER),)

    class Params(NodeParams):
        until: str = Field("", description="the file whose appearance ends the wait (empty: no wait)")
        value: float = Field(1.0, description="what it gives")

    def run(self, ctx, params):
        record_run(ctx.node_id)
        while params.until and not Path(params.until).exists():
            ctx.progress(0, 1)  # raises Interrupted when the run is stopped
            time.sleep(0.01)
        return {"value": params.value}


class Allocate(Node):
    """Takes ``bytes`` of memory while it runs, and as much while its cost is estimated, writing
    every page so the process really holds it; the estimate says which process measured it."""

    type = "test.allocate"
    title = "Allocate"
    category = "Test"
    outputs = (Port("value", NUMBER),)

    class Params(NodeParams):
        bytes: int = Field(0, ge=0, description="how much memory to take")

    def run(self, ctx, params):
        record_run(ctx.node_id)
        block = b"\x01" * params.bytes
        return {"value": float(len(block))}

    def estimate(self, ctx, params):
        block = b"\x01" * params.bytes
        return {"seconds": 0.01, "pid": os.getpid(), "bytes": len(block)}
