"""Keep file paths that come from the browser or the HTTP API inside the allowed folders.

Node params that name files or folders are declared with :data:`FolderPath` / :data:`FilePath`
(or ``path_field``); a session that serves the editor checks every such value, after resolving
symlinks, against its allowed roots (the workspace plus any the user named when starting it).
The command line is the user's own shell, so it is not restricted.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

PATH_KEY = "x-nodeflow-path"


def path_field(kind: str = "folder", keywords: Iterable[str] = ()) -> Any:
    """Mark a str param as a path (``folder`` or ``file``). ``keywords`` are values that are not
    paths (e.g. ``"imagenet"`` for a weights param)."""
    return Field(json_schema_extra={PATH_KEY: kind, "x-nodeflow-keywords": list(keywords)})


FolderPath = Annotated[str, path_field("folder")]
FilePath = Annotated[str, path_field("file")]


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
