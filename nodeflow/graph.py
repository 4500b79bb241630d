"""The graph document: nodes (type id, params, position), edges and groups, saved as versioned JSON.

The document knows nothing of node types; checks that need the catalogue (unknown types,
ports, param values, port types) live in :mod:`nodeflow.checker`. Version 2 added groups and
the ``disabled`` flag; a version 1 file reads as a version 2 document without them.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from nodeflow.files import atomic_write_text

FORMAT = "nodeflow.graph"
VERSION = 2
#: the versions this nodeflow reads; older ones are brought up to VERSION as they load
READABLE_VERSIONS = (1, 2)
NODE_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$"


class GraphFileError(ValueError):
    """A graph document that cannot be read; the message says where and what."""


def _addressable(value: str) -> str:
    if not re.fullmatch(NODE_ID_PATTERN, value):
        raise ValueError(f"'{value}' is not a usable id: start with a letter or _, then letters, digits,"
                         " _ or -, at most 64 characters (ids are used by --target and --set)")
    return value


def fresh_id(taken: Any, stem: str) -> str:
    """A usable id made from ``stem`` (a type's name, a title, a copied node's id) that is not in
    ``taken``: ``stem``, else ``stem_2``, ``stem_3``..."""
    stem = "".join(c if (c.isascii() and c.isalnum()) or c in "_-" else "_" for c in stem.strip())[:56] or "node"
    if not stem[0].isalpha():
        stem = f"n_{stem}"
    if stem not in taken:
        return stem
    return next(f"{stem}_{i}" for i in range(2, 100_000) if f"{stem}_{i}" not in taken)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Position(_Strict):
    x: float = Field(0.0, allow_inf_nan=False)
    y: float = Field(0.0, allow_inf_nan=False)


class NodeSpec(_Strict):
    id: str = Field(description="Unique id, used by --target and --set")
    type: str = Field(min_length=1, max_length=200)
    params: dict[str, Any] = Field(default_factory=dict)
    position: Position = Field(default_factory=Position)
    title: str | None = Field(None, max_length=200, description="Label shown instead of the type's title")
    disabled: bool | None = Field(None, description=(
        "true: bypassed; a run leaves this node out, and the nodes that need its output too"))

    @field_validator("id")
    @classmethod
    def _id_is_addressable(cls, value: str) -> str:
        return _addressable(value)

    @field_validator("params")
    @classmethod
    def _params_are_json(cls, value: dict[str, Any]) -> dict[str, Any]:
        """NaN and Infinity are not JSON: refused here, naming the param, instead of reading back
        as null."""
        def walk(item: Any, where: str) -> None:
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"param '{where}' is {item}, which is not a number a graph may hold; "
                                 "give a finite number")
            if isinstance(item, dict):
                for key, inner in item.items():
                    walk(inner, f"{where}.{key}")
            elif isinstance(item, list):
                for index, inner in enumerate(item):
                    walk(inner, f"{where}[{index}]")

        for name, item in value.items():
            walk(item, name)
        return value


class Edge(_Strict):
    source: str
    source_port: str
    target: str
    target_port: str

    def key(self) -> tuple[str, str, str, str]:
        return (self.source, self.source_port, self.target, self.target_port)

    def __str__(self) -> str:
        return f"{self.source}.{self.source_port} -> {self.target}.{self.target_port}"


class GroupSpec(_Strict):
    """Nodes shown together as one part of the graph (the template's "model", "data", ...). A
    group is drawn only: it changes no node, no edge and no cache key."""

    id: str = Field(description="Unique among the groups")
    title: str = Field("Group", max_length=200)
    members: list[str] = Field(min_length=1, max_length=10_000, description="Ids of the nodes in the group")
    collapsed: bool = Field(False, description="Drawn as one card with the group's external ports")
    position: Position = Field(default_factory=Position, description="Where the collapsed card sits")

    @field_validator("id")
    @classmethod
    def _id_is_addressable(cls, value: str) -> str:
        return _addressable(value)


class Graph(_Strict):
    format: Literal["nodeflow.graph"] = FORMAT
    version: Literal[2] = VERSION
    name: str = Field("untitled", max_length=200)
    description: str = Field("", max_length=10_000)
    nodes: list[NodeSpec] = Field(default_factory=list, max_length=10_000)
    edges: list[Edge] = Field(default_factory=list, max_length=50_000)
    groups: list[GroupSpec] = Field(default_factory=list, max_length=10_000)
    #: edges by target, built on first use (documents are not changed in place once made)
    _incoming: dict[str, list[Edge]] | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _check_references(self) -> Graph:
        problems: list[str] = []
        seen: set[str] = set()
        for node in self.nodes:
            if node.id in seen:
                problems.append(f"duplicate node id '{node.id}'")
            seen.add(node.id)
        fed: dict[tuple[str, str], Edge] = {}
        for edge in self.edges:
            for end in (edge.source, edge.target):
                if end not in seen:
                    problems.append(f"edge {edge} refers to unknown node '{end}'")
            slot = (edge.target, edge.target_port)
            if slot in fed:
                problems.append(f"input {edge.target}.{edge.target_port} has two incoming edges ({fed[slot]} and {edge})")
            fed[slot] = edge
        grouped: dict[str, str] = {}
        group_ids: set[str] = set()
        for group in self.groups:
            if group.id in group_ids:
                problems.append(f"duplicate group id '{group.id}'")
            group_ids.add(group.id)
            for member in group.members:
                if member not in seen:
                    problems.append(f"group '{group.id}' refers to unknown node '{member}'")
                elif member in grouped:
                    problems.append(f"node '{member}' is in two groups ('{grouped[member]}' and '{group.id}')")
                grouped[member] = group.id
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # -- lookup -----------------------------------------------------------------------------
    def node(self, node_id: str) -> NodeSpec:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(f"no node with id '{node_id}' (ids: {', '.join(n.id for n in self.nodes)})")

    def has_node(self, node_id: str) -> bool:
        return any(n.id == node_id for n in self.nodes)

    def incoming(self, node_id: str) -> list[Edge]:
        if self._incoming is None:
            index: dict[str, list[Edge]] = {}
            for edge in self.edges:
                index.setdefault(edge.target, []).append(edge)
            self._incoming = index
        return list(self._incoming.get(node_id, ()))

    # -- (de)serialisation ----------------------------------------------------------------------
    def dumps(self) -> str:
        return json.dumps(self.model_dump(mode="json", exclude_none=True), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def loads(cls, text: str | bytes, source: str = "<graph>") -> Graph:
        try:
            data = json.loads(text, parse_constant=_refuse_constant)
        except ValueError as exc:  # bad syntax, bad UTF-8, NaN or Infinity
            raise GraphFileError(f"{source}: not valid JSON ({exc})") from None
        except RecursionError:
            raise GraphFileError(f"{source}: not a graph document (nested too deeply to read)") from None
        return cls.from_data(data, source)

    @classmethod
    def from_data(cls, data: Any, source: str = "<graph>") -> Graph:
        if not isinstance(data, dict):
            raise GraphFileError(f"{source}: a graph document is a JSON object, got {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise GraphFileError(f"{source}: 'format' must be \"{FORMAT}\", got {data.get('format')!r}")
        if data.get("version") not in READABLE_VERSIONS or isinstance(data.get("version"), bool):
            readable = " and ".join(map(str, READABLE_VERSIONS))
            raise GraphFileError(
                f"{source}: unsupported version {data.get('version')!r}; this nodeflow reads versions {readable}"
            )
        data = _upgrade(data)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise GraphFileError(f"{source}: {_explain(exc, data)}") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Graph:
        """Read a graph file. Anything but a regular file is refused before a byte is read: a FIFO
        or a device would block forever or never end (opened without blocking, to ask)."""
        path = Path(path)
        try:
            with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as handle:
                if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                    raise GraphFileError(f"{path}: not a regular file (a FIFO or a device); give a graph file")
                text = handle.read()
        except OSError as exc:
            raise GraphFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
        return cls.loads(text, str(path))

    def save(self, path: str | os.PathLike[str]) -> None:
        atomic_write_text(Path(path), self.dumps())


def _upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A readable document of an older version as the current version says it. Version 1 had no
    groups and no disabled nodes, so it is a version 2 document as it stands."""
    if data["version"] == 1:
        data = {**data, "version": 2}
    return data


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (a graph's numbers must be finite)")


def _explain(exc: ValidationError, data: dict[str, Any]) -> str:
    """Turn pydantic's errors into lines that name the node id rather than a list index."""
    lines = []
    for err in exc.errors():
        loc = list(err["loc"])
        where = ".".join(str(p) for p in loc) or "document"
        if len(loc) >= 2 and loc[0] == "nodes" and isinstance(loc[1], int):
            nodes = data.get("nodes") or []
            node_id = nodes[loc[1]].get("id") if loc[1] < len(nodes) and isinstance(nodes[loc[1]], dict) else None
            rest = ".".join(str(p) for p in loc[2:])
            where = f"node '{node_id}'" + (f" field '{rest}'" if rest else "") if node_id else where
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {msg}")
    return "; ".join(lines)
