"""The graph as one standalone script (``nodeflow export-script``, "Export as Python" in the editor).

Each node type writes its own part (:meth:`Node.script`); this module knows nothing of what the
parts do. It checks the graph, asks each node the run would compute for its part in the order the
graph runs them, passes each part what the parts before it gave for its inputs, and writes: a
docstring, the imports, the graph's params as named constants, the functions the parts share,
``main()`` with every part's statements (a node with no script form is a comment saying so), and
``main()``'s results printed as JSON.

Path params are written as the absolute paths they resolve to in the workspace the graph was
exported from (:func:`nodeflow.paths.resolve`), so the script reads the same folders from any
folder it is run in; each can be given anew on the script's command line (``--data`` for the
folder of the graph's one dataset), for a machine where the data lies elsewhere.
"""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodeflow.errors import GraphInvalid, describe_exception
from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodeflow.node import ParamProblem, Registry, ScriptContext, ScriptPart, card_title
from nodeflow.paths import params_paths

#: imports of these top-level modules are written after the standard library's
THIRD_PARTY = ("numpy", "PIL", "torch", "torchvision")
LINE = 110


@dataclass
class Exported:
    """The script, and what a person should know about it: the nodes left out (id -> why) and
    where the script knowingly differs from the graph's run."""

    text: str
    left_out: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PathOption:
    """A path constant of the script that its command line may set anew: ``--flag`` (and ``--data``
    for the folder of the graph's one dataset, when ``data``)."""

    constant: str
    where: str
    data: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.constant.lower().replace("_", "-")


def export_script(graph: Graph, registry: Registry, target: str | None = None,
                  workspace: Path | None = None) -> Exported:
    """The script of ``graph`` (of ``target`` and what it needs, when given), its relative paths taken
    from ``workspace`` (None: the folder this runs in, as for an executor without one) and written
    absolute. Raises GraphInvalid when the nodes it needs have errors, KeyError when ``target`` is no
    node of the graph."""
    executor = Executor(registry, workspace)
    checked = executor.check(graph)
    needed = executor.needed(checked, target)
    blocking = [p for p in checked.problems if p.blocking and (p.node_id is None or p.node_id in needed)]
    if blocking:
        raise GraphInvalid(blocking)
    constants: dict[str, tuple[Any, str]] = {}
    given: dict[str, dict[str, Any]] = {}  # node id -> what its part gave per output port
    parts: list[tuple[str, str, ScriptPart | None, str]] = []  # (id, header, part, why it was left out)
    left_out: dict[str, str] = {}
    for node_id in needed:
        spec, node = graph.node(node_id), checked.types[node_id]
        title = " ".join(card_title(node, spec.title, spec.params).split())  # one line: it becomes a comment
        header = f"{node_id}: {title} ({node.type})"
        missing = [e.source for e in graph.incoming(node_id) if e.source in left_out]
        part, why = None, ""
        if missing:
            why = f"it needs the output of {', '.join(repr(m) for m in dict.fromkeys(missing))}, left out above"
        else:
            inputs = {e.target_port: given[e.source].get(e.source_port) for e in graph.incoming(node_id)}
            facts = {e.target_port: checked.facts.get(e.source, {}).get(e.source_port, {})
                     for e in graph.incoming(node_id)}
            mine: dict[str, tuple[Any, str]] = {}
            try:
                part = node.script(ScriptContext(node_id, checked.params[node_id], facts, mine),
                                   checked.params[node_id], **inputs)
            except ParamProblem as exc:
                why = f"{node_id}.{exc.param}: {exc}" if exc.param else str(exc)
            except Exception as exc:  # a bug in one node's script form must not stop the others'
                why = f"its script form failed ({describe_exception(exc)})"
            else:
                why = "" if part is not None else "this node has no script form"
                if part is not None:  # its constants in the order its Params declare them
                    fields = list(type(checked.params[node_id]).model_fields)
                    constants.update(sorted(mine.items(), key=lambda item: fields.index(item[1][1].split(".", 1)[1])
                                            if item[1][1].split(".", 1)[1] in fields else len(fields)))
                    given[node_id] = dict(part.outputs)
        if part is None:
            left_out[node_id] = why
        parts.append((node_id, header, part, why))
    said: dict[str, list[str]] = {}  # a note that several nodes make is said once, naming them all
    for node_id, _, part, _ in parts:
        for note in part.notes if part is not None else ():
            said.setdefault(note, []).append(node_id)
    notes = [f"{', '.join(nodes)}: {note}" for note, nodes in said.items()]
    options = _path_options(checked, constants)
    return Exported(_write(graph, target, constants, parts, notes, options), left_out, notes)


def _path_options(checked: Any, constants: dict[str, tuple[Any, str]]) -> list[PathOption]:
    """The constants that hold a path param (set to a path): each an option of the script's command
    line. ``--data`` stands for the folder of a node with no inputs (a dataset) when there is one."""
    options = []
    for name, (value, where) in constants.items():
        node_id, _, param = where.partition(".")
        node = checked.types.get(node_id)
        kinds = params_paths(node.Params) if node is not None else {}
        if param in kinds and isinstance(value, str) and value and value not in kinds[param][1]:
            options.append(PathOption(name, where, kinds[param][0] == "folder" and not node.inputs))
    if sum(o.data for o in options) != 1:
        options = [PathOption(o.constant, o.where) for o in options]
    return options


