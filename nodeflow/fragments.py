"""Parts of graphs as graph documents: copy and paste, duplicate, and the user's group library.

A selection becomes a small graph (its nodes, the edges between them, the groups wholly inside
it), and pasting one turns it into edit ops with fresh ids. The clipboard holds a plain graph
document, so a copy from one tab pastes into another tab, another graph or another editor, and a
graph file's text pastes as a whole. A group saved to the palette is the same kind of document, in
``WORKSPACE/groups/``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from nodeflow.graph import Graph, GraphFileError, fresh_id
from nodeflow.recent import is_graph_file

LIBRARY_FOLDER = "groups"

#: a card's width on the canvas (the editor's style fixes it) and a height few cards exceed (one
#: with a three-line warning), in canvas units: the room a duplicate keeps clear
CARD_WIDTH, CARD_HEIGHT = 200.0, 340.0
#: the space a duplicate leaves between itself and the cards it avoids
GAP = 40.0


class NothingToPaste(ValueError):
    """The clipboard holds no graph document (or one without nodes); the message says so."""


def fragment_of(graph: Graph, ids: list[str]) -> Graph:
    """The part of ``graph`` made of the nodes ``ids``: those nodes, the edges between them and the
    groups all of whose members are among them (edges to nodes outside are left behind)."""
    wanted = set(ids) & {n.id for n in graph.nodes}
    return Graph(
        name=graph.name,
        nodes=[n for n in graph.nodes if n.id in wanted],
        edges=[e for e in graph.edges if e.source in wanted and e.target in wanted],
        groups=[g for g in graph.groups if set(g.members) <= wanted],
    )


def read_fragment(text: Any) -> Graph:
    """The graph document a clipboard's text holds; NothingToPaste says why there is none."""
    if not isinstance(text, str) or not text.lstrip().startswith("{"):
        raise NothingToPaste("the clipboard holds no nodeflow nodes (copy some with Ctrl+C first)")
    try:
        fragment = Graph.loads(text, "clipboard")
    except GraphFileError as exc:
        raise NothingToPaste(f"the clipboard holds no nodeflow nodes: {exc}") from None
    if not fragment.nodes:
        raise NothingToPaste("the clipboard's graph has no nodes")
    return fragment


def paste_ops(fragment: Graph, graph: Graph,
              at: dict[str, float] | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Edit ops that add ``fragment`` to ``graph`` (one undo step when applied together), and the
    ids its nodes get. Ids already taken get a suffix; ``at`` puts the fragment's top left corner
    there, else it lands beside or below where it was, clear of the cards there (a duplicate beside
    its original, see :func:`clear_shift`)."""
    taken = {n.id for n in graph.nodes}
    renamed: dict[str, str] = {}
    for node in fragment.nodes:
        renamed[node.id] = fresh_id(taken, _stem(node.id)) if node.id in taken else node.id
        taken.add(renamed[node.id])
    left = min(n.position.x for n in fragment.nodes)
    top = min(n.position.y for n in fragment.nodes)
    dx, dy = (at["x"] - left, at["y"] - top) if at is not None else clear_shift(fragment, graph)
    ops: list[dict[str, Any]] = []
    for node in fragment.nodes:
        ops.append({"op": "add_node", "id": renamed[node.id], "type": node.type, "params": node.params,
                    "position": {"x": round(node.position.x + dx), "y": round(node.position.y + dy)}})
        if node.title:
            ops.append({"op": "rename", "id": renamed[node.id], "title": node.title})
        if node.disabled:
            ops.append({"op": "disable", "id": renamed[node.id]})
    for edge in fragment.edges:
        ops.append({"op": "connect", "source": renamed[edge.source], "source_port": edge.source_port,
                    "target": renamed[edge.target], "target_port": edge.target_port})
    group_ids = {g.id for g in graph.groups}
    for group in fragment.groups:
        group_id = fresh_id(group_ids, _stem(group.id))
        group_ids.add(group_id)
        ops.append({"op": "group", "id": group_id, "title": group.title, "collapsed": group.collapsed,
                    "members": [renamed[m] for m in group.members],
                    "position": {"x": round(group.position.x + dx), "y": round(group.position.y + dy)}})
    return ops, [renamed[n.id] for n in fragment.nodes]


def clear_shift(fragment: Graph, graph: Graph) -> tuple[float, float]:
    """How far to move ``fragment`` so that none of its cards lands on a card of ``graph``: right
    past its own bounding box, or down past it, each time on past any card in the way; the shorter
    move wins (right on a tie). A copy 25 px off its original reads as the original with a shadow,
    so a duplicate lands where other node editors put one: beside or below what it copies."""
    spots = [(n.position.x, n.position.y) for n in fragment.nodes]
    cards = [(n.position.x, n.position.y) for n in graph.nodes]

    def in_the_way(dx: float, dy: float) -> list[tuple[float, float]]:
        return [(cx, cy) for cx, cy in cards
                if any(abs(x + dx - cx) < CARD_WIDTH and abs(y + dy - cy) < CARD_HEIGHT for x, y in spots)]

    left, top = min(x for x, _ in spots), min(y for _, y in spots)
    dx = max(x for x, _ in spots) + CARD_WIDTH + GAP - left
    while hit := in_the_way(dx, 0.0):  # each pass moves past a card it overlapped: it ends
        dx = max(cx for cx, _ in hit) + CARD_WIDTH + GAP - left
    dy = max(y for _, y in spots) + CARD_HEIGHT + GAP - top
    while hit := in_the_way(0.0, dy):
        dy = max(cy for _, cy in hit) + CARD_HEIGHT + GAP - top
    return (dx, 0.0) if dx <= dy else (0.0, dy)


def _stem(node_id: str) -> str:
    """A copy of ``dense_2`` is ``dense_3``, not ``dense_2_2``."""
    return re.sub(r"_\d+$", "", node_id) or node_id


# -- the group library: groups saved to the palette ---------------------------------------------------
def library(workspace: Path) -> dict[str, Path]:
    """Saved groups by name (their file's stem), in name order; files that are no graph are left out."""
    folder = workspace / LIBRARY_FOLDER
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.glob("*.json")) if p.is_file() and is_graph_file(p)}


def save_group(workspace: Path, graph: Graph, group_id: str) -> str:
    """Save a group of ``graph`` (its nodes, the edges between them, the group) to the library
    under a name made from its title; an earlier group of that name is replaced. Returns the name."""
    group = next((g for g in graph.groups if g.id == group_id), None)
    if group is None:
        raise KeyError(f"no group with id '{group_id}'")
    name = "_".join(re.findall(r"[A-Za-z0-9]+", group.title))[:60] or group.id
    part = fragment_of(graph, group.members).model_copy(
        update={"name": group.title, "groups": [group.model_copy(update={"collapsed": False})]})
    folder = workspace / LIBRARY_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    part.save(folder / f"{name}.json")
    return name


def load_group(workspace: Path, name: str) -> Graph:
    """A saved group by the name the palette shows (looked up among the saved files, so a name
    cannot point outside the library)."""
    path = library(workspace).get(name)
    if path is None:
        raise KeyError(f"no saved group named '{name}'")
    return Graph.load(path)
