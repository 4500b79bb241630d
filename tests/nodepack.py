"""A tiny pure-Python node pack that drives the executor, CLI and editor tests in milliseconds."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from nodeflow.node import Node, NodeParams, ParamProblem, Port, PortType
from nodeflow.paths import FolderPath, path_field


class JsonCodec:
    def save(self, value, folder: Path) -> None:
        (folder / "value.json").write_text(json.dumps(value))

    def load(self, folder: Path):
        return json.loads((folder / "value.json").read_text())


NUMBER = PortType("Number", color="#42a5f5", codec=JsonCodec())
INTEGER = PortType("Integer", color="#1e88e5", parents=(NUMBER,), codec=JsonCodec())
TEXT = PortType("Text", color="#66bb6a", codec=JsonCodec())
LIST = PortType("List", color="#ab47bc", codec=JsonCodec())
OPAQUE = PortType("Opaque", color="#8d6e63")  # no codec: only kept in memory


def record_run(node_id: str) -> None:
    """Append to $NODEPACK_RUN_LOG so tests can count executions across processes."""
    log = os.environ.get("NODEPACK_RUN_LOG")
    if log:
        with open(log, "a") as handle:
            handle.write(node_id + "\n")


class Constant(Node):
    type = "test.constant"
    title = "Constant"
    category = "Test"
    outputs = (Port("value", NUMBER),)

    class Params(NodeParams):
        value: float = Field(1.0, ge=-1e6, le=1e6, description="The number to output")

    def run(self, ctx, params):
        record_run(ctx.node_id)
        return {"value": params.value}

    @classmethod
    def infer(cls, params, inputs, node_id=None):
        return {"value": {"value": params.value}}


class Count(Node):
    type = "test.count"
    title = "Count"
    category = "Test"
    outputs = (Port("value", INTEGER),)

    class Params(NodeParams):
        n: int = Field(3, ge=0, le=1000)

    def run(self, ctx, params):
        record_run(ctx.node_id)
        return {"value": params.n}


class Add(Node):
    type = "test.add"
    title = "Add"
    category = "Test"
    inputs = (Port("a", NUMBER), Port("b", NUMBER, optional=True))
    outputs = (Port("value", NUMBER),)

    class Params(NodeParams):
        offset: float = 0.0

    def run(self, ctx, params, a, b=0.0):
        record_run(ctx.node_id)
        ctx.log_metric("sum", a + b + params.offset)
        return {"value": a + b + params.offset}


class Divide(Node):
    """Refuses, before anything runs, to divide by a constant zero."""

    type = "test.divide"
    title = "Divide"
    category = "Test"
    inputs = (Port("a", NUMBER), Port("b", NUMBER))
    outputs = (Port("value", NUMBER),)

    @classmethod
    def infer(cls, params, inputs, node_id=None):
        if inputs.get("b", {}).get("value") == 0:
            raise ParamProblem("the divisor is the constant 0", port="b")
        return {}

    def run(self, ctx, params, a, b):
        record_run(ctx.node_id)
        return {"value": a / b}


class Describe(Node):
    type = "test.describe"
    title = "Describe"
    category = "Test"
    inputs = (Port("value", NUMBER),)
    outputs = (Port("text", TEXT),)

    class Params(NodeParams):
        style: Literal["plain", "fancy"] = "plain"

    def run(self, ctx, params, value):
        record_run(ctx.node_id)
        return {"text": f"*{value}*" if params.style == "fancy" else str(value)}


class TextLength(Node):
    type = "test.length"
    title = "Text length"
    category = "Test"
    inputs = (Port("text", TEXT),)
    outputs = (Port("value", INTEGER),)

    def run(self, ctx, params, text):
        record_run(ctx.node_id)
        return {"value": len(text)}


class MakeList(Node):
    type = "test.list"
    title = "List"
    category = "Test"
    inputs = (Port("value", NUMBER),)
    outputs = (Port("items", LIST),)

    def run(self, ctx, params, value):
        record_run(ctx.node_id)
        return {"items": [value]}


class AppendCopy(Node):
    """Appends to a copy of its input, as every node must: cached outputs are never mutated."""

    type = "test.append"
    title = "Append"
    category = "Test"
    inputs = (Port("items", LIST),)
    outputs = (Port("items", LIST),)

    class Params(NodeParams):
        item: float = 0.0

    def run(self, ctx, params, items):
        record_run(ctx.node_id)
        return {"items": [*items, params.item]}


class Fail(Node):
    type = "test.fail"
    title = "Fail"
    category = "Test"
    inputs = (Port("value", NUMBER, optional=True),)
    outputs = (Port("value", NUMBER),)

    class Params(NodeParams):
        message: str = "boom"

    def run(self, ctx, params, value=None):
        record_run(ctx.node_id)
        raise ParamProblem(params.message, param="message")


class Slow(Node):
    """Takes ``steps`` steps of ``delay`` seconds, reporting progress; stops when interrupted."""

    type = "test.slow"
    title = "Slow"
    category = "Test"
    inputs = (Port("value", NUMBER, optional=True),)
    outputs = (Port("value", NUMBER),)

    class Params(NodeParams):
        steps: int = Field(10, ge=1, le=100_000)
        delay: float = Field(0.01, ge=0, le=10)

    def run(self, ctx, params, value=0.0):
        record_run(ctx.node_id)
        for step in range(params.steps):
            time.sleep(params.delay)
            ctx.log_metric("step_loss", 1.0 / (step + 1), step=step)
            ctx.progress(step + 1, params.steps)
        return {"value": (value or 0.0) + params.steps}


class Timed(Slow):
    """Slow, with a cost preview: ``steps`` × ``delay`` seconds (its "epochs" are its steps)."""

    type = "test.timed"
    title = "Timed"

    def estimate(self, ctx, params, value=0.0):
        return {"seconds": params.steps * params.delay, "epochs": params.steps, "epoch_seconds": params.delay,
                "device": "cpu"}


class Epochs(Node):
    """Trains for ``epochs`` epochs of ``delay`` seconds as a trainer does: it says which epoch it is in,
    logs a loss per epoch, writes a checkpoint after each, and a next run resumes from it, telling the
    earlier epochs again first. Has a cost preview, like a trainer."""

    type = "test.epochs"
    title = "Epochs"
    category = "Test"
    inputs = (Port("value", NUMBER, optional=True),)
    outputs = (Port("value", NUMBER),)

    class Params(NodeParams):
        epochs: int = Field(10, ge=1, le=10_000)
        delay: float = Field(0.05, ge=0, le=10)

    def run(self, ctx, params, value=0.0):
        record_run(ctx.node_id)
        checkpoint = ctx.checkpoints / "last.json"
        history = json.loads(checkpoint.read_text()) if checkpoint.is_file() else []
        if history:
            ctx.log(f"resuming after epoch {len(history)} from an interrupted attempt")
        for epoch, loss in enumerate(history, start=1):
            ctx.log_metric("loss", loss, step=epoch)
        for epoch in range(len(history) + 1, params.epochs + 1):
            ctx.progress(epoch - 1, params.epochs, epoch=epoch - 1, epochs=params.epochs)
            time.sleep(params.delay)
            ctx.check_interrupted()
            history.append(1.0 / epoch)
            ctx.log_metric("loss", history[-1], step=epoch)
            checkpoint.write_text(json.dumps(history))
        ctx.progress(params.epochs, params.epochs, epoch=params.epochs, epochs=params.epochs)
        return {"value": (value or 0.0) + params.epochs}

    def estimate(self, ctx, params, value=0.0):
        return {"seconds": params.epochs * params.delay, "epochs": params.epochs, "epoch_seconds": params.delay,
                "device": "cpu"}


class Handle(Node):
    """Outputs a value that cannot be written to disk, so it is only cached in memory."""

    type = "test.handle"
    title = "Handle"
    category = "Test"
    outputs = (Port("handle", OPAQUE),)

    def run(self, ctx, params):
        record_run(ctx.node_id)
        return {"handle": object()}


class UseHandle(Node):
    type = "test.use_handle"
    title = "Use handle"
    category = "Test"
    inputs = (Port("handle", OPAQUE),)
    outputs = (Port("value", NUMBER),)

    def run(self, ctx, params, handle):
        record_run(ctx.node_id)
        return {"value": 1.0}


class ReadFolder(Node):
    """Lists a folder; its ``root`` is a path param, confined when the editor is served."""

    type = "test.read_folder"
    title = "Read folder"
    category = "Test"
    outputs = (Port("value", INTEGER),)

    class Params(NodeParams):
        root: FolderPath = Field("", description="Folder to count files in")
        weights: Annotated[str, path_field("file", ["none"])] = "none"

    def run(self, ctx, params):
        record_run(ctx.node_id)
        count = len(list(ctx.resolve_path(params.root).iterdir()))
        ctx.log_metric("files", count)
        return {"value": count}


class WriteNote(Node):
    """Writes a file into its scratch folder, as a plot-making node would."""

    type = "test.write_note"
    title = "Write note"
    category = "Test"
    inputs = (Port("value", NUMBER),)
    outputs = (Port("value", NUMBER),)

    def run(self, ctx, params, value):
        record_run(ctx.node_id)
        (ctx.scratch / "note.txt").write_text(f"value={value}")
        return {"value": value}
