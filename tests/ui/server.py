"""Start the editor for browser tests: ``python -m tests.ui.server --port N --workspace DIR [--builtin]
[--graph FILE | --reopen]``. Runs in its own process so NiceGUI's global app stays out of pytest's."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from nodeflow.graph import Graph  # noqa: E402
from nodeflow.node import Registry  # noqa: E402
from nodeflow.recent import reopen  # noqa: E402
from nodeflow.session import Session  # noqa: E402


def demo_graph() -> Graph:
    """Five test nodes in a row: two constants into an adder, a slow node, a describer."""
    return Graph.from_data({
        "format": "nodeflow.graph", "version": 1, "name": "demo",
        "nodes": [
            {"id": "c1", "type": "test.constant", "params": {"value": 2}, "position": {"x": 0, "y": 0}},
            {"id": "c2", "type": "test.constant", "position": {"x": 0, "y": 160}},
            {"id": "add", "type": "test.add", "position": {"x": 300, "y": 60}},
            {"id": "slow", "type": "test.slow", "params": {"steps": 20, "delay": 0.05}, "position": {"x": 600, "y": 60}},
            {"id": "desc", "type": "test.describe", "position": {"x": 900, "y": 60}},
            {"id": "add2", "type": "test.add", "position": {"x": 600, "y": 300}},
        ],
        "edges": [
            {"source": "c1", "source_port": "value", "target": "add", "target_port": "a"},
            {"source": "c2", "source_port": "value", "target": "add", "target_port": "b"},
            {"source": "add", "source_port": "value", "target": "slow", "target_port": "value"},
            {"source": "slow", "source_port": "value", "target": "desc", "target_port": "value"},
        ],
    })


def pack_registry() -> Registry:
    import tests.nodepack as pack

    registry = Registry()
    registry.add_module(pack)
    return registry


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--builtin", action="store_true", help="the real catalogue instead of the test pack")
    parser.add_argument("--graph", help="graph file to open (default: the test pack's demo graph)")
    parser.add_argument("--token", help="require this access token")
    parser.add_argument("--allow-root", action="append", default=[], help="confine path params to these folders")
    parser.add_argument("--reopen", action="store_true",
                        help="as `nodeflow serve` without a GRAPH: the graph open when the editor last stopped")
    args = parser.parse_args()
    registry = Registry.discover(plugins=False) if args.builtin else pack_registry()
    reopened = reopen(Path(args.workspace)) if args.reopen else None
    graph = reopened.graph if reopened else Graph.load(args.graph) if args.graph else demo_graph()
    roots = [Path(p) for p in args.allow_root] if args.allow_root else None
    # as `nodeflow serve` does, nodes that never ran are profiled after an edit; with the real catalogue
    # that trains a few batches of a model, which the template tests leave to their own runs
    session = Session(registry, Path(args.workspace), graph=graph, path=reopened.path if reopened else None,
                      device="cpu", allowed_roots=roots, auto_estimate=not args.builtin)
    if reopened:
        session.document.dirty, session.document.notice = reopened.dirty, reopened.message
    from nodeflow.ui.app import serve

    serve(session, port=args.port, token=args.token)


if __name__ == "__main__":
    main()
