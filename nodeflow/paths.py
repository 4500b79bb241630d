"""What a path param means, and keeping paths from the browser or the HTTP API inside the allowed folders.

Node params that name files or folders are declared with :data:`FolderPath` / :data:`FilePath`
(or ``path_field``; :data:`OutputFolder` for a folder a node writes into). A relative value is
relative to the workspace (a project's folder in class mode; ``--workspace`` or the default one for
the editor and the command line), never to the folder the process was started in: :func:`resolve`
is the one place that says so, and the executor hands every node its path params resolved by it,
so the CLI, the editor, worker processes, sweeps and the exported script read the same folder
whichever folder they were started from. Pickers store what lies inside the workspace relative to
it and anything else absolute (:func:`stored_form`). Graph files written while relative paths
were taken from the starting folder are rewritten once by :func:`settle_graph`.

A session that serves the editor also checks every such value, after resolving symlinks, against
its allowed roots (the workspace plus any the user named when starting it). The command line is
the user's own shell, so it is not restricted.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field

PATH_KEY = "x-nodeflow-path"


def path_field(kind: str = "folder", keywords: Iterable[str] = ()) -> Any:
    """Mark a str param as a path (``folder`` or ``file``). ``keywords`` are values that are not
    paths (e.g. ``"imagenet"`` for a weights param)."""
    return Field(json_schema_extra={PATH_KEY: kind, "x-nodeflow-keywords": list(keywords)})


FolderPath = Annotated[str, path_field("folder")]
FilePath = Annotated[str, path_field("file")]
#: a folder a node writes into: it need not exist before the run (validation does not ask)
OutputFolder = Annotated[str, path_field("output")]


class PathNotAllowed(ValueError):
    pass


def confine(value: str, roots: Iterable[Path], base: Path) -> Path:
    """``value`` resolved (relative paths against ``base``, symlinks followed); raises
    PathNotAllowed unless it lies inside one of ``roots``."""
    if not isinstance(value, str) or "\0" in value:
        raise PathNotAllowed(f"{value!r} is not a usable path (it contains a NUL byte)" if isinstance(value, str)
                             else f"a path must be a string, got {type(value).__name__}")
    roots = [Path(r).resolve() for r in roots]
    candidate = Path(os.path.expanduser(value))
    if not candidate.is_absolute():
        candidate = base / candidate
    try:
        resolved = candidate.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop, a name too long
        raise PathNotAllowed(f"'{value}' cannot be resolved ({exc})") from None
    if _inside(resolved, roots):
        return resolved
    allowed = ", ".join(str(r) for r in roots)
    raise PathNotAllowed(f"'{value}' is outside the folders this editor may use ({allowed})")


def _inside(resolved: Path, roots: list[Path]) -> bool:
    return any(resolved == root or resolved.is_relative_to(root) for root in roots)


def escaping(files: Iterable[Path], roots: Iterable[Path]) -> list[Path]:
    """The files among ``files`` that resolve (symlinks followed) outside every one of ``roots``:
    a link inside an allowed folder that points elsewhere."""
    roots = [Path(r).resolve() for r in roots]
    return [Path(file) for file in files if not _inside(Path(os.path.realpath(file)), roots)]


def path_params(schema: dict[str, Any]) -> dict[str, tuple[str, list[str]]]:
    """Param name -> (kind, keywords) for the params a node's JSON schema marks as paths."""
    found = {}
    for name, prop in schema.get("properties", {}).items():
        for option in [prop, *prop.get("anyOf", [])]:
            if PATH_KEY in option or PATH_KEY in prop:
                source = option if PATH_KEY in option else prop
                found[name] = (source[PATH_KEY], list(source.get("x-nodeflow-keywords", [])))
                break
    return found


@functools.cache
def params_paths(params: type) -> dict[str, tuple[str, list[str]]]:
    """:func:`path_params` of a node's ``Params`` class, worked out once per class."""
    return path_params(params.model_json_schema())