def _write(graph: Graph, target: str | None, constants: dict[str, tuple[Any, str]],
           parts: list[tuple[str, str, ScriptPart | None, str]], notes: list[str],
           options: list[PathOption] = ()) -> str:
    done = [p for p in parts if p[2] is not None]
    imports = {line for _, _, part, _ in done for line in part.imports} | {"import json"}
    imports = sorted(imports | {"import argparse"} if options else imports, key=_import_order)
    functions: dict[str, str] = {}
    for node_id, _, part, _ in done:
        for source in part.functions:
            name = _defined_name(source)
            if functions.setdefault(name, source) != source:
                raise ValueError(f"two script parts define '{name}' differently (the second by '{node_id}')")
    setup = list(dict.fromkeys(line for _, _, part, _ in done for line in part.setup))
    out = [_docstring(graph, target, parts, notes), "", *_import_block(imports), "", ""]
    out += _constant_block(constants)
    for source in functions.values():
        out += ["", "", source.strip("\n")]
    out += ["", "", "def main():", '    """Run the graph\'s steps in its order; the metrics of each step by node id."""']
    out += [f"    {line}" for entry in setup for line in entry.splitlines()]
    out.append("    results = {}")
    for node_id, header, part, why in parts:
        out.append("")
        out.append(f"    # -- {header}")
        if part is None:
            out += [f"    # {line}" for line in textwrap.wrap(f"left out: {why}", LINE - 6)]
            continue
        out += [f"    {line}" if line.strip() else "" for line in part.code.strip("\n").splitlines()]
    out += ["    return results", "", "", 'if __name__ == "__main__":', *_arguments(options),
            "    print(json.dumps(main(), indent=1))", ""]
    return "\n".join(out)


def _arguments(options: list[PathOption]) -> list[str]:
    """The script's command line: each path constant may be given anew (the data on another machine),
    else the absolute path the graph was exported with stands."""
    if not options:
        return []
    lines = ['    parser = argparse.ArgumentParser(description="Run the graph\'s steps; paths default to those it '
             'was exported with.")']
    for option in options:
        flags = (['"--data"'] if option.data else []) + [json.dumps(option.flag)]
        what = "the dataset folder, " if option.data else ""
        helps = json.dumps(f"{what}{option.where} (default: {option.constant} above)")
        lines += [f"    parser.add_argument({', '.join(flags)}, dest={json.dumps(option.constant)}, metavar=\"PATH\",",
                  f"                        help={helps})"]
    lines.append("    given = parser.parse_args()")
    for option in options:
        name = option.constant
        lines += [f"    if given.{name} is not None:", f"        {name} = given.{name}"]
    return lines


def _docstring(graph: Graph, target: str | None, parts, notes: list[str]) -> str:
    order = " -> ".join(node_id for node_id, _, part, _ in parts if part is not None)
    text = [graph.name, ""]
    if graph.description:
        text += [*textwrap.wrap(graph.description, LINE - 4), ""]
    upto = f" (up to {target!r})" if target else ""
    text += textwrap.wrap(f"Written by `nodeflow export-script` from this graph{upto}: plain PyTorch and "
                          "torchvision, no nodeflow. The graph's params are the constants below; main() runs its "
                          f"steps in the graph's order: {order}.", LINE - 4)
    left = [(node_id, why) for node_id, _, part, why in parts if part is None]
    if left:
        text += ["", "Left out:"] + [f"- {node_id}: {why}" for node_id, why in left]
    if notes:
        text += ["", "Where this script differs from the graph's run:"]
        for note in notes:
            text += textwrap.wrap(note, LINE - 6, initial_indent="- ", subsequent_indent="  ")
    return '"""' + "\n".join(text).replace('"""', "'''").replace("\\", "\\\\") + '\n"""'


def _constant_block(constants: dict[str, tuple[Any, str]]) -> list[str]:
    lines = ["# The graph's parameters, by node and param (NODE_PARAM = node.param)."]
    node = None
    for name, (value, where) in constants.items():
        owner = where.split(".", 1)[0]
        if owner != node:
            lines.append(f"# {owner}")
            node = owner
        lines.append(f"{name} = {_literal(value)}")
    return lines


def _literal(value: Any) -> str:
    """A Python literal of a param's value (params are JSON: strings, numbers, booleans, null, lists
    and objects of them), strings in double quotes."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_literal(str(k))}: {_literal(v)}" for k, v in value.items()) + "}"
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    raise TypeError(f"a param of type {type(value).__name__} has no literal in a script")


def _import_order(line: str) -> tuple[bool, bool, str]:
    module = line.split()[1].split(".")[0]
    return (module in THIRD_PARTY, line.startswith("from "), line)


def _import_block(imports: list[str]) -> list[str]:
    block: list[str] = []
    for i, line in enumerate(imports):
        if i and _import_order(line)[0] != _import_order(imports[i - 1])[0]:
            block.append("")
        block.append(line)
    return block


def _defined_name(source: str) -> str:
    match = re.search(r"^(?:(?:def|class)\s+(\w+)|(\w+)\s*=)", source, re.MULTILINE)  # a function or a constant
    if match is None:
        raise ValueError(f"a script function's source defines nothing: {source[:60]!r}")
    return match.group(1) or match.group(2)
