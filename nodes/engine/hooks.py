"""How the engine reports and is stopped: plain callables, so it runs under the editor, the CLI,
a torchrun rank or a script alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class Stopped(Exception):
    """The caller asked the engine to stop (``Hooks.should_stop`` turned true)."""


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


@dataclass
class Hooks:
    """What a long engine call reports to, where it keeps files, and how it learns to stop.

    ``workspace`` holds the shared caches (decoded images, frozen-prefix features);
    ``checkpoints`` is the folder of this exact run's epoch checkpoints (None: no checkpoints).
    ``progress(done, total, epoch=None, epochs=None)``: ``done`` of ``total`` steps; a training
    also says how many of its ``epochs`` are complete (``epoch``).
    ``should_stop`` is polled between batches and inside long passes; ``check_stop`` raises
    :class:`Stopped` when it says so.
    """

    workspace: Path
    checkpoints: Path | None = None
    progress: Callable[..., None] = _nothing
    metric: Callable[..., None] = _nothing
    log: Callable[[str], None] = _nothing
    preview: Callable[[str, Any], None] = _nothing
    should_stop: Callable[[], bool] = lambda: False

    def check_stop(self) -> None:
        if self.should_stop():
            raise Stopped("stopped on request")