def path_problems(params_class: type, params: dict[str, Any], roots: Iterable[Path],
                  base: Path) -> list[tuple[str, str]]:
    """(param, why) for each path param of ``params`` (values of a node's ``Params`` class) that
    leads outside ``roots`` as the file system stands now."""
    roots = list(roots)
    problems = []
    for name, (_, keywords) in params_paths(params_class).items():
        value = params.get(name)
        if not isinstance(value, str) or not value or value in keywords:
            continue
        try:
            confine(value, roots, base)
        except PathNotAllowed as exc:
            problems.append((name, str(exc)))
    return problems


# -- what a path param means ------------------------------------------------------------------------


def resolve(value: str, workspace: Path) -> Path:
    """A path param's value as an absolute path: ``~`` expanded, a relative path taken from
    ``workspace``, whatever folder the process was started in. Links are not followed (a session
    follows them in :func:`confine`), so ``..`` keeps its meaning next to a link."""
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else Path(os.path.expanduser(workspace)).absolute() / path


def stored_form(path: Path, workspace: Path) -> str:
    """How a graph stores the absolute ``path`` (a picked folder, a path typed in a shell): relative to
    the workspace when it lies inside it, so a project keeps working when its folder is moved or
    served from elsewhere; else absolute. Inside means inside as named, or once links are followed."""
    path, workspace = Path(path), Path(os.path.expanduser(workspace)).absolute()
    if path.is_relative_to(workspace) and ".." not in path.relative_to(workspace).parts:
        return path.relative_to(workspace).as_posix() or "."
    try:
        real, home = path.resolve(), workspace.resolve()
    except (OSError, RuntimeError):
        return str(path)
    return real.relative_to(home).as_posix() if real.is_relative_to(home) else str(path)


def _values(params: Any) -> Iterator[tuple[str, str, str]]:
    """(name, kind, value) of each path param of a node's validated ``params`` that names a path:
    set, and not one of its keywords."""
    for name, (kind, keywords) in params_paths(type(params)).items():
        value = getattr(params, name, None)
        if isinstance(value, str) and value and value not in keywords:
            yield name, kind, value


def resolved_params(params: Any, workspace: Path) -> Any:
    """A node's validated ``params`` with each relative or ``~`` path made absolute by :func:`resolve`:
    what every node method sees, so its file checks, fingerprint and run read the same folder from any
    starting folder, and a cache key depends on the folder rather than on how it was written
    (``/data/x/`` is ``/data/x``). An absolute path as :class:`~pathlib.Path` writes it stays exactly
    as it was, so graphs that named absolute paths keep their cache keys."""
    changes = {name: str(resolve(value, workspace)) for name, _, value in _values(params)}
    changes = {name: value for name, value in changes.items() if value != getattr(params, name)}
    return params.model_copy(update=changes) if changes else params


