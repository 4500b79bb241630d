"""The edit operations a document takes, as typed records, and how each applies: what
:meth:`nodeflow.document.Document.edits` applies and what ``POST /api/edit`` publishes in its OpenAPI schema. A wrong
argument is refused in these terms (``ops.0.set_params.id: Field required``), before anything is
changed; :func:`apply` changes a graph's JSON form, all ops or none."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from nodeflow.graph import Edge, Graph, NodeSpec, Position, fresh_id


class EditError(ValueError):
    """An edit the document cannot take; nothing was changed."""

#: the most operations one edit request may carry (a paste or a bulk move of a whole graph fits)
MAX_OPS = 10_000

NodeId = Annotated[str, Field(min_length=1, max_length=64, description="A node's id")]
PortName = Annotated[str, Field(min_length=1, max_length=200)]
Coordinate = Annotated[float, Field(allow_inf_nan=False, ge=-1e9, le=1e9)]


class _Op(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class PositionArg(_Op):
    x: Coordinate = 0.0
    y: Coordinate = 0.0


class AddNode(_Op):
    """Add a node of ``type``; ``id`` defaults to a fresh one made from the type's name."""

    op: Literal["add_node"]
    type: Annotated[str, Field(min_length=1, max_length=200)]
    id: NodeId | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    position: PositionArg | None = None


class RemoveNode(_Op):
    """Remove a node and every edge that touches it."""

    op: Literal["remove_node"]
    id: NodeId


class SetParams(_Op):
    """Change some params of a node (``replace``: set exactly these, the rest back to defaults)."""

    op: Literal["set_params"]
    id: NodeId
    params: dict[str, Any]
    replace: bool = False


class Move(_Op):
    """Move a node on the canvas."""

    op: Literal["move"]
    id: NodeId
    x: Coordinate
    y: Coordinate


class Rename(_Op):
    """Give a node a title of its own (null or "" goes back to its type's title)."""

    op: Literal["rename"]
    id: NodeId
    title: Annotated[str, Field(max_length=200)] | None = None


class Connect(_Op):
    """Connect an output to an input; an input takes one edge, so this replaces an earlier one."""

    op: Literal["connect"]
    source: NodeId
    source_port: PortName
    target: NodeId
    target_port: PortName


class Disconnect(_Op):
    """Remove the edge into ``target.target_port`` (``source`` and ``source_port`` may be given
    for readability; an input has one edge at most)."""

    op: Literal["disconnect"]
    target: NodeId
    target_port: PortName
    source: NodeId | None = None
    source_port: PortName | None = None


class Disable(_Op):
    """Bypass a node (``disabled``: false brings it back): a run leaves it out, and the nodes that
    need its output too, and validation says which input waits for it."""

    op: Literal["disable"]
    id: NodeId
    disabled: bool = True


GroupTitle = Annotated[str, Field(min_length=1, max_length=200)]


class Group(_Op):
    """Put nodes into a new group (``id`` defaults to a fresh one made from the title). A node is
    in one group at most; a group changes no node and no cache key."""

    op: Literal["group"]
    members: list[NodeId] = Field(min_length=1, max_length=MAX_OPS)
    id: NodeId | None = None
    title: GroupTitle = "Group"
    collapsed: bool = False
    position: PositionArg | None = Field(None, description="Where the collapsed card sits (default: the "
                                                           "members' top left corner)")


class Ungroup(_Op):
    """Dissolve a group; its nodes stay where they are."""

    op: Literal["ungroup"]
    id: NodeId


class SetGroup(_Op):
    """Rename, collapse or expand a group, or move its collapsed card; what is not given stays."""

    op: Literal["set_group"]
    id: NodeId
    title: GroupTitle | None = None
    collapsed: bool | None = None
    position: PositionArg | None = None


AnyOp = AddNode | RemoveNode | SetParams | Move | Rename | Connect | Disconnect | Disable | Group | Ungroup | SetGroup
EditOp = Annotated[AnyOp, Field(discriminator="op")]


