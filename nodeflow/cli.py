"""``nodeflow`` on the command line: run, validate, list nodes and templates, serve the editor.

Everything the browser can run, this can run, through the same executor.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

from nodeflow.errors import GraphInvalid
from nodeflow.executor import Executor
from nodeflow.files import atomic_write_text
from nodeflow.graph import Graph, GraphFileError
from nodeflow.node import Event, Registry, import_module_or_file
from nodeflow.paths import path_params
from nodeflow.templates import list_templates

EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 130


class CliError(Exception):
    """A user mistake; printed as one line, exit 1."""


def default_workspace() -> Path:
    if os.environ.get("NODEFLOW_WORKSPACE"):
        return Path(os.environ["NODEFLOW_WORKSPACE"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "nodeflow"


def load_graph(ref: str) -> Graph:
    """A graph file path, or the name of a shipped template."""
    path = Path(ref)
    if path.exists() or path.suffix == ".json" or os.sep in ref:
        return Graph.load(path)
    templates = list_templates()
    if ref in templates:
        return Graph.load(templates[ref])
    raise CliError(f"no graph file '{ref}' and no template of that name (templates: {', '.join(templates)})")


def parse_value(text: str) -> Any:
    """``--set`` values: JSON where they parse (numbers, booleans, lists), else plain strings."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(graph: Graph, assignments: list[str], registry: Registry | None = None) -> Graph:
    """Apply ``--set`` values. Path params typed in the shell are made absolute, so the graph
    means the same file wherever it is run or saved from."""
    data = graph.model_dump(mode="json")
    nodes = {n["id"]: n for n in data["nodes"]}
    for item in assignments:
        name, sep, value = item.partition("=")
        node_id, dot, param = name.partition(".")
        if not sep or not dot or not param:
            raise CliError(f"--set '{item}': expected NODE.PARAM=VALUE, e.g. train.epochs=5")
        if node_id not in nodes:
            close = difflib.get_close_matches(node_id, list(nodes), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f" (nodes: {', '.join(nodes)})"
            raise CliError(f"--set '{item}': no node '{node_id}'{hint}")
        parsed = parse_value(value)
        if registry is not None and isinstance(parsed, str) and nodes[node_id]["type"] in registry:
            paths = path_params(registry.get(nodes[node_id]["type"]).Params.model_json_schema())
            if param in paths and parsed and parsed not in paths[param][1] and not Path(parsed).expanduser().is_absolute():
                parsed = str(Path.cwd() / parsed)
        nodes[node_id].setdefault("params", {})[param] = parsed
    return Graph.from_data(data, "graph with --set values")


def registry_for(args: argparse.Namespace) -> Registry:
    registry = Registry.discover(plugins=not args.no_plugins)
    for ref in args.nodes or []:
        registry.add_module(import_nodes(ref), source=f"--nodes {ref}")
    return registry


def import_nodes(ref: str):
    """Extra node classes for trying out nodes before packaging them as a plugin."""
    try:
        return import_module_or_file(ref)
    except ImportError as exc:
        raise CliError(f"--nodes {ref}: cannot import ({exc})") from None


# -- commands -------------------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    registry = registry_for(args)
    graph = apply_overrides(load_graph(args.graph), args.set, registry)
    problems = Executor(registry).validate(graph)
    if not problems:
        print(f"{args.graph}: valid ({len(graph.nodes)} nodes, {len(graph.edges)} edges)")
        return EXIT_OK
    for problem in problems:
        print(f"{args.graph}: {problem}")
    return EXIT_ERROR


def cmd_nodes(args: argparse.Namespace) -> int:
    catalogue = registry_for(args).catalogue()
    if args.json:
        print(json.dumps(catalogue, indent=2))
        return EXIT_OK
    category = None
    for entry in catalogue:
        if entry["category"] != category:
            category = entry["category"]
            print(f"\n{category}")
        ins = ", ".join(f"{p['name']}:{p['type']}" for p in entry["inputs"]) or "-"
        outs = ", ".join(f"{p['name']}:{p['type']}" for p in entry["outputs"]) or "-"
        print(f"  {entry['type']:<28} {entry['title']:<28} ({ins}) -> ({outs})")
    return EXIT_OK


def cmd_templates(args: argparse.Namespace) -> int:
    for name, path in list_templates().items():
        graph = Graph.load(path)
        print(f"{name:<32} {len(graph.nodes):>3} nodes  {graph.description.splitlines()[0] if graph.description else ''}")
    return EXIT_OK


class _TerminalProgress:
    """Prints one line per finished node and, on a terminal, a progress bar for the running one;
    sent to a file or a pipe, the output is plain lines only."""

    def __init__(self, quiet: bool = False, bars: bool | None = None) -> None:
        self.quiet = quiet
        self.bars = sys.stderr.isatty() if bars is None else bars
        self.bar = None
        self.lock = threading.Lock()
        #: node id -> the param its failure blames, for the resume hint
        self.blamed: dict[str, str] = {}

    def __call__(self, event: Event) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        with self.lock:
            node = event.node_id
            if event.kind == "node_failed" and event.data.get("param"):
                self.blamed[node] = event.data["param"]
            if event.kind == "node_started" and not self.bars:
                self._write(f"… {node} running")
            elif event.kind == "node_started":
                self._close()
                self.bar = tqdm(total=1.0, desc=f"  {node}", unit="", leave=False, file=sys.stderr,
                                bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")
            elif event.kind == "progress" and self.bar is not None:
                total = float(event.data.get("total") or 1)
                self.bar.n = min(1.0, float(event.data.get("done", 0)) / total)
                self.bar.set_postfix_str(event.data.get("message", ""), refresh=True)
            elif event.kind == "metric" and event.data.get("step") is not None and not event.data["name"].startswith("batch"):
                self._write(f"  {node}  {event.data['name']}={event.data['value']:.4g}  (step {event.data['step']})")
            elif event.kind == "log":
                self._write(f"  {node}: {event.data.get('message')}")
            elif event.kind == "node_finished":
                self._close()
                how = "cached" if event.data.get("from_cache") else f"ran in {event.data.get('seconds', 0):.1f}s"
                self._write(f"✓ {node} ({how})")
            elif event.kind == "node_failed":
                self._close()
                self._write(f"✗ {node}: {event.data.get('message')}")
            elif event.kind == "node_skipped":
                self._write(f"- {node} (skipped: an input failed)")
            elif event.kind == "interrupted":
                self._close()
                self._write(f"■ {node} interrupted")

    def _write(self, line: str) -> None:
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def cmd_run(args: argparse.Namespace) -> int:
    registry = registry_for(args)
    graph = apply_overrides(load_graph(args.graph), args.set, registry)
    workspace = Path(args.workspace) if args.workspace else default_workspace()
    executor = Executor(registry, workspace, device=args.device)
    progress = _TerminalProgress(quiet=args.quiet)
    executor.subscribe(progress)
    interrupted_by_user = threading.Event()

    def on_sigint(signum, frame):  # first Ctrl-C: stop cleanly at the next batch; second: abort
        if interrupted_by_user.is_set():
            raise KeyboardInterrupt
        interrupted_by_user.set()
        print("\nstopping at the next batch (Ctrl-C again to abort)", file=sys.stderr)
        executor.interrupt()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        report = executor.run(graph, target=args.target, force=args.force)
    finally:
        signal.signal(signal.SIGINT, previous)
    if args.report:
        atomic_write_text(Path(args.report), json.dumps(report.to_json(), indent=2) + "\n")
    if report.interrupted:
        print("interrupted; finished nodes stay cached", file=sys.stderr)
        return EXIT_INTERRUPTED
    failure = report.failure()
    if failure is not None:
        node_id, node_report = failure
        print(f"error: node '{node_id}' failed: {node_report.error}", file=sys.stderr)
        print(resume_hint(args.graph, args.set, node_id, progress.blamed.get(node_id)), file=sys.stderr)
        return EXIT_ERROR
    print(f"done: {sum(r.status == 'ran' for r in report.nodes.values())} ran, "
          f"{sum(r.status == 'cached' for r in report.nodes.values())} cached", file=sys.stderr)
    return EXIT_OK


def resume_hint(graph: str, assignments: list[str], node_id: str, param: str | None) -> str:
    """The command that resumes from a failed node. The ``--set`` that gave the blamed param its
    failing value is left out, so pasting the hint does not fail the same way again."""
    if param is None:
        again = " ".join(["nodeflow run", graph, *[f"--set {s}" for s in assignments], "--target", node_id])
        return f"fix it, then resume from there (finished nodes are cached): {again}"
    blamed = f"{node_id}.{param}"
    kept = [s for s in assignments if s.partition("=")[0].strip() != blamed]
    again = " ".join(["nodeflow run", graph, *[f"--set {s}" for s in kept], "--target", node_id])
    return (f"fix {blamed} (in the graph file, or add --set {blamed}=...), then resume from there "
            f"(finished nodes are cached): {again}")


def cmd_serve(args: argparse.Namespace) -> int:
    from nodeflow.session import Session

    try:
        from nodeflow.ui.app import serve
    except ImportError as exc:
        raise CliError(f"the editor is not available ({exc})") from None
    workspace = Path(args.workspace) if args.workspace else default_workspace()
    registry = registry_for(args)
    graph = apply_overrides(load_graph(args.graph), args.set, registry)
    path = Path(args.graph) if Path(args.graph).exists() else None
    session = Session(registry, workspace, graph=graph, path=path, device=args.device, isolate=not args.in_process,
                      autosave_delay=2.0, allowed_roots=[Path(p).expanduser().resolve() for p in args.allow_root])
    try:
        serve(session, host=args.host, port=args.port, token=args.token)
    finally:
        session.close()
    return EXIT_OK


# -- entry point --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nodeflow", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--no-plugins", action="store_true", help="load only the built-in node catalogue")
    parser.add_argument("--nodes", action="append", metavar="MODULE_OR_FILE",
                        help="also load node classes from this module or .py file; repeatable")
    sub = parser.add_subparsers(dest="command", required=True)

    def graph_args(p: argparse.ArgumentParser, graph_optional: bool = False) -> None:
        if graph_optional:
            p.add_argument("graph", nargs="?", default="cats_vs_dogs_finetune", help="graph file or template name")
        else:
            p.add_argument("graph", help="graph file or template name")
        p.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                       help="override a parameter (JSON value, else string); repeatable")

    def runtime_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--workspace", help="folder for cached results (default: $NODEFLOW_WORKSPACE or a per-user folder)")
        p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")

    p = sub.add_parser("run", help="run a graph (or one node and what it needs)")
    graph_args(p)
    runtime_args(p)
    p.add_argument("--target", help="run only this node and the ancestors it needs")
    p.add_argument("--force", action="append", default=[], metavar="NODE", help="re-run this node even if cached")
    p.add_argument("--report", help="write a JSON report of what ran, what was cached, and the metrics")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="check a graph file without running it")
    graph_args(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("nodes", help="list the node catalogue")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_nodes)

    p = sub.add_parser("templates", help="list the shipped templates")
    p.set_defaults(func=cmd_templates)

    p = sub.add_parser("serve", help="open the browser editor")
    graph_args(p, graph_optional=True)
    runtime_args(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--token", default=os.environ.get("NODEFLOW_TOKEN"), help="access token (needed off localhost)")
    p.add_argument("--allow-root", action="append", default=[], metavar="DIR",
                   help="a folder besides the workspace that the editor may read data from or write to; repeatable")
    p.add_argument("--in-process", action="store_true",
                   help="run graphs in the server process instead of a worker process (faster start, less safe)")
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CliError, GraphFileError, GraphInvalid, KeyError, OSError, ValueError) as exc:
        if args.debug:
            traceback.print_exc()
        message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"error: {message}", file=sys.stderr)
        return EXIT_ERROR
    except RecursionError:  # input nested deeper than any graph (a document or a --set value)
        if args.debug:
            traceback.print_exc()
        print("error: the input is nested too deeply to be a graph", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("aborted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
