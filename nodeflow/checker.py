"""What can be known of a graph without running it: its problems, the types its nodes' outputs will
have (each node's ``infer``), its order and the cache key of every node.

The cache key of a node is its type, its code version, its validated params, its fingerprint and
the keys of the outputs feeding it, so a param change makes exactly that node and its descendants
stale. In the manner of Hamilton's graph checks: every problem is collected, then told together
(what can be wrong lives in :mod:`nodeflow.errors`).
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
from pydantic import ValidationError

from nodeflow.cache import canonical_json
from nodeflow.errors import (DisabledInputError, GraphCycleError, GraphInvalid, GraphProblem, GraphWarning,
                             MissingInputError, ParamError, PortTypeError, UnknownPortError, UnknownTypeError,
                             describe_exception)
from nodeflow.graph import Graph, NodeSpec
from nodeflow.node import Node, ParamProblem, Registry, UnknownNodeType, card_title, fresh_fingerprints
from nodeflow.paths import missing_paths, params_paths, resolved_params


@dataclass
class Checked:
    """What validation learns about a graph, reused by planning and running."""

    graph: Graph
    dag: nx.DiGraph
    problems: list[GraphProblem]
    params: dict[str, Any]
    types: dict[str, type[Node]]
    keys: dict[str, str]
    order: list[str]
    facts: dict[str, dict[str, dict[str, Any]]]
    #: disabled nodes, and the nodes that cannot run because they need one: left out of every run
    off: set[str] = field(default_factory=set)


class Checker:
    """Checks graphs against the catalogue (``registry``). ``base``: what relative path params are
    relative to; ``allowed_roots``: folders every path must lie in (None: unrestricted);
    ``workspace``: handed to a node's advice (:meth:`Node.warnings`)."""

    def __init__(self, registry: Registry, base: Path, allowed_roots: list[Path] | None = None,
                 workspace: Path | None = None) -> None:
        self.registry = registry
        self.path_base = base
        self.allowed_roots = allowed_roots
        self.workspace = workspace

    def check(self, graph: Graph, fresh: bool = False) -> Checked:
        """Every problem of ``graph``, and its cache keys. ``fresh``: for a run being planned, the
        keys reflect every data file as it is now (see :func:`nodeflow.node.fingerprints_fresh`);
        otherwise a node may answer its fingerprint from a memo, as status polling needs."""
        problems: list[GraphProblem] = []
        types: dict[str, type[Node]] = {}
        params: dict[str, Any] = {}
        dag = nx.DiGraph()
        for spec in graph.nodes:
            dag.add_node(spec.id)
            try:
                types[spec.id] = self.registry.get(spec.type)
            except UnknownNodeType as exc:
                problems.append(UnknownTypeError(spec.id, str(exc)))
                continue
            try:
                params[spec.id] = resolved_params(types[spec.id].Params.model_validate(spec.params), self.path_base)
            except ValidationError as exc:
                problems.extend(_param_problems(spec, exc))
        for edge in graph.edges:
            dag.add_edge(edge.source, edge.target)
            problems.extend(self._edge_problems(edge, types))
        for spec in graph.nodes:
            node = types.get(spec.id)
            if node is None:
                continue
            fed = {e.target_port for e in graph.incoming(spec.id)}
            for port in node.inputs:
                if not port.optional and port.name not in fed:
                    problems.append(MissingInputError(
                        spec.id, f"input '{port.name}' ({port.type.name}) is not connected", port=port.name))
        cycles = list(nx.simple_cycles(dag))
        for loop in cycles:
            problems.append(GraphCycleError(sorted(loop, key=[n.id for n in graph.nodes].index)))
        order = list(nx.topological_sort(dag)) if not cycles else [n.id for n in graph.nodes]
        keys: dict[str, str] = {}
        facts: dict[str, dict[str, dict[str, Any]]] = {}
        off: set[str] = set()
        if not cycles:
            with fresh_fingerprints() if fresh else contextlib.nullcontext():
                keys = self._keys(graph, order, types, params)
            off, found = _disabled(graph, order)
            problems.extend(found)
            found, facts = self._infer(graph, order, types, params, {p.node_id for p in problems})
            problems.extend(found)
        problems.extend(self._missing_paths(graph, params, {(p.node_id, p.param) for p in problems}))
        return Checked(graph, dag, problems, params, types, keys, order, facts, off)

    def _missing_paths(self, graph: Graph, params: dict[str, Any],
                       said: set[tuple[str, str | None]]) -> list[GraphProblem]:
        """A path param of an enabled node that names nothing on disk, unless the node said so itself:
        what its run would fail on, told before it starts (:func:`nodeflow.paths.missing_paths`)."""
        return [ParamError(spec.id, why, param=name) for spec in graph.nodes if spec.id in params and not spec.disabled
                for name, why in missing_paths(params[spec.id], self.path_base, self.allowed_roots, spec.params)
                if (spec.id, name) not in said]

    def _edge_problems(self, edge, types: dict[str, type[Node]]) -> list[GraphProblem]:
        src, dst = types.get(edge.source), types.get(edge.target)
        found: list[GraphProblem] = []
        out_port = src.output_port(edge.source_port) if src else None
        in_port = dst.input_port(edge.target_port) if dst else None
        if src is not None and out_port is None:
            names = ", ".join(p.name for p in src.outputs) or "none"
            found.append(UnknownPortError(edge.source, f"has no output '{edge.source_port}' (outputs: {names})",
                                          port=edge.source_port))
        if dst is not None and in_port is None:
            names = ", ".join(p.name for p in dst.inputs) or "none"
            found.append(UnknownPortError(edge.target, f"has no input '{edge.target_port}' (inputs: {names})",
                                          port=edge.target_port))
        if out_port is not None and in_port is not None and not out_port.type.fits(in_port.type):
            found.append(PortTypeError(
                edge.target,
                f"input '{in_port.name}' expects {in_port.type.name} but {edge.source}.{out_port.name} gives "
                f"{out_port.type.name}; connect a node that outputs {in_port.type.name}",
                port=in_port.name, other_node=edge.source))
        return found

    def _keys(self, graph: Graph, order: list[str], types, params) -> dict[str, str]:
        keys: dict[str, str] = {}
        for node_id in order:
            node = types.get(node_id)
            if node is None or node_id not in params:
                continue
            inputs = {}
            complete = True
            for edge in graph.incoming(node_id):
                if edge.source not in keys:
                    complete = False
                    break
                inputs[edge.target_port] = [keys[edge.source], edge.source_port]
            if not complete:
                continue
            p = params[node_id]
            try:
                fingerprint = node.fingerprint(p)
            except Exception as exc:  # a fingerprint must never stop validation
                fingerprint = f"unavailable:{type(exc).__name__}"
            payload = {"type": node.type, "version": node.version, "params": p.model_dump(mode="json"),
                       "fingerprint": fingerprint, "inputs": inputs}
            keys[node_id] = hashlib.sha256(canonical_json(payload).encode()).hexdigest()
        return keys

    def _infer(self, graph: Graph, order, types, params,
               broken: set[str]) -> tuple[list[GraphProblem], dict[str, dict[str, dict[str, Any]]]]:
        facts: dict[str, dict[str, dict[str, Any]]] = {}
        problems: list[GraphProblem] = []
        for node_id in order:
            node = types.get(node_id)
            if node is None or node_id in broken or node_id not in params:
                broken.add(node_id)
                continue
            incoming = graph.incoming(node_id)
            if any(e.source in broken for e in incoming):
                broken.add(node_id)
                continue
            known = {e.target_port: facts.get(e.source, {}).get(e.source_port, {}) for e in incoming}
            try:
                facts[node_id] = node.infer(params[node_id], known, node_id) or {}
            except ParamProblem as exc:
                broken.add(node_id)
                named = {exc.other_node, *exc.nodes} - {None}
                problems.append(ParamError(node_id, with_titles(str(exc), named, graph, types), param=exc.param,
                                           port=exc.port, other_node=exc.other_node))
                continue
            except Exception as exc:  # a bug in a node's infer() must not hide the other problems
                broken.add(node_id)
                problems.append(GraphProblem(node_id, f"could not check this node: {describe_exception(exc)}"))
                continue
            problems.extend(self._warnings(graph, types, node_id, params[node_id], known, problems))
        return problems, facts

    def _warnings(self, graph: Graph, types: dict[str, type[Node]], node_id: str, params: Any,
                  known: dict[str, Any], found: list[GraphProblem]) -> list[GraphProblem]:
        """A node's advice as warnings, each said once (a trainer and its output layer may both see
        a ReLU there); a failing ``warnings()`` is itself one, as it must not hide the rest."""
        try:
            advice = types[node_id].warnings(params, known, node_id, self.workspace)
        except Exception as exc:
            return [GraphWarning(node_id, f"could not give this node's advice: {describe_exception(exc)}")]
        said = {(p.node_id, p.param, p.port) for p in found if not p.blocking}
        warnings = []
        for item in advice:
            about = item.node or node_id
            if (about, item.param, item.port) not in said:
                said.add((about, item.param, item.port))
                message = with_titles(item.message, {about, node_id, *item.nodes}, graph, types)
                warnings.append(GraphWarning(about, message, param=item.param, port=item.port,
                                             other_node=node_id if about != node_id else None))
        return warnings