def missing_paths(params: Any, workspace: Path, roots: Iterable[Path] | None = None,
                  written: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
    """(param, why) for each path param of ``params`` that names nothing on disk (a folder that is not
    a folder, a file that is not a file): what a run would fail on. Output folders are not asked (a run
    makes them); with ``roots``, neither is a path outside them (the session refuses it as outside,
    without saying whether something is there). ``written``: the params as the graph has them (before
    :func:`resolved_params`), so the message quotes the user's own words."""
    roots = None if roots is None else list(roots)
    found = []
    for name, kind, resolved in _values(params):
        if kind == "output":
            continue
        value = (written or {}).get(name, resolved)
        value = value if isinstance(value, str) and value else resolved
        path = resolve(value, workspace)
        if roots is not None:
            try:
                confine(value, roots, workspace)
            except PathNotAllowed:
                continue
        wanted = "file" if kind == "file" else "folder"
        if _is(path, os.path.isfile if wanted == "file" else os.path.isdir):
            continue
        where = f"'{value}'" if Path(os.path.expanduser(value)).is_absolute() else \
            f"'{value}' (relative paths start at the workspace: '{path}')"
        found.append((name, f"{where} is not a {wanted}" if _exists(path) else f"{wanted} {where} does not exist"))
    return found


# -- graphs written while relative paths started at the process's folder ------------------------------


@dataclass(frozen=True)
class Rewritten:
    """One path param that :func:`settle_graph` rewrote, and the sentence that tells the user."""

    node_id: str
    param: str
    was: str
    now: str
    note: str


def settle_graph(graph: Any, registry: Any, workspace: Path, old_base: Path | None,
                 roots: Iterable[Path] | None = None) -> tuple[Any, list[Rewritten]]:
    """``graph`` (a :class:`nodeflow.graph.Graph`) with each relative path param that names nothing in
    the workspace but names something from ``old_base`` (the folder this process was started in, from
    which relative paths used to be taken: :func:`started_in`) rewritten to its :func:`stored_form`;
    and what was rewritten. A value that still names nothing from there but passes through the
    workspace's own folder names (``users/ana/proj/data/x``, written from a folder above the project
    by a server since started elsewhere) is rewritten to the part inside the workspace. With ``roots``
    (a session that serves the editor), only a folder inside them is taken. Anything else is left as
    it is (validation names it). Returns ``graph`` itself when nothing changes."""
    from nodeflow.graph import Graph

    workspace = Path(os.path.expanduser(workspace)).absolute()
    roots = None if roots is None else list(roots)
    changed: list[Rewritten] = []
    data = None
    for index, spec in enumerate(graph.nodes):
        if spec.type not in registry:
            continue
        paths = params_paths(registry.get(spec.type).Params)
        for name, (_, keywords) in paths.items():
            value = spec.params.get(name)
            if not isinstance(value, str) or not value or value in keywords or value.startswith("~") \
                    or os.path.isabs(value) or "\0" in value or _exists(workspace / value):
                continue
            now, how = _found_elsewhere(value, workspace, old_base)
            if now is None or roots is not None and not _allowed(now, roots, workspace):
                continue
            if data is None:
                data = graph.model_dump(mode="json")
            data["nodes"][index]["params"][name] = now
            changed.append(Rewritten(spec.id, name, value, now, f"{spec.id}.{name}: '{value}' {how}; relative paths "
                                     f"now start at the workspace ({workspace}), so it was rewritten to '{now}'"))
    if data is None:
        return graph, []
    return Graph.from_data(data, "graph with settled paths"), changed


def settle_file(path: Path, registry: Any, workspace: Path, old_base: Path | None,
                roots: Iterable[Path] | None = None) -> str:
    """Rewrite the graph file at ``path`` as :func:`settle_graph` says, once, so the next start from
    any folder reads it as meant; a sentence saying what became of the file ("" when nothing needed
    rewriting). A file that cannot be read or written is left as it is, and the sentence says so."""
    from nodeflow.graph import Graph, GraphFileError

    try:
        graph = Graph.load(path)
    except GraphFileError:
        return ""
    settled, rewritten = settle_graph(graph, registry, workspace, old_base, roots)
    if not rewritten:
        return ""
    try:
        settled.save(path)
    except OSError as exc:
        return f"{path} could not be rewritten ({exc.strerror or exc}): save the graph to keep these paths."
    return f"{path} was rewritten with {'this path' if len(rewritten) == 1 else 'these paths'}."


def started_in() -> Path | None:
    """The folder this process was started in, from which relative paths used to be taken (None when
    it has been removed since): what :func:`settle_graph` tries an old relative path from."""
    try:
        return Path.cwd()
    except OSError:
        return None


def _allowed(value: str, roots: list[Path], workspace: Path) -> bool:
    try:
        confine(value, roots, workspace)
    except PathNotAllowed:
        return False
    return True


def _found_elsewhere(value: str, workspace: Path, old_base: Path | None) -> tuple[str | None, str]:
    if old_base is not None and _exists(Path(old_base) / value):
        return stored_form(Path(old_base).absolute() / value, workspace), \
            "was read from the folder nodeflow was started in"
    parts = [p for p in Path(value).parts if p != ".."]
    own = workspace.parts
    for k in range(min(len(parts) - 1, len(own) - 1), 0, -1):
        inside = Path(*parts[k:])
        if tuple(parts[:k]) == own[-k:] and _exists(workspace / inside):
            return inside.as_posix(), "named this workspace's folder from the folder a server used to be started in"
    return None, ""


def _exists(path: Path) -> bool:
    return _is(path, os.path.exists)


def _is(path: Path, test: Any) -> bool:
    try:
        return test(path)
    except (OSError, ValueError):  # a name too long, a NUL byte
        return False
