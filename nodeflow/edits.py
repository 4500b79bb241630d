"""The edit operations a document takes, as typed records: what :meth:`Session.edits` applies and
what ``POST /api/edit`` publishes in its OpenAPI schema. A wrong argument is refused in these
terms (``ops.0.set_params.id: Field required``), before anything is changed."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

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
