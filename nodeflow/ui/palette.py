"""The palette: the node catalogue by category, searchable, and the groups saved to it; a node or a
group is dragged onto the canvas (or double-clicked in)."""

from __future__ import annotations

import json
from typing import Any

from nicegui import ui

from nodeflow import fragments
from nodeflow.session import Session

from .page import Page

DRAG_TYPE = "application/x-nodeflow-type"
GROUP_DRAG_TYPE = "application/x-nodeflow-group"


class Palette:
    """The left drawer (``drawer``)."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.hub = page.hub
        self.session: Session = page.session

        with ui.left_drawer(value=True, fixed=True).props("width=220 bordered").classes("p-2 nf-palette") \
                as self.drawer:
            ui.label("Nodes").classes("text-subtitle1 text-weight-medium")
            search = ui.input(placeholder="search nodes…").props("dense clearable outlined").classes("w-full")
            ui.label("Drag a node onto the canvas").classes("text-xs text-grey-7")
            categories: dict[str, list[dict[str, Any]]] = {}
            for entry in self.hub.catalogue_list:
                categories.setdefault(entry["category"], []).append(entry)
            self.palette_items: list[tuple[ui.element, str]] = []
            self.palette_groups: list[tuple[ui.expansion, list[ui.element]]] = []
            for category in sorted(categories):
                with ui.expansion(category, value=True).props("dense dense-toggle header-class='text-weight-medium q-px-xs'") \
                        .classes("w-full nf-category") as group:
                    items = []
                    for entry in categories[category]:
                        item = ui.element("div").classes("nf-palette-item").props(
                            f'draggable=true data-type="{entry["type"]}"')
                        with item:
                            ui.label(entry["title"]).classes("text-sm")
                            ui.label(f'{entry["type"]} · {entry["source"]}').classes("text-xs text-grey-6")
                        item.tooltip(entry["description"].split("\n")[0] or entry["type"])
                        item.on("dragstart", js_handler=(
                            f"(e) => {{ e.dataTransfer.setData({json.dumps(DRAG_TYPE)}, {json.dumps(entry['type'])});"
                            " e.dataTransfer.effectAllowed = 'copy'; }"))
                        item.on("dblclick", lambda t=entry["type"]: self.add_node(t))
                        text = f"{entry['title']} {entry['type']} {entry['category']} {entry['description']}".lower()
                        self.palette_items.append((item, text))
                        items.append(item)
                    self.palette_groups.append((group, items))
            with ui.expansion("My groups", value=True) \
                    .props("dense dense-toggle header-class='text-weight-medium q-px-xs'").classes("w-full nf-library"):
                self.library = ui.column().classes("w-full gap-0")
            self.render_library()
            search.on_value_change(lambda e: self.filter_palette(e.value or ""))

    def render_library(self) -> None:
        """The groups saved to the palette (right-click a group: Save to palette); drag one in."""
        self.library.clear()
        with self.library:
            saved = fragments.library(self.session.workspace)
            if not saved:
                ui.label("Right-click a group and choose “Save to palette” to keep it here.") \
                    .classes("text-xs text-grey-7")
            for name in saved:
                item = ui.element("div").classes("nf-palette-item nf-library-item")
                item._props.update({"draggable": "true", "data-group": name})  # any file name, taken as it is
                with item:
                    ui.label(name.replace("_", " ")).classes("text-sm")
                    ui.label("saved group").classes("text-xs text-grey-6")
                item.on("dragstart", js_handler=(
                    f"(e) => {{ e.dataTransfer.setData({json.dumps(GROUP_DRAG_TYPE)}, {json.dumps(name)});"
                    " e.dataTransfer.effectAllowed = 'copy'; }"))
                item.on("dblclick", lambda n=name: self.page.on_command(
                    {"name": "insert_group", "group": n, "at": {"x": 40, "y": 40}}))

    def filter_palette(self, query: str) -> None:
        words = query.lower().split()
        for item, text in self.palette_items:
            item.set_visibility(all(w in text for w in words))
        for group, items in self.palette_groups:
            group.set_visibility(any(i.visible for i in items))

    def add_node(self, node_type: str) -> None:
        count = len(self.session.document.graph.nodes)
        self.session.document.edit("add_node", type=node_type, position={"x": 40 + 30 * (count % 10), "y": 40 + 30 * (count % 7)})
        self.page.selected = [self.session.document.graph.nodes[-1].id]
        self.page.tick_now()