class EditRequest(BaseModel):
    """Several edits applied as one undo step, all or nothing."""

    model_config = ConfigDict(extra="forbid")
    ops: list[EditOp] = Field(max_length=MAX_OPS)


class RunRequest(BaseModel):
    """Run ``target`` and the ancestors it needs, or every node when it is null."""

    model_config = ConfigDict(extra="forbid")
    target: NodeId | None = None


OPS: TypeAdapter[list[EditOp]] = TypeAdapter(list[EditOp])


def parse_ops(ops: Any) -> list[AnyOp]:
    """Typed ops from their JSON form; raises ValueError naming the op and the field."""
    if isinstance(ops, list) and len(ops) > MAX_OPS:
        raise ValueError(f"at most {MAX_OPS} ops per edit, got {len(ops)}")
    try:
        return OPS.validate_python(ops)
    except ValidationError as exc:
        raise ValueError(explain(exc, "ops")) from None


def explain(exc: ValidationError, prefix: str = "") -> str:
    lines = []
    for err in exc.errors()[:10]:
        where = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "not an argument of this op"
        elif err["type"] == "union_tag_invalid":
            msg = f"unknown op; the ops are {', '.join(OP_NAMES)}"
        lines.append(f"{where}: {msg}")
    more = len(exc.errors()) - 10
    return "; ".join(lines) + (f"; and {more} more" if more > 0 else "")


OP_NAMES = ("add_node", "remove_node", "set_params", "move", "rename", "connect", "disconnect", "disable", "group",
            "ungroup", "set_group")


# -- applying ops ---------------------------------------------------------------------------------------
# Each takes the graph's JSON form, its nodes by id (``index``), the op and the catalogue.

def _add_node(data: dict, index: dict, op: AddNode, registry: Any) -> None:
    node_cls = registry.get(op.type)
    node_id = op.id or fresh_id(index, op.type.rsplit(".", 1)[-1])
    if node_id in index:
        raise EditError(f"there is already a node with id '{node_id}'")
    position = Position(**(op.position.model_dump() if op.position else {}))
    node = NodeSpec(id=node_id, type=node_cls.type, params=op.params, position=position).model_dump(mode="json")
    data["nodes"].append(node)
    index[node_id] = node


def _remove_node(data: dict, index: dict, op: RemoveNode, registry: Any) -> None:
    _find(index, op.id)
    del index[op.id]
    data["nodes"] = [n for n in data["nodes"] if n["id"] != op.id]
    data["edges"] = [e for e in data["edges"] if op.id not in (e["source"], e["target"])]
    for group in data.get("groups", []):  # a group that loses its last node goes too
        group["members"] = [m for m in group["members"] if m != op.id]
    data["groups"] = [g for g in data.get("groups", []) if g["members"]]


def _set_params(data: dict, index: dict, op: SetParams, registry: Any) -> None:
    node = _find(index, op.id)
    merged = dict(op.params) if op.replace else {**node.get("params", {}), **op.params}
    try:
        registry.get(node["type"]).Params.model_validate(merged)
    except ValidationError as exc:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise EditError(f"{op.id}: {reasons}") from None
    node["params"] = merged


def _move(data: dict, index: dict, op: Move, registry: Any) -> None:
    _find(index, op.id)["position"] = {"x": op.x, "y": op.y}


def _rename(data: dict, index: dict, op: Rename, registry: Any) -> None:
    _find(index, op.id)["title"] = op.title or None


def _connect(data: dict, index: dict, op: Connect, registry: Any) -> None:
    src = registry.get(_find(index, op.source)["type"])
    dst = registry.get(_find(index, op.target)["type"])
    out_port, in_port = src.output_port(op.source_port), dst.input_port(op.target_port)
    if out_port is None or in_port is None:
        raise EditError(f"no such port: {op.source}.{op.source_port} -> {op.target}.{op.target_port}")
    if not out_port.type.fits(in_port.type):
        raise EditError(f"{op.target}.{op.target_port} expects {in_port.type.name}, "
                        f"{op.source}.{op.source_port} gives {out_port.type.name}")
    _disconnect(data, index, op, registry)  # an input takes one edge: a new connection replaces the old one
    data["edges"].append(Edge(source=op.source, source_port=op.source_port, target=op.target,
                              target_port=op.target_port).model_dump())


