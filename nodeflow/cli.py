"""``nodeflow`` on the command line: run, validate, list nodes and templates, serve the editor.

Everything the browser can run, this can run, through the same executor.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

from nodeflow.errors import GraphInvalid, describe_exception
from nodeflow.events import (Board, Event, Log, Metric, NodeFailed, NodeFinished, NodeSkipped, NodeStarted,
                             NodeStopped, Progress, describe)
from nodeflow.executor import Executor
from nodeflow.files import atomic_write_text
from nodeflow.graph import Graph, GraphFileError
from nodeflow.limits import CLASS_BATCH, CLASS_IMAGE_SIDE, CLASS_OPEN_PROJECTS
from nodeflow.node import Registry, import_module_or_file
from nodeflow.paths import path_params, settle_file, settle_graph, started_in
from nodeflow.recent import reopen
from nodeflow.runner import Job, drive
from nodeflow.runs import RunStore
from nodeflow.templates import list_templates

#: what ``nodeflow serve`` opens the first time (later: the graph open when the editor stopped)
DEFAULT_GRAPH = "cats_vs_dogs_finetune"

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class CliError(Exception):
    """A user mistake; printed as one line, exit 1."""


class UsageError(CliError):
    """A command line argparse cannot read; printed as one line naming the option (not the usage block), exit 2."""


class ParserExit(Exception):
    """``--help`` printed (or argparse otherwise finished): main returns ``status`` instead of raising SystemExit."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class CommandLine(argparse.ArgumentParser):
    """argparse, with two changes for command lines people type.

    An argument argparse would refuse as an unknown option but which names an existing file or folder is
    that path, so ``nodeflow run -x.json`` runs the file; a name argparse does know as an option keeps
    its meaning as an option. ``--`` works as everywhere (``nodeflow run -- -x.json``). And a usage error
    is raised as :class:`UsageError`, one line that main prints, instead of the usage block and SystemExit.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.strays: list[str] = []  # arguments read as options this command does not have
        self.has_commands = False

    def add_subparsers(self, **kwargs: Any):
        self.has_commands = True
        return super().add_subparsers(**kwargs)

    def _parse_optional(self, arg_string: str):
        found = super()._parse_optional(arg_string)
        matches = found if isinstance(found, list) else [found]  # a list of matches from Python 3.12.7 on
        if found is None or any(m[0] is not None for m in matches):
            return found
        if os.path.lexists(arg_string):
            return None  # a positional: the file of that name
        self.strays.append(arg_string)
        return found

    def error(self, message: str):
        """One line: what argparse objects to and, for an argument that starts with ``-``, how to give it as a file."""
        named = [s for s in dict.fromkeys(self.strays)
                 if (s in message or not self.has_commands) and not (s.startswith("--") and s in message)]
        hint = "".join(f" ('{s}' is not an option: put -- before it to give it as an argument, or write ./{s} "
                       "for a file)" for s in named[:3])
        raise UsageError(one_line(f"{self.prog}: {message}{hint}"))

    def exit(self, status: int = 0, message: str | None = None):
        if message:
            sys.stderr.write(message)
        raise ParserExit(status)


def one_line(text: str) -> str:
    """``text`` with its line breaks and other unprintable characters escaped, so an argument typed with
    a newline in it cannot break the one-line answer."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def default_workspace() -> Path:
    if os.environ.get("NODEFLOW_WORKSPACE"):
        return Path(os.environ["NODEFLOW_WORKSPACE"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "nodeflow"


def workspace_of(args: argparse.Namespace) -> Path:
    """The workspace a command uses (``--workspace``, else :func:`default_workspace`): where its cache
    is, and what the relative paths of its graph are relative to (:func:`nodeflow.paths.resolve`).
    Made absolute here, from the shell's folder, so worker processes started elsewhere agree."""
    given = getattr(args, "workspace", None)
    return (Path(given).expanduser() if given else default_workspace()).absolute()


def load_graph(ref: str) -> Graph:
    """A graph file path, or the name of a shipped template."""
    path = Path(ref)
    if path.exists() or path.suffix == ".json" or os.sep in ref:
        return Graph.load(path)
    templates = list_templates()
    if ref in templates:
        return Graph.load(templates[ref])
    raise CliError(f"no graph file {ref!r} and no template of that name (templates: {', '.join(templates)})")


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


def graph_and_registry(args: argparse.Namespace) -> tuple[Graph, Registry]:
    """The graph ``args.graph`` names, its old relative paths settled (:func:`settled_graph`), with its
    ``--set`` values, and the catalogue. The file is read first, so a file that is not a graph is
    refused in a moment, before the catalogue (and torch) is loaded."""
    graph = load_graph(args.graph)
    registry = registry_for(args)
    graph = settled_graph(graph, args.graph, registry, workspace_of(args))
    return graph_with_overrides(graph, args, registry), registry


def settled_graph(graph: Graph, ref: str, registry: Registry, workspace: Path) -> Graph:
    """``graph`` with each relative path written when relative paths started at the shell's folder,
    and naming nothing in the workspace, rewritten (:func:`nodeflow.paths.settle_graph`); its file
    ``ref`` too, once; each said on a line of its own."""
    old_base = started_in()
    graph, rewritten = settle_graph(graph, registry, workspace, old_base)
    if rewritten:
        saved = settle_file(Path(ref), registry, workspace, old_base) if Path(ref).is_file() else ""
        for line in [*(r.note for r in rewritten), saved]:
            if line:
                print(f"note: {line}", file=sys.stderr)
    return graph


def graph_with_overrides(graph: Graph, args: argparse.Namespace, registry: Registry) -> Graph:
    """``graph`` with the ``--set`` values, each checked against its param whatever part of the
    graph the command goes on to run (a value on a node outside ``--target`` is as wrong as one
    inside it)."""
    graph = apply_overrides(graph, args.set, registry)
    given = {tuple(item.partition("=")[0].strip().split(".", 1)) for item in args.set}
    wrong = [p for p in Executor(registry, workspace_of(args)).validate(graph) if (p.node_id, p.param) in given]
    if wrong:
        raise CliError("; ".join(f"--set {p}" for p in wrong))
    return graph


def registry_for(args: argparse.Namespace) -> Registry:
    registry = Registry.discover(plugins=not args.no_plugins)
    for ref in args.nodes or []:
        registry.add_module(import_nodes(ref), source=f"--nodes {ref}")
    return registry


def import_nodes(ref: str):
    """Extra node classes for trying out nodes before packaging them as a plugin."""
    try:
        return import_module_or_file(ref)
    except Exception as exc:  # ImportError, a SyntaxError, whatever the plugin raises as it loads
        raise CliError(f"--nodes {ref}: cannot import ({describe_exception(exc)})") from None


# -- commands -------------------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    """Every problem of the graph with its ``--set`` values, as a run from the same workspace would see
    them (a path param that names nothing there included), under one line that says valid or invalid."""
    graph = load_graph(args.graph)
    registry = registry_for(args)
    workspace = workspace_of(args)
    graph = apply_overrides(settled_graph(graph, args.graph, registry, workspace), args.set, registry)
    problems = Executor(registry, workspace).validate(graph)
    errors = sum(p.blocking for p in problems)
    if not errors:
        warned = f"; {len(problems)} warning{'s' if len(problems) != 1 else ''}" if problems else ""
        print(f"{args.graph}: valid ({len(graph.nodes)} nodes, {len(graph.edges)} edges){warned}")
    else:
        print(f"{args.graph}: invalid ({errors} error{'s' if errors != 1 else ''})")
    for problem in problems:
        print(f"{args.graph}: {problem}")
    return EXIT_ERROR if any(p.blocking for p in problems) else EXIT_OK


def cmd_export_script(args: argparse.Namespace) -> int:
    """The graph as one standalone PyTorch script (see nodeflow.script), to a file or stdout."""
    from nodeflow.script import export_script

    if args.output not in (None, "-") and Path(args.output).is_dir():
        raise CliError(f"-o {args.output}: that is a folder; give the script's file name, e.g. "
                       f"{Path(args.output) / 'train.py'}")
    loaded = load_graph(args.graph)
    registry = registry_for(args)
    workspace = workspace_of(args)
    graph = apply_overrides(settled_graph(loaded, args.graph, registry, workspace), args.set, registry)
    try:
        exported = export_script(graph, registry, args.target, workspace=workspace)
    except GraphInvalid as exc:
        first = exc.problems[0]
        more = f" (and {len(exc.problems) - 1} more: nodeflow validate lists them)" if len(exc.problems) > 1 else ""
        raise CliError(f"cannot write the script: {first}{more}") from None
    if args.output in (None, "-"):
        sys.stdout.write(exported.text)
    else:
        atomic_write_text(Path(args.output), exported.text)
        print(f"wrote {args.output}: run it with python {args.output}", file=sys.stderr)
    for node_id, why in exported.left_out.items():
        print(f"left out {node_id}: {why}", file=sys.stderr)
    for note in exported.notes:
        print(f"note: {note}", file=sys.stderr)
    return EXIT_OK


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
    """Prints one line per finished node and, on a terminal, a progress bar for the running one (its
    state as every view words it: "running · epoch 12/40 · 3 min left"); sent to a file or a pipe,
    the output is plain lines only. Node states come from the one reducer (:mod:`nodeflow.events`)."""

    def __init__(self, quiet: bool = False, bars: bool | None = None) -> None:
        self.quiet = quiet
        self.bars = sys.stderr.isatty() if bars is None else bars
        self.bar = None
        self.lock = threading.Lock()
        self.board = Board()

    def blamed(self, node_id: str) -> str | None:
        """The param a failed node's error blames, for the resume hint."""
        state = self.board.get(node_id)
        return state.param if state is not None else None

    def __call__(self, event: Event) -> None:
        with self.lock:
            self.board.apply(event)
            if not self.quiet and event.node_id is not None:
                self._show(event, self.board.nodes[event.node_id])

    def _show(self, event: Event, state) -> None:
        from tqdm import tqdm

        node = event.node_id
        match event:
            case NodeStarted() if not self.bars:
                self._write(f"… {node} running")
            case NodeStarted():
                self._close()
                self.bar = tqdm(total=1.0, desc=f"  {node}", unit="", leave=False, file=sys.stderr,
                                bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")
            case Progress() if self.bar is not None:
                self.bar.n = state.progress
                self.bar.set_postfix_str(state.words() if state.epochs else state.message, refresh=True)
            case Metric(name=name, value=value, step=step) if step is not None and not name.startswith("batch"):
                self._write(f"  {node}  {name}={value:.4g}  (step {step})")
            case Log(message=message):
                self._write(f"  {node}: {message}")
            case NodeFinished():
                self._close()
                how = "cached" if state.state == "cached" else f"ran in {state.seconds or 0:.1f}s"
                self._write(f"✓ {node} ({how})")
            case NodeFailed():
                self._close()
                self._write(f"✗ {node}: {state.error}")
            case NodeSkipped():
                self._write(f"- {node} (skipped: an input failed)")
            case NodeStopped():
                self._close()
                self._write(f"■ {node} stopped: {state.words()}")

    def _write(self, line: str) -> None:
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def cmd_run(args: argparse.Namespace) -> int:
    mlflow_client(args)
    graph, registry = graph_and_registry(args)
    workspace = workspace_of(args)
    executor = Executor(registry, workspace, device=args.device)
    if args.dry_run:
        return _dry_run(args, graph, executor)
    progress = _TerminalProgress(quiet=args.quiet)
    executor.subscribe(progress)
    with cluster_for(args) as cluster:
        executor.backend = cluster
        return _run_and_report(args, graph, workspace, executor, progress)


def _dry_run(args: argparse.Namespace, graph: Graph, executor: Executor) -> int:
    """``run --dry-run``: the cost preview as a table headed "estimate" (and the JSON with
    --report); nothing is trained, cached or recorded."""
    from nodeflow.planner import estimate_note
    from nodeflow.words import format_bytes, format_seconds

    found = executor.estimate(graph, target=args.target)
    if args.report:
        atomic_write_text(Path(args.report), json.dumps({"estimate": found}, indent=2) + "\n")
    rows = []
    for node_id, entry in found["nodes"].items():
        first, later = entry.get("first_epoch_seconds"), entry.get("epoch_seconds")
        per_epoch = format_seconds(later) if later is not None else "-"
        if first is not None and later is not None and abs(first - later) > max(0.05 * later, 0.05):
            per_epoch += f" (1st {format_seconds(first)})"
        rows.append((node_id, entry["status"], entry.get("device") or "-", per_epoch,
                     str(entry["epochs"]) if entry.get("epochs") else "-", format_seconds(entry.get("seconds")),
                     format_bytes(entry.get("peak_memory_bytes")), estimate_note(entry)))
    header = ("NODE", "STATUS", "DEVICE", "S/EPOCH", "EPOCHS", "TOTAL", "PEAK MEMORY", "NOTE")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    print(f"estimate{' for ' + args.target if args.target else ''} (nothing was run; cached nodes cost 0 s)")
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    stale = [n for n, e in found["nodes"].items() if e["status"] != "cached"]
    waiting = [n for n, e in found["nodes"].items() if e["status"] in ("after upstream", "error", "stopped")]
    print(f"total: ≈ {format_seconds(found['total_seconds'])} for {len(stale)} node(s) to run, "
          f"{len(found['nodes']) - len(stale)} cached" + (f"; not estimated: {', '.join(waiting)}" if waiting else ""))
    return EXIT_OK


def cluster_for(args: argparse.Namespace):
    """The Dask backend ``--jobs``/``--scheduler`` (or $NODEFLOW_DASK_SCHEDULER) ask for, as a context
    that starts and stops its cluster; a context of None for a plain run, which never imports Dask."""
    import contextlib

    from nodeflow.parallel import cluster_wanted

    cluster = cluster_wanted(args.jobs, args.scheduler)
    if cluster is None:
        return contextlib.nullcontext(None)

    @contextlib.contextmanager
    def started():
        with cluster:
            if not getattr(args, "quiet", False):
                print(cluster.describe(), file=sys.stderr)
            yield cluster

    return started()


def _run_and_report(args: argparse.Namespace, graph: Graph, workspace: Path, executor: Executor,
                    progress: _TerminalProgress) -> int:
    interrupted_by_user = threading.Event()

    def on_sigint(signum, frame):  # first Ctrl-C: stop cleanly at the next batch; second: abort
        if interrupted_by_user.is_set():
            raise KeyboardInterrupt
        interrupted_by_user.set()
        print("\nstopping at the next batch (Ctrl-C again to abort)", file=sys.stderr)
        executor.interrupt()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        [job] = drive(executor, [Job(graph, args.target, tuple(args.force), source="cli")],
                      store=RunStore(workspace))
    finally:
        signal.signal(signal.SIGINT, previous)
    report = job.report
    assert report is not None
    mlflow_export(args, workspace, job.run_id)
    if args.report:
        atomic_write_text(Path(args.report), json.dumps(report.to_json(), indent=2) + "\n")
    if report.interrupted:
        print("stopped; finished nodes stay cached", file=sys.stderr)
        return EXIT_INTERRUPTED
    failure = report.failure()
    if failure is not None:
        node_id, node_report = failure
        print(f"error: node '{node_id}' failed: {node_report.error}", file=sys.stderr)
        print(resume_hint(args.graph, args.set, node_id, progress.blamed(node_id)), file=sys.stderr)
        return EXIT_ERROR
    print(f"done: {sum(r.status == 'ran' for r in report.nodes.values())} ran, "
          f"{sum(r.status == 'cached' for r in report.nodes.values())} cached", file=sys.stderr)
    return EXIT_OK


def cmd_sweep(args: argparse.Namespace) -> int:
    from nodeflow.compare import metric_splits, split_of
    from nodeflow.predictions import PredictionStore
    from nodeflow.sweep import (GridError, branch_outcomes, branch_values, expand, held_out, held_out_warning, judge,
                                key_metric, metric_value, parse_grid, results_table, run_sweep, sweep_report)

    base, registry = graph_and_registry(args)
    grid = parse_grid(args.grid)

    def assign(graph: Graph, values: dict) -> Graph:  # as --set would, so a path typed here is made absolute
        return apply_overrides(graph, [f"{k}={json.dumps(v)}" for k, v in values.items()], registry)

    workspace = workspace_of(args)
    try:  # each value checked as --set would be, then each branch's graph as a whole, before anything runs
        branches = expand(base, grid, Executor(registry, workspace), args.target, assign)
    except GridError as exc:
        raise CliError(f"--grid {exc}" if exc.name else f"--grid: {exc}") from None
    progress = _TerminalProgress(quiet=args.quiet)

    executor = Executor(registry, workspace, device=args.device, listeners=[progress])

    def on_sigint(signum, frame):  # stop every branch at its next batch; a second Ctrl-C aborts
        if executor.stop_requested:
            raise KeyboardInterrupt
        print("\nstopping at the next batch (Ctrl-C again to abort)", file=sys.stderr)
        executor.interrupt()

    if not args.quiet:
        print(f"sweep: {len(branches)} branch(es) over {', '.join(name for name, _ in grid)}", file=sys.stderr)
    previous = signal.signal(signal.SIGINT, on_sigint)
    store = RunStore(workspace)
    try:
        with cluster_for(args) as cluster:
            run_sweep(executor, branches, args.target, tuple(args.force), cluster, store)
    finally:
        signal.signal(signal.SIGINT, previous)
    # ranked on validation unless asked otherwise; the best is starred only when clearly better
    splits = {k: v for b in branches for k, v in metric_splits(b.graph.model_dump(mode="json"), registry).items()}
    metric = key_metric(branches, args.target, args.metric, splits)
    runs = [store.get(b.run_id) if b.run_id is not None else None for b in branches]
    outcomes = branch_outcomes(runs, metric, split_of(metric, splits) if metric else None,
                               PredictionStore(Executor(registry, workspace).cache, workspace).of)
    judgement = judge(branch_values(branches, metric), metric, outcomes)
    warning = held_out_warning(metric) if held_out(metric, splits) else None
    if args.report:
        report = sweep_report(branches, "dask" if cluster is not None else "local", metric, judgement, warning)
        atomic_write_text(Path(args.report), json.dumps(report, indent=2) + "\n")
    print(results_table(branches, metric, judgement))
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    if args.metric and all(metric_value(b, args.metric) is None for b in branches):
        print(f"note: --metric {args.metric}: no branch reported it (give NODE.METRIC as `nodeflow runs show` "
              "lists them)", file=sys.stderr)
    if any(b.report is not None and b.report.interrupted for b in branches):
        print("stopped; finished nodes stay cached", file=sys.stderr)
        return EXIT_INTERRUPTED
    failed = [b for b in branches if b.report is None or not b.report.ok]
    if failed:
        first = failed[0].report.failure() if failed[0].report is not None else None
        where = f": node '{first[0]}' failed: {first[1].error}" if first else ""
        print(f"error: {len(failed)} of {len(branches)} branch(es) failed{where}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def cmd_predict(args: argparse.Namespace) -> int:
    from nodeflow import predict_command
    from nodeflow.trying import TryRefused

    if args.top is not None and args.top < 1:
        raise CliError("--top must be at least 1")
    try:
        pictures = predict_command.read_pictures(args.images)
        graph, registry = graph_and_registry(args)
        found = predict_command.classify(graph, registry, workspace_of(args), args.device, args.node, pictures,
                                         args.top)
    except TryRefused as exc:
        raise CliError(str(exc)) from None
    predict_command.print_found(found, args.json)
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

    mlflow_client(args)
    if args.users:
        return cmd_serve_users(args)
    if args.trusted_proxy:
        raise CliError("--trusted-proxy is for --users (the sign-in limits count clients' addresses)")

    try:
        from nodeflow.ui.app import serve
    except ImportError as exc:
        raise CliError(f"the editor is not available ({exc})") from None
    workspace = Path(args.workspace) if args.workspace else default_workspace()
    registry = registry_for(args)
    # no GRAPH: the graph open when the editor stopped, with its unsaved edits; else the template
    reopened = reopen(workspace) if args.graph is None else None
    if reopened:
        graph = apply_overrides(reopened.graph, args.set, registry)
    else:
        args.graph = args.graph or DEFAULT_GRAPH
        graph = graph_with_overrides(load_graph(args.graph), args, registry)
    path = reopened.path if reopened else Path(args.graph) if Path(args.graph).exists() else None
    with cluster_for(args) as cluster:
        session = Session(registry, workspace, graph=graph, path=path, device=args.device,
                          isolate=not args.in_process, autosave_delay=2.0, cluster=cluster, auto_estimate=True,
                          allowed_roots=[Path(p).expanduser().resolve() for p in args.allow_root])
        if reopened:  # what reopening says, then any path the session rewrote (Session._settle_paths)
            session.document.dirty = reopened.dirty
            session.document.notice = " ".join(filter(None, [reopened.message, session.document.notice]))
        session.mlflow_uri = mlflow_uri(args)
        try:
            serve(session, host=args.host, port=args.port, token=args.token)
        finally:
            session.close()
    return EXIT_OK


def cmd_serve_users(args: argparse.Namespace) -> int:
    """``serve --users``: many people, each signed in, each with projects of their own (nodeflow.server)."""
    if args.token:
        raise CliError("--token is for one person; with --users everyone signs in (add accounts with "
                       "'nodeflow users add NAME --workspace ROOT')")
    if args.allow_root:
        raise CliError("--allow-root is not available with --users: each project reads and writes its own "
                       "folder only (people upload their data into it)")
    try:
        from nodeflow.server import ClassServer
        from nodeflow.ui.site import serve_users
    except ImportError as exc:
        raise CliError(f"the editor is not available ({exc})") from None
    if args.queue_limit < 1:
        raise CliError(f"--queue-limit {args.queue_limit}: give 1 or more")
    limits = class_limits_for(args)
    root = Path(args.workspace) if args.workspace else default_workspace()
    registry = registry_for(args)
    with cluster_for(args) as cluster:
        # one job at a time on this machine; on a cluster, as many as it has workers (GPU=1 keeps trainings apart)
        slots = (len(cluster.client.scheduler_info().get("workers", {})) or 1) if cluster is not None else 1
        server = ClassServer(root, registry, device=args.device, isolate=not args.in_process, cluster=cluster,
                             slots=slots, quota_bytes=args.quota, queue_limit=args.queue_limit,
                             mlflow_uri=mlflow_uri(args), limits=limits, max_open_projects=args.max_open_projects)
        try:
            serve_users(server, host=args.host, port=args.port,
                        trusted_proxies=[a for given in args.trusted_proxy for a in given])
        finally:
            server.close()
    return EXIT_OK


def class_limits_for(args: argparse.Namespace) -> Any:
    """The limits on each job of ``serve --users``: the flags given, the class defaults for the rest
    (:func:`nodeflow.limits.class_limits`). Refuses (one line) what cannot hold: more devices than the
    machine has, a memory limit for jobs run in the server process."""
    from dataclasses import replace

    from nodeflow.limits import class_limits, flag_of, machine_devices

    limits = class_limits(args.device)
    remote = bool(args.scheduler or os.environ.get("NODEFLOW_DASK_SCHEDULER"))
    if args.max_devices is not None and not remote:
        machine = machine_devices(args.device)
        if args.max_devices > machine and args.device in ("auto", "cuda"):
            import torch  # not only NVIDIA's GPUs: ask the one that will train

            machine = max(machine, torch.cuda.device_count())
        if args.max_devices > machine:
            raise CliError(f"--max-devices {args.max_devices}: this machine has {machine} device(s) for "
                           f"--device {args.device}; give {machine} or fewer")
    if args.in_process or args.jobs or remote:
        if args.job_memory is not None:
            where = "--in-process runs them in the server process" if args.in_process else \
                "--jobs/--scheduler runs them on Dask's workers (give those a memory limit of their own)"
            raise CliError(f"{flag_of('memory_bytes')} holds the worker process of each job, and {where}; leave one "
                           "of them out")
        limits = replace(limits, memory_bytes=None)
    given = {"memory_bytes": args.job_memory, "max_image_side": args.max_image_side, "max_batch": args.max_batch,
             "max_devices": args.max_devices if args.max_devices is not None else 1 if remote else None,
             "rendezvous_hosts": args.rendezvous_hosts}
    return replace(limits, **{name: value for name, value in given.items() if value is not None})


# -- run history (see nodeflow.runs) --------------------------------------------------------------


def _store(args: argparse.Namespace) -> RunStore:
    workspace = Path(args.workspace) if args.workspace else default_workspace()
    if not (workspace / "runs.sqlite").exists():
        raise CliError(f"no runs recorded in {workspace} yet (run a graph with --workspace {workspace})")
    return RunStore(workspace)


def mlflow_uri(args: argparse.Namespace) -> str | None:
    return getattr(args, "mlflow", None) or os.environ.get("MLFLOW_TRACKING_URI") or None


def mlflow_client(args: argparse.Namespace) -> None:
    """Refuse, naming --mlflow, a tracking URI MLflow has no store for, before anything runs
    (MLflow is imported only when a URI is given)."""
    uri = mlflow_uri(args)
    if uri:
        from nodeflow.mlflow_log import client

        try:
            client(uri)
        except ValueError as exc:
            raise CliError(f"--mlflow {exc}") from None


def mlflow_export(args: argparse.Namespace, workspace: Path, run_id: int) -> None:
    """Log the run to MLflow when asked (--mlflow or MLFLOW_TRACKING_URI). The run is recorded
    whatever MLflow says: a failure is a warning here and in the run's record."""
    uri = mlflow_uri(args)
    if not uri:
        return
    from nodeflow.mlflow_log import log_run

    try:
        mlflow_id = log_run(RunStore(workspace), run_id, uri)
    except Exception as exc:  # unreachable, refused, a store that fails: the run itself is done
        warning = f"could not log run {run_id} to MLflow at {uri}: {describe_exception(exc)}"
        RunStore(workspace).add_warning(run_id, warning)
        print(f"warning: --mlflow {warning}", file=sys.stderr)
        return
    print(f"logged to MLflow: run {mlflow_id} at {uri}", file=sys.stderr)


def _when(stamp: float | None) -> str:
    import time as _time

    return _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(stamp)) if stamp else "-"


def _key_metrics(run: dict[str, Any], limit: int = 2) -> dict[str, float]:
    """The accuracies of the nodes that ran (else their first metric): what a person compares first."""
    found: dict[str, float] = {}
    ran = [(n, v) for n, v in run["nodes"].items() if v.get("status") == "ran" and v.get("metrics")]
    for node, info in ran:
        for name, value in info["metrics"].items():
            if "accuracy" in name and isinstance(value, (int, float)):
                found[f"{node}.{name}"] = value
    if not found and ran:
        node, info = ran[-1]
        name, value = next(iter(info["metrics"].items()))
        found[f"{node}.{name}"] = value
    return dict(list(found.items())[-limit:])


def _fmt(value: Any, sign: bool = False) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:+d}" if sign else str(value)
    return (f"{value:+.4g}" if sign else f"{value:.4g}") if isinstance(value, float) else json.dumps(value)


def cmd_runs(args: argparse.Namespace) -> int:
    runs = _store(args).list(limit=args.limit)
    if args.json:
        print(json.dumps(runs, indent=2))
        return EXIT_OK
    print(f"{'ID':>4}  {'STARTED':<19}  {'STATUS':<11} {'TIME':>7}  {'GRAPH':<24} {'CHANGED':<28} METRICS")
    for run in runs:
        seconds = f"{run['seconds']:.1f}s" if run["seconds"] is not None else "-"
        status = f"{run['status']} #{run['position']}" if run["status"] == "queued" else run["status"]
        changed = ", ".join(run["changes"]) or "-"
        metrics = "  ".join(f"{k}={_fmt(v)}" for k, v in _key_metrics(run).items())
        print(f"{run['id']:>4}  {_when(run['started'] or run['requested']):<19}  {status:<11} {seconds:>7}  "
              f"{run['graph_name'][:24]:<24} {changed[:28]:<28} {metrics}")
    return EXIT_OK


def cmd_runs_show(args: argparse.Namespace) -> int:
    run = _store(args).get(args.id)
    if args.json:
        print(json.dumps(run, indent=2))
        return EXIT_OK
    print(f"run {run['id']}: {run['status']}  graph '{run['graph_name']}' ({run['graph_hash'][:12]})"
          f"{'  target ' + run['target'] if run['target'] else ''}  from {run['source']}")
    print(f"  started {_when(run['started'])}, ended {_when(run['ended'])}"
          + (f", {run['seconds']:.1f}s" if run["seconds"] is not None else ""))
    if run["error"]:
        print(f"  error: {run['error']}")
    for name, change in run["changes"].items():
        print(f"  changed {name}: {_fmt(change['from'])} -> {_fmt(change['to'])}")
    for node, info in run["nodes"].items():
        metrics = "  ".join(f"{k}={_fmt(v)}" for k, v in (info.get("metrics") or {}).items())
        key = (info.get("key") or "")[:12]
        status = info.get("status", "?")
        if status == "stopped" and info.get("epochs"):  # as its card says it: stopped at epoch 3/12 · resumes ...
            metrics = " ".join(x for x in (describe("stopped", info.get("epoch"), info["epochs"],
                                                    bool(info.get("resumable"))), metrics) if x)
        print(f"  {node:<20} {status:<11} {key:<12}  {metrics}" + (f"  ({info['error']})" if info.get("error") else ""))
    for key in run["models"]:
        print(f"  model version {key[:12]}")
    return EXIT_OK


def cmd_runs_diff(args: argparse.Namespace) -> int:
    from nodeflow.compare import compare_run_ids
    from nodeflow.predictions import PredictionStore

    store = _store(args)
    workspace = store.path.parent
    registry = registry_for(args)
    diff = compare_run_ids(store, PredictionStore(Executor(registry, workspace).cache, workspace), registry,
                           args.a, args.b)
    if args.json:
        print(json.dumps(diff, indent=2))
        return EXIT_OK
    print(f"run {diff['a']} -> run {diff['b']}")
    print("params:" if diff["params"] else "params: no change")
    for name, change in diff["params"].items():
        print(f"  {name}: {_fmt(change['from'])} -> {_fmt(change['to'])}")
    # what moved, and every metric of a node whose inputs or params changed (a result that held is news too)
    changed = set(diff["changed_nodes"])
    shown = {k: v for k, v in diff["metrics"].items() if v["delta"] != 0 or k.split(".", 1)[0] in changed}
    print("metrics:" if shown else "metrics: no change")
    for name, m in shown.items():
        print(f"  {name}: {_metric_change(name, m, diff)}")
    if diff["comparisons"]:
        print("image by image (the same images scored by both runs' models):")
    for c in diff["comparisons"]:
        held = " (held out: for the final check, not for choosing)" if c["held_out"] else ""
        also = "".join(f", {n}" for n in c["also"])
        print(f"  {c['node']}{also} on {c['split']}{held}: {c['words']}")
        flipped = c.get("flips") or {}
        for direction, label in (("right_to_wrong", "right -> wrong"), ("wrong_to_right", "wrong -> right")):
            group = flipped.get(direction)
            if group and group["count"]:
                names = "; ".join(f"{r['name']} ({r['true']}, now called {r['b']} at {r['confidence_b']:.2f})"
                                  if direction == "right_to_wrong" else
                                  f"{r['name']} ({r['true']}, was called {r['a']} at {r['confidence_a']:.2f})"
                                  for r in group["rows"][:5])
                more = f"; and {group['count'] - 5} more" if group["count"] > 5 else ""
                print(f"    {label} ({group['count']}, most confident first): {names}{more}")
    return EXIT_OK


def _metric_change(name: str, m: dict[str, Any], diff: dict[str, Any]) -> str:
    """``91.7% -> 100% (+8.3 points) on 12 validation images: no clear difference ...``"""
    from nodeflow.compare import readable, readable_delta

    if m["delta"] is None:
        note = f"(only in run {diff['a'] if m['b'] is None else diff['b']})"
    else:
        note = f"({readable_delta(name, m['delta'])})" if m["delta"] else "(same)"
    counts = [n for n in (m["images"]["a"], m["images"]["b"]) if n is not None]
    split = f" {m['split']}" if m["split"] else ""
    on = "" if not counts else \
        f" on {counts[0]:,}{split} images" if len(set(counts)) == 1 else f" on {counts[0]:,} -> {counts[1]:,}{split} images"
    words = f": {m['judged']}" if m.get("judged") else ""  # the test on those images, or "untested"
    return f"{readable(name, m['a'])} -> {readable(name, m['b'])} {note}{on}{words}"


def cmd_runs_restore(args: argparse.Namespace) -> int:
    run = _store(args).get(args.id)
    graph = Graph.from_data(run["graph"], f"run {run['id']}")
    target = Path(args.output or f"{run['graph_name']}.run{run['id']}.json")
    graph.save(target)
    print(f"wrote the graph of run {run['id']} to {target}")
    return EXIT_OK


def _version_line(v: dict[str, Any]) -> str:
    params = " ".join(f"{k}={_fmt(val)}" for k, val in v["given"].items())  # as the graph sets them
    metrics = " ".join(f"{k}={_fmt(val)}" for k, val in v["metrics"].items() if isinstance(val, (int, float)))
    return f"{v['node']:<18} {v['key'][:12]}  {v['type']:<16} run {v['run_id']:<4} {params}" + \
        (f"  -> {metrics}" if metrics else "")


def cmd_lineage(args: argparse.Namespace) -> int:
    store = _store(args)
    if args.other:
        diff = store.compare_versions(args.ref, args.other)
        if args.json:
            print(json.dumps(diff, indent=2))
            return EXIT_OK
        print(f"{diff['a'][:12]} -> {diff['b'][:12]}")
        for name, change in {**diff["params"], **diff["data"]}.items():
            print(f"  {name}: {_fmt(change['from'])} -> {_fmt(change['to'])}")
        for name, m in diff["metrics"].items():
            if m["delta"]:
                print(f"  {name}: {_fmt(m['a'])} -> {_fmt(m['b'])} ({_fmt(m['delta'], sign=True)})")
        return EXIT_OK
    lineage = store.lineage(args.ref)
    if args.json:
        print(json.dumps(lineage, indent=2))
        return EXIT_OK
    print(" -> ".join(v["node"] for v in lineage["chain"]))
    for v in lineage["chain"]:
        print(f"  {_version_line(v)}")
    for d in lineage["data"]:
        print(f"  data: {d['node']} ({d['type']})" + (f" fingerprint {d['fingerprint'][:16]}" if d["fingerprint"] else ""))
    return EXIT_OK


# -- entry point --------------------------------------------------------------------------------


#: the devices --device names, checked by their form (no torch is imported to ask)
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d{1,3})?")


def device_name(text: str) -> str:
    if not DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"'{text}' is not a device: give auto, cpu, cuda, cuda:N or mps")
    return text