def _disabled(graph: Graph, order: list[str]) -> tuple[set[str], list[GraphProblem]]:
    """The disabled nodes and every node that needs one (directly or further down), and for each
    of the latter the input that waits: a run leaves them all out, and a run aimed at one of
    them is refused, naming that input."""
    off = {spec.id for spec in graph.nodes if spec.disabled}
    if not off:
        return off, []
    cause: dict[str, str] = {node_id: node_id for node_id in off}  # node -> the disabled node it waits for
    problems: list[GraphProblem] = []
    for node_id in order:
        if node_id in off:
            continue
        for edge in graph.incoming(node_id):
            if edge.source in off:
                root = cause[edge.source]
                why = "which is disabled" if root == edge.source else f"which cannot run while '{root}' is disabled"
                problems.append(DisabledInputError(
                    node_id, f"input '{edge.target_port}' needs {edge.source}.{edge.source_port}, {why}: enable "
                             f"'{root}', or disable this node too", port=edge.target_port, other_node=root))
                off.add(node_id)
                cause[node_id] = root
                break
    return off, problems


def raise_blocking(checked: Checked, needed: list[str]) -> None:
    blocking = [p for p in checked.problems if p.blocking and (p.node_id is None or p.node_id in needed)]
    if blocking:
        raise GraphInvalid(blocking)


