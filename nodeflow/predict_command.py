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


def add_parser(sub: Any, graph_args: Any, runtime_args: Any) -> None:
    p = sub.add_parser("predict", help="classify images with the model a node trained (its cached result)")
    graph_args(p)
    p.add_argument("node", help="the node whose trained model classifies (a Trainer, a Linear classifier)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    runtime_args(p)
    p.add_argument("--top", type=int, default=None, metavar="K", help="with --json: only the K most probable classes")
    p.add_argument("--json", action="store_true", help="print a JSON list of {image, classes}")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    from nodeflow.cli import EXIT_OK, CliError, graph_and_registry, workspace_of
    from nodeflow.executor import Executor
    from nodeflow.runs import STORE_FILE, RunStore

    if args.top is not None and args.top < 1:
        raise CliError("--top must be at least 1")
    pictures = []
    for name in args.images:
        try:
            pictures.append(Picture(name, Path(name).read_bytes()))
        except OSError as exc:
            raise CliError(f"cannot read image '{name}': {exc.strerror or exc}") from None
    graph, registry = graph_and_registry(args)
    workspace = workspace_of(args)
    executor = Executor(registry, workspace, device=args.device)
    runs = RunStore(workspace) if (workspace / STORE_FILE).is_file() else None
    tryer = Tryer(executor, runs)
    try:
        found = tryer.predict(graph, args.node, pictures, top=args.top)
    except TryRefused as exc:
        raise CliError(str(exc)) from None
    finally:
        tryer.close()
        if runs is not None:
            runs.close()
    if args.json:
        if found.get("note"):
            print(f"note: {found['note']}", file=sys.stderr)
        print(json.dumps([{"image": r["image"], "classes": r["classes"]} for r in found["results"]]))
    else:
        if found.get("note"):
            print(f"note: {found['note']}")
        for result in found["results"]:
            best = result["classes"][0]
            print(f"{result['image']}: {best['label']} ({best['probability']:.4f})")
    return EXIT_OK