#: the largest size a flag takes (an exbibyte): more is a typo, and would overflow a C long
LARGEST_SIZE = 2**60


def byte_size(text: str) -> int:
    """``--quota``, ``--job-memory``: bytes, or a number with K, M, G or T (powers of 1024), e.g. 5G."""
    from decimal import Decimal

    found = re.fullmatch(r"\s*(\d{1,20}(?:\.\d{1,20})?)\s*([KMGT]?)(?:i?B)?\s*", text, re.I | re.A)
    count = int(Decimal(found.group(1)) * 1024 ** " KMGT".index(found.group(2).upper() or " ")) if found else 0
    if not 0 < count <= LARGEST_SIZE:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size: give bytes or a number with K, M, G or T, e.g. 5G")
    return count


def job_memory(text: str) -> int:
    """``--job-memory``: a size (:func:`byte_size`) a worker can start in."""
    from nodeflow.limits import MIN_JOB_MEMORY
    from nodeflow.words import size_words

    count = byte_size(text)
    if count < MIN_JOB_MEMORY:
        raise argparse.ArgumentTypeError(f"'{text}' is too little: a job's worker needs about "
                                         f"{size_words(MIN_JOB_MEMORY)} to start; give 1G or more, e.g. 8G")
    return count


def whole_number(least: int, most: int) -> Any:
    """An argparse type: a whole number from ``least`` to ``most``."""
    def parse(text: str) -> int:
        if not re.fullmatch(r"\s*\d{1,9}\s*", text, re.A) or not least <= int(text) <= most:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number from {least} to {most}")
        return int(text)
    return parse


