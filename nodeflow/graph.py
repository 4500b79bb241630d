"""The graph document: nodes (type id, params, position) and edges, saved as versioned JSON.

The document knows nothing of node types; checks that need the catalogue (unknown types,
ports, param values, port types) live in :mod:`nodeflow.executor`.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

FORMAT = "nodeflow.graph"
VERSION = 1
NODE_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$"


class GraphFileError(ValueError):
    """A graph document that cannot be read; the message says where and what."""


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

    @field_validator("id")
    @classmethod
    def _id_is_addressable(cls, value: str) -> str:
        if not re.fullmatch(NODE_ID_PATTERN, value):
            raise ValueError(f"'{value}' is not a usable id: start with a letter or _, then letters, digits,"
                             " _ or -, at most 64 characters (ids are used by --target and --set)")
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


class Graph(_Strict):
    format: Literal["nodeflow.graph"] = FORMAT
    version: Literal[1] = VERSION
    name: str = Field("untitled", max_length=200)
    description: str = Field("", max_length=10_000)
    nodes: list[NodeSpec] = Field(default_factory=list, max_length=10_000)
    edges: list[Edge] = Field(default_factory=list, max_length=50_000)

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
        return [e for e in self.edges if e.target == node_id]

    # -- (de)serialisation ----------------------------------------------------------------------
    def dumps(self) -> str:
        return json.dumps(self.model_dump(mode="json", exclude_none=True), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def loads(cls, text: str | bytes, source: str = "<graph>") -> Graph:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise GraphFileError(f"{source}: not valid JSON ({exc})") from None
        return cls.from_data(data, source)

    @classmethod
    def from_data(cls, data: Any, source: str = "<graph>") -> Graph:
        if not isinstance(data, dict):
            raise GraphFileError(f"{source}: a graph document is a JSON object, got {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise GraphFileError(f"{source}: 'format' must be \"{FORMAT}\", got {data.get('format')!r}")
        if data.get("version") != VERSION:
            raise GraphFileError(
                f"{source}: unsupported version {data.get('version')!r}; this nodeflow reads version {VERSION}"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise GraphFileError(f"{source}: {_explain(exc, data)}") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Graph:
        path = Path(path)
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise GraphFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
        return cls.loads(text, str(path))

    def save(self, path: str | os.PathLike[str]) -> None:
        atomic_write_text(Path(path), self.dumps())


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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` so that ``path`` holds either the old content or all of the new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