def _disconnect(data: dict, index: dict, op: Connect | Disconnect, registry: Any) -> None:
    data["edges"] = [e for e in data["edges"] if not (e["target"] == op.target and e["target_port"] == op.target_port)]


def _disable(data: dict, index: dict, op: Disable, registry: Any) -> None:
    _find(index, op.id)["disabled"] = True if op.disabled else None


def _find_group(data: dict, group_id: str) -> dict:
    group = next((g for g in data.setdefault("groups", []) if g["id"] == group_id), None)
    if group is None:
        raise EditError(f"no group with id '{group_id}'")
    return group


def _group(data: dict, index: dict, op: Group, registry: Any) -> None:
    groups = data.setdefault("groups", [])
    members = list(dict.fromkeys(op.members))
    owner = {m: g["id"] for g in groups for m in g["members"]}
    for member in members:
        _find(index, member)
        if member in owner:
            raise EditError(f"node '{member}' is already in group '{owner[member]}': ungroup it first")
    group_id = op.id or fresh_id({g["id"] for g in groups}, op.title.lower())
    if any(g["id"] == group_id for g in groups):
        raise EditError(f"there is already a group with id '{group_id}'")
    if op.position is not None:
        position = op.position.model_dump()
    else:
        position = {"x": min(index[m]["position"]["x"] for m in members),
                    "y": min(index[m]["position"]["y"] for m in members)}
    groups.append({"id": group_id, "title": op.title, "members": members, "collapsed": op.collapsed,
                   "position": position})


def _ungroup(data: dict, index: dict, op: Ungroup, registry: Any) -> None:
    _find_group(data, op.id)
    data["groups"] = [g for g in data["groups"] if g["id"] != op.id]


def _set_group(data: dict, index: dict, op: SetGroup, registry: Any) -> None:
    group = _find_group(data, op.id)
    if op.title is not None:
        group["title"] = op.title
    if op.collapsed is not None:
        group["collapsed"] = op.collapsed
    if op.position is not None:
        group["position"] = op.position.model_dump()


APPLY: dict[str, Callable[[dict, dict, Any, Any], None]] = {
    "add_node": _add_node, "remove_node": _remove_node, "set_params": _set_params, "move": _move,
    "rename": _rename, "connect": _connect, "disconnect": _disconnect, "disable": _disable, "group": _group,
    "ungroup": _ungroup, "set_group": _set_group}


def apply(graph: Graph, ops: list[Any], registry: Any) -> Graph:
    """``graph`` with ``ops`` (their JSON form, or typed records) applied, as a new document; raises
    EditError naming the op (when there are several) and what is wrong, and nothing changes."""
    try:
        typed = parse_ops(ops)
    except ValueError as exc:
        raise EditError(str(exc)) from None
    data = graph.model_dump(mode="json")
    index = {node["id"]: node for node in data["nodes"]}
    for number, op in enumerate(typed):
        where = f"ops.{number} ({op.op}): " if len(typed) > 1 else ""  # which of several went wrong
        try:
            APPLY[op.op](data, index, op, registry)
        except EditError as exc:
            raise EditError(f"{where}{exc}") from None
        except (KeyError, ValueError) as exc:
            raise EditError(f"{where}{exc.args[0] if exc.args else exc}") from None
    try:
        return Graph.from_data(data, "edit")
    except ValueError as exc:
        raise EditError(str(exc)) from None


def _find(index: dict, node_id: str) -> dict:
    node = index.get(node_id)
    if node is None:
        raise EditError(f"no node with id '{node_id}'")
    return node