#: a host name or address as ``--rendezvous-hosts`` takes it (name, IPv4, or IPv6 in brackets or not)
HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[?[0-9A-Fa-f:.]{2,45}\]?")


def host_list(text: str) -> tuple[str, ...]:
    """``--rendezvous-hosts HOST[,HOST]``: the machines a training may meet."""
    hosts = tuple(h.strip() for h in text.split(","))
    bad = next((h for h in hosts if not HOST.fullmatch(h)), None)
    if bad is not None:
        raise argparse.ArgumentTypeError(f"'{bad}' is not a host name or address: give HOST[,HOST], e.g. "
                                         "gpu1.example.org,10.0.0.7")
    return tuple(dict.fromkeys(hosts))


def proxy_addresses(text: str) -> list[str]:
    """``--trusted-proxy``: addresses or networks (10.0.0.5, 10.0.0.0/24, ::1), comma-separated."""
    import ipaddress

    found = [part.strip() for part in text.split(",") if part.strip()]
    for part in found:
        try:
            ipaddress.ip_network(part, strict=False)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{part[:60]!r} is not an address or network: name the proxy in front of the server, e.g. 127.0.0.1 "
                "or 10.0.0.0/24 (never '*', which would let every client choose its own address)") from None
    if not found:
        raise argparse.ArgumentTypeError("give the proxy's address, e.g. --trusted-proxy 127.0.0.1")
    return found