def with_titles(message: str, nodes: set[str], graph: Graph, types: dict[str, type[Node]]) -> str:
    """``message`` with each of ``nodes`` it quotes by id followed, the first time, by the title
    its card shows: 'formatter' (Resize + crop to 150×150×3)."""
    for node_id in sorted(nodes):
        quoted = f"'{node_id}'"
        if quoted not in message or not graph.has_node(node_id):
            continue
        spec = graph.node(node_id)
        title = card_title(types[node_id], spec.title, spec.params) if node_id in types else spec.title
        if title and title != node_id:
            message = message.replace(quoted, f"{quoted} ({title})", 1)
    return message


def path_values(node: type[Node], params: Any) -> dict[str, str]:
    """Value -> name of a node's path params, so a path refused at run time names its param."""
    found = {}
    for name in params_paths(node.Params):
        value = getattr(params, name, None)
        if isinstance(value, str):
            found.setdefault(value, name)
    return found


def _param_problems(spec: NodeSpec, exc: ValidationError) -> list[GraphProblem]:
    found = []
    for err in exc.errors():
        param = ".".join(str(p) for p in err["loc"]) or None
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown parameter"
        elif "input" in err and err["type"] != "missing":
            msg = f"{msg} (got {err['input']!r})"
        found.append(ParamError(spec.id, msg, param=param))
    return found


__all__ = ["Checked", "Checker", "path_values", "raise_blocking", "with_titles"]
