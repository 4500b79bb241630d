"""``nodeflow predict GRAPH NODE IMAGE...``: classify image files with the model a node of the graph
trained (its cached result in the workspace), as the editor's Try it tab and
``POST /api/models/{node}/predict`` do (:mod:`nodeflow.trying`): one line per image, its most probable
class and that class's probability; ``--json`` prints a list of ``{"image", "classes"}`` with every
class ranked. A refusal is one line on stderr."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from nodeflow.trying import Picture, Tryer, TryRefused


def add_parser(sub: Any, graph_args: Any, runtime_args: Any) -> argparse.ArgumentParser:
    """The ``predict`` subcommand's arguments; the CLI sets the function that runs it."""
    p = sub.add_parser("predict", help="classify images with the model a node trained (its cached result)")
    graph_args(p)
    p.add_argument("node", help="the node whose trained model classifies (a Trainer, a Linear classifier)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    runtime_args(p)
    p.add_argument("--top", type=int, default=None, metavar="K", help="with --json: only the K most probable classes")
    p.add_argument("--json", action="store_true", help="print a JSON list of {image, classes}")
    return p


def read_pictures(names: list[str]) -> list[Picture]:
    """The image files as pictures to classify; a file that cannot be read is a TryRefused naming it."""
    pictures = []
    for name in names:
        try:
            pictures.append(Picture(name, Path(name).read_bytes()))
        except OSError as exc:
            raise TryRefused(f"cannot read image '{name}': {exc.strerror or exc}") from None
    return pictures


def classify(graph: Any, registry: Any, workspace: Path, device: str, node: str, pictures: list[Picture],
             top: int | None) -> dict[str, Any]:
    """What the node's trained model says of each picture (see :meth:`nodeflow.trying.Tryer.predict`),
    its model run in a process of its own that ends with this call; raises TryRefused."""
    from nodeflow.executor import Executor
    from nodeflow.runs import STORE_FILE, RunStore

    executor = Executor(registry, workspace, device=device)
    runs = RunStore(workspace) if (workspace / STORE_FILE).is_file() else None
    tryer = Tryer(executor, runs)
    try:
        return tryer.predict(graph, node, pictures, top=top)
    finally:
        tryer.close()
        if runs is not None:
            runs.close()


def print_found(found: dict[str, Any], as_json: bool) -> None:
    """One line per image (its most probable class and that class's probability), or with
    ``as_json`` a JSON list of ``{"image", "classes"}``; a stale model's note goes first (to stderr
    with JSON, so that stdout stays one document)."""
    if found.get("note"):
        print(f"note: {found['note']}", file=sys.stderr if as_json else sys.stdout)
    if as_json:
        print(json.dumps([{"image": r["image"], "classes": r["classes"]} for r in found["results"]]))
        return
    for result in found["results"]:
        best = result["classes"][0]
        print(f"{result['image']}: {best['label']} ({best['probability']:.4f})")