def port_number(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"'{text}' is not a TCP port: give a number from 1 to 65535")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandLine(prog="nodeflow", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--no-plugins", action="store_true", help="load only the built-in node catalogue")
    parser.add_argument("--nodes", action="append", metavar="MODULE_OR_FILE",
                        help="also load node classes from this module or .py file; repeatable")
    sub = parser.add_subparsers(dest="command", required=True)

    def graph_args(p: argparse.ArgumentParser, graph_optional: bool = False) -> None:
        if graph_optional:
            p.add_argument("graph", nargs="?", help="graph file or template name (default: the graph open when "
                           f"the editor stopped, with its unsaved edits; else {DEFAULT_GRAPH})")
        else:
            p.add_argument("graph", help="graph file or template name")
        p.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                       help="override a parameter (JSON value, else string); repeatable")

    def parallel_args(p: argparse.ArgumentParser) -> None:
        group = p.add_mutually_exclusive_group()
        group.add_argument("--jobs", type=int, metavar="N",
                           help="run independent nodes at once on a local Dask cluster of N worker processes")
        group.add_argument("--scheduler", metavar="ADDRESS",
                           help="run nodes on the Dask cluster at ADDRESS, e.g. tcp://host:8786 "
                                "(default: $NODEFLOW_DASK_SCHEDULER when set)")

    def runtime_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--workspace", help="folder for cached results (default: $NODEFLOW_WORKSPACE or a per-user folder)")
        p.add_argument("--device", default="auto", type=device_name,
                       help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")

    p = sub.add_parser("run", help="run a graph (or one node and what it needs)")
    graph_args(p)
    runtime_args(p)
    p.add_argument("--target", help="run only this node and the ancestors it needs")
    p.add_argument("--force", action="append", default=[], metavar="NODE", help="re-run this node even if cached")
    p.add_argument("--report", help="write a JSON report of what ran, what was cached, and the metrics")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--dry-run", action="store_true", help="print what the run would cost (a table headed "
                   "'estimate': seconds per epoch, total, peak memory, device) without running it; "
                   "with --report, write it as JSON")
    parallel_args(p)
    p.set_defaults(func=cmd_run)

    p.add_argument("--mlflow", metavar="URI", help="also log the run to this MLflow tracking store "
                   "(default: $MLFLOW_TRACKING_URI when set)")

    def store_arg(p: argparse.ArgumentParser, json_flag: bool = True, **kw: Any) -> None:
        p.add_argument("--workspace", help="the workspace whose runs to read (default: as for run)", **kw)
        if json_flag:
            p.add_argument("--json", action="store_true", **kw)

    p = sub.add_parser("runs", help="the run history: list, show, diff and restore runs")
    store_arg(p)
    p.add_argument("--limit", type=int, default=200, help="at most this many runs, newest first")
    p.set_defaults(func=cmd_runs)
    runs_sub = p.add_subparsers(dest="runs_command")
    q = runs_sub.add_parser("show", help="one run: what changed, what each node did, the models it made")
    q.add_argument("id")
    store_arg(q, default=argparse.SUPPRESS)
    q.set_defaults(func=cmd_runs_show)
    q = runs_sub.add_parser("diff", help="changed params (node.param) and metric deltas from run A to run B")
    q.add_argument("a")
    q.add_argument("b")
    store_arg(q, default=argparse.SUPPRESS)
    q.set_defaults(func=cmd_runs_diff)
    q = runs_sub.add_parser("restore", help="write a run's graph to a file")
    q.add_argument("id")
    q.add_argument("-o", "--output", help="file to write (default: GRAPH.runID.json here)")
    store_arg(q, json_flag=False, default=argparse.SUPPRESS)
    q.set_defaults(func=cmd_runs_restore)

    p = sub.add_parser("lineage", help="where a model version came from (or, with two, what changed between them)")
    p.add_argument("ref", metavar="NODE|VERSION", help="a node id (its latest version) or a cache key prefix")
    p.add_argument("other", nargs="?", metavar="NODE|VERSION", help="compare with this version")
    store_arg(p)
    p.set_defaults(func=cmd_lineage)

    p = sub.add_parser("sweep", help="run a graph once per combination of parameter values, sharing the cache")
    graph_args(p)
    runtime_args(p)
    p.add_argument("--grid", action="append", default=[], metavar="NODE.PARAM=[V1,V2,...]",
                   help="values to sweep one parameter over (a JSON list); repeatable, every combination runs")
    p.add_argument("--target", help="run only this node and the ancestors it needs, in every branch")
    p.add_argument("--force", action="append", default=[], metavar="NODE", help="re-run this node even if cached")
    p.add_argument("--metric", metavar="NODE.METRIC",
                   help="the metric that ranks the branches (default: a validation accuracy; a test metric is "
                        "allowed, with a warning: the branch it chooses gets an optimistic test figure)")
    p.add_argument("--report", help="write a JSON report: per branch its params and what run --report writes")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    parallel_args(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("validate", help="check a graph file without running it")
    graph_args(p)
    p.add_argument("--workspace", help="the workspace relative paths start at (default: as for run)")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("export-script", help="write the graph as one standalone PyTorch script (no nodeflow needed)")
    graph_args(p)
    p.add_argument("--workspace", help="the workspace relative paths start at; the script names them absolute "
                   "(default: as for run)")
    p.add_argument("--target", help="only this node and the nodes it needs")
    p.add_argument("-o", "--output", metavar="FILE", help="the script file to write (default: standard output)")
    p.set_defaults(func=cmd_export_script)

    p = sub.add_parser("nodes", help="list the node catalogue")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_nodes)

    p = sub.add_parser("templates", help="list the shipped templates")
    p.set_defaults(func=cmd_templates)

    p = sub.add_parser("serve", help="open the browser editor")
    graph_args(p, graph_optional=True)
    runtime_args(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port_number, default=8080, help="1 to 65535 (default 8080)")
    p.add_argument("--token", default=os.environ.get("NODEFLOW_TOKEN"), help="access token (needed off localhost)")
    p.add_argument("--allow-root", action="append", default=[], metavar="DIR",
                   help="a folder besides the workspace that the editor may read data from or write to; repeatable")
    p.add_argument("--in-process", action="store_true",
                   help="run graphs in the server process instead of a worker process (faster start, less safe)")
    p.add_argument("--mlflow", metavar="URI", help="also log each run to this MLflow tracking store "
                   "(default: $MLFLOW_TRACKING_URI when set)")
    p.add_argument("--users", action="store_true", help="many people: each signs in and has projects of their own "
                   "in --workspace ROOT (see 'nodeflow users'); runs take turns, round-robin by person")
    p.add_argument("--quota", type=byte_size, metavar="SIZE", help="with --users: each person's disk quota "
                   "(uploads, caches, checkpoints), e.g. 5G; over it, new runs and uploads are refused")
    p.add_argument("--queue-limit", type=int, default=10, metavar="N",
                   help="with --users: the runs one person may have waiting (default 10; a sweep counts once)")
    p.add_argument("--job-memory", type=job_memory, metavar="SIZE",
                   help="with --users: the memory each job's worker process may take, e.g. 8G (default: half the "
                        "machine's); a job over it fails alone, saying so")
    p.add_argument("--max-image-side", type=whole_number(8, 4096), metavar="PIXELS",
                   help=f"with --users: the largest image side a formatter may resize to (default {CLASS_IMAGE_SIDE})")
    p.add_argument("--max-batch", type=whole_number(1, 4096), metavar="N",
                   help=f"with --users: the largest batch_size of any node (default {CLASS_BATCH})")
    p.add_argument("--max-devices", type=whole_number(1, 64), metavar="N",
                   help="with --users: the devices (processes) one training may use (default and most: this "
                        "machine's GPUs, 1 without)")
    p.add_argument("--rendezvous-hosts", type=host_list, metavar="HOST[,HOST]",
                   help="with --users: the machines a multi-machine training may meet (default: none, so trainings "
                        "stay on this machine)")
    p.add_argument("--max-open-projects", type=whole_number(1, 1000), default=CLASS_OPEN_PROJECTS, metavar="N",
                   help="with --users: the projects one person may have open at once (default "
                        f"{CLASS_OPEN_PROJECTS}); over it, their least recently used idle one is closed")
    p.add_argument("--trusted-proxy", type=proxy_addresses, action="append", default=[], metavar="ADDR",
                   help="with --users: a reverse proxy in front of the server (address or network; repeatable or "
                   "comma-separated), whose X-Forwarded-For names the client; by default no one's is believed")
    parallel_args(p)
    p.set_defaults(func=cmd_serve)

    from nodeflow import predict_command

    predict_command.add_parser(sub, graph_args, runtime_args).set_defaults(func=cmd_predict)

    from nodeflow.users import command as users_command

    users_command.add_parser(sub, default_workspace)
    from nodeflow import assignments_command

    assignments_command.add_parser(sub, default_workspace)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The exit code (the console script exits with it); errors are one line on stderr, never a SystemExit."""
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ParserExit as exc:  # --help
        return exc.status
    try:
        return args.func(args)
    except SystemExit as exc:  # raised below main (e.g. a server that cannot start): its code, its one line
        if isinstance(exc.code, str):
            print(f"error: {one_line(exc.code)}", file=sys.stderr)
            return EXIT_ERROR
        return exc.code or EXIT_OK
    except (CliError, GraphFileError, GraphInvalid, KeyError, OSError, ValueError) as exc:
        if args.debug:
            traceback.print_exc()
        message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"error: {one_line(message)}", file=sys.stderr)  # a value typed with a newline in it stays on it
        return EXIT_ERROR
    except RecursionError:  # input nested deeper than any graph (a document or a --set value)
        if args.debug:
            traceback.print_exc()
        print("error: the input is nested too deeply to be a graph", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("aborted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug, or a library's error nobody foresaw: still one line
        if args.debug:
            traceback.print_exc()
        print(f"error: {one_line(describe_exception(exc))} (run with --debug for the traceback)", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
