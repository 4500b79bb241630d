"""The inspector: a node's parameter form, generated from its pydantic JSON schema.

Every change goes through ``Session.edit('set_params', ...)``; a refused value stays in its field
with the reason under it, so the user sees what to change.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nicegui import ui

from nodeflow.session import EditError, Session

FOLDER_FORMATS = {"directory-path"}
PATH_KEY = "x-nodeflow-path"  # how nodeflow.paths marks a param that names a folder or file
LAYER_PARAM_NAMES = ("unfreeze", "trainable_layers", "layers_to_train")


def resolve(schema: dict[str, Any], prop: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Follow ``$ref`` and unwrap ``Optional[...]``; returns (schema, nullable)."""
    defs = schema.get("$defs", {})
    nullable = False
    if "anyOf" in prop:
        options = [o for o in prop["anyOf"] if o.get("type") != "null"]
        nullable = len(options) < len(prop["anyOf"])
        if len(options) == 1:
            prop = {**{k: v for k, v in prop.items() if k != "anyOf"}, **options[0]}
    if "$ref" in prop:
        target = defs.get(prop["$ref"].rsplit("/", 1)[-1], {})
        prop = {**target, **{k: v for k, v in prop.items() if k != "$ref"}}
    return prop, nullable


def widget_kind(name: str, prop: dict[str, Any]) -> str:
    """Which control a param gets: select, switch, int, number, folder, text, list, layers or json."""
    extra = prop.get("widget") or prop.get("x-widget")
    if extra:
        return str(extra)
    if "enum" in prop or "const" in prop:
        return "select"
    kind = prop.get("type")
    if kind == "boolean":
        return "switch"
    if kind == "integer":
        return "int"
    if kind == "number":
        return "number"
    if kind == "string":
        if prop.get(PATH_KEY) or prop.get("format") in FOLDER_FORMATS:
            return "folder"
        return "text"
    if kind == "array":
        items = prop.get("items", {})
        if name in LAYER_PARAM_NAMES and items.get("type") == "string":
            return "layers"
        if items.get("type") in ("string", "number", "integer"):
            return "list"
    return "json"


def layer_facts(facts: dict[str, dict[str, Any]]) -> list[dict[str, Any]] | None:
    for fact in facts.values():
        if isinstance(fact, dict) and isinstance(fact.get("layers"), list):
            return [layer if isinstance(layer, dict) else {"name": str(layer)} for layer in fact["layers"]]
    return None


def human_count(n: int | float | None) -> str:
    if n is None:
        return ""
    n = float(n)
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{int(n)}"


class ParamForm:
    """One node's form. ``on_edit`` is called after the session accepted a change."""

    def __init__(self, session: Session, node_id: str, entry: dict[str, Any],
                 on_edit: Callable[[], None] = lambda: None) -> None:
        self.session = session
        self.node_id = node_id
        self.entry = entry
        self.on_edit = on_edit
        self.errors: dict[str, ui.label] = {}
        spec = session.graph.node(node_id)
        self.params = {**(entry.get("defaults") or {}), **spec.params}
        schema = entry["params_schema"]
        properties = schema.get("properties", {})
        required = set(schema.get("required", []))
        if not properties:
            ui.label("This node has no parameters.").classes("text-grey-7 text-sm")
        for name, raw in properties.items():
            prop, nullable = resolve(schema, raw)
            with ui.column().classes("w-full gap-0 nf-field").props(f"data-param={name}"):
                self._field(name, prop, nullable, name in required)
                self.errors[name] = ui.label("").classes("text-negative text-xs nf-field-error")
                self.errors[name].set_visibility(False)

    # -- one field per param ----------------------------------------------------------------------
    def _field(self, name: str, prop: dict[str, Any], nullable: bool, required: bool) -> None:
        label = prop.get("title") or name
        help_text = prop.get("description", "")
        value = self.params.get(name, prop.get("default"))
        kind = widget_kind(name, prop)
        change = lambda e, n=name: self.set(n, e.value)  # noqa: E731
        if kind == "select":
            options = list(prop.get("enum") or [prop.get("const")])
            if nullable:
                options = [None, *options]
            w = ui.select({o: ("(none)" if o is None else str(o)) for o in options}, label=label, value=value,
                          on_change=change)
        elif kind == "switch":
            w = ui.switch(label, value=bool(value), on_change=change)
        elif kind in ("int", "number"):
            lo = prop.get("minimum", prop.get("exclusiveMinimum"))
            hi = prop.get("maximum", prop.get("exclusiveMaximum"))
            bounds = (f" [{'−∞' if lo is None else _fmt(lo)} … {'∞' if hi is None else _fmt(hi)}]"
                      if lo is not None or hi is not None else "")
            w = ui.number(label + bounds, value=value, min=lo, max=hi, step=1 if kind == "int" else None,
                          precision=0 if kind == "int" else None,
                          on_change=lambda e, n=name, k=kind: self.set(n, _number(e.value, k))).props("debounce=400")
        elif kind == "folder":
            with ui.row().classes("w-full items-end no-wrap gap-1"):
                w = ui.input(label, value=value or "", on_change=lambda e, n=name: self.set(n, e.value or None
                                                                                      if nullable else e.value))
                w.props("debounce=500").classes("grow")
                ui.button(icon="folder_open", on_click=lambda n=name, field=w: self.pick_folder(field)) \
                    .props("flat dense").tooltip("Choose a folder in the workspace")
        elif kind == "layers":
            LayerPicker(self, name, value or [])
            return
        elif kind == "list":
            item_kind = prop.get("items", {}).get("type")
            w = ui.input(label + " (comma-separated)", value=", ".join(map(str, value or [])),
                         on_change=lambda e, n=name, k=item_kind: self.set(n, _split(e.value, k))).props("debounce=500")
        elif kind == "text":
            w = ui.input(label, value="" if value is None else str(value),
                         on_change=lambda e, n=name: self.set(n, e.value if e.value or not nullable else None))
            w.props("debounce=500")
        else:
            w = ui.textarea(label + " (JSON)", value=json.dumps(value, indent=1),
                            on_change=lambda e, n=name: self.set_json(n, e.value)).props("debounce=700 autogrow")
        w.classes("w-full").mark(f"param-{name}")
        if help_text:
            w.tooltip(help_text)
            ui.label(help_text).classes("text-grey-6 text-xs nf-help")

    # -- applying ---------------------------------------------------------------------------------
    def set(self, name: str, value: Any) -> bool:
        if self.params.get(name) == value and name in self.session.graph.node(self.node_id).params:
            return True
        try:
            self.session.edit("set_params", id=self.node_id, params={name: value})
        except EditError as exc:
            reason = str(exc).removeprefix(f"{self.node_id}: ")
            self.errors[name].set_text(f"Refused: {reason}")
            self.errors[name].set_visibility(True)
            return False
        self.params[name] = value
        self.errors[name].set_visibility(False)
        self.on_edit()
        return True

    def set_json(self, name: str, text: str) -> None:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            self.errors[name].set_text(f"Refused: not JSON ({exc.msg})")
            self.errors[name].set_visibility(True)
            return
        self.set(name, value)

    def pick_folder(self, field: ui.input) -> None:
        FolderPicker(self.session.workspace, lambda rel: field.set_value(rel))


class LayerPicker:
    """Which layers of the incoming model train: checkboxes with parameter counts, plus a freeze
    boundary (frozen blocks before it stay frozen, those from it on train). Layers the incoming
    model already trains (a new head) are shown checked and locked."""

    def __init__(self, form: ParamForm, name: str, value: list[str]) -> None:
        self.form = form
        self.name = name
        self.layers = layer_facts(form.session.input_facts(form.node_id)) or []
        self.frozen = [layer["name"] for layer in self.layers if not layer.get("trainable")]
        self.chosen = list(value)
        with ui.column().classes("w-full gap-1 nf-layer-picker"):
            ui.label("Layers to train").classes("text-subtitle2")
            if not self.layers:
                ui.label("Connect a model to this node to pick its layers.").classes("text-grey-7 text-sm")
                ui.input("layer names (comma-separated)", value=", ".join(value),
                         on_change=lambda e: self.apply(_split(e.value, "string"))).props("debounce=500") \
                    .classes("w-full")
                return
            options = {i: f"from {n} on" for i, n in enumerate(self.frozen)}
            options[len(self.frozen)] = "none picked (the node's default)"
            self.boundary = ui.select(options, label="Freeze boundary", value=self._boundary(),
                                      on_change=self.on_boundary).classes("w-full nf-freeze-boundary")
            self.total = ui.label("").classes("text-xs text-grey-7 nf-layer-total")
            self.boxes: dict[str, ui.checkbox] = {}
            with ui.column().classes("w-full gap-0 nf-layers"):
                for layer in self.layers:
                    lname = layer["name"]
                    locked = bool(layer.get("trainable"))
                    with ui.row().classes("w-full items-center no-wrap gap-1 nf-layer").props(f"data-layer={lname}"):
                        box = ui.checkbox(lname, value=locked or lname in self.chosen,
                                          on_change=lambda e, n=lname: self.on_box(n, e.value)) \
                            .props("dense").classes("grow")
                        if locked:
                            box.disable()
                            box.tooltip("Already trained by the incoming model")
                        self.boxes[lname] = box
                        kind = layer.get("kind") or ""
                        ui.label(f"{kind} · {human_count(layer.get('params')) or '?'}").classes("text-xs text-grey-7")
            self._refresh()

    def _boundary(self) -> int | None:
        """The boundary, if the chosen layers are exactly the frozen tail; else None (a custom pick)."""
        for i in range(len(self.frozen) + 1):
            if set(self.frozen[i:]) == set(self.chosen):
                return i
        return None

    def on_boundary(self, e) -> None:
        if e.value is None or e.value == self._boundary():
            return
        self.apply(self.frozen[int(e.value):])

    def on_box(self, name: str, checked: bool) -> None:
        if name not in self.frozen or (name in self.chosen) == checked:
            return
        chosen = set(self.chosen) | {name} if checked else set(self.chosen) - {name}
        self.apply([n for n in self.frozen if n in chosen] + [n for n in self.chosen if n not in self.frozen])

    def apply(self, names: list[str]) -> None:
        if self.form.set(self.name, names):
            self.chosen = list(names)
        self._refresh()

    def _refresh(self) -> None:
        if not self.layers:
            return
        for lname in self.frozen:
            box = self.boxes[lname]
            if box.value != (lname in self.chosen):
                box.value = lname in self.chosen
        self.boundary.value = self._boundary()
        counts = {layer["name"]: layer.get("params") or 0 for layer in self.layers}
        training = [n for n in counts if n in self.chosen or n not in self.frozen]
        self.total.set_text(f"{len(training)} of {len(self.layers)} layers train: "
                            f"{human_count(sum(counts[n] for n in training)) or 0} of "
                            f"{human_count(sum(counts.values())) or 0} parameters"
                            + ("" if self.chosen else " (no block picked: the node's default applies)"))


class FolderPicker:
    """A dialog that browses folders inside the workspace only; returns the folder relative to the
    directory nodeflow runs in when it lies below it, else absolute."""

    def __init__(self, workspace: Path, on_pick: Callable[[str], None]) -> None:
        self.root = Path(workspace).resolve()
        self.on_pick = on_pick
        self.current = self.root
        with ui.dialog() as self.dialog, ui.card().classes("w-96"):
            self.title = ui.label("").classes("text-subtitle2")
            self.list = ui.column().classes("w-full gap-0 max-h-80 overflow-auto")
            with ui.row().classes("w-full justify-end"):
                ui.button("Cancel", on_click=self.dialog.close).props("flat")
                ui.button("Choose this folder", on_click=self.choose)
        self.show()
        self.dialog.open()

    def show(self) -> None:
        rel = self.current.relative_to(self.root)
        self.title.set_text(f"workspace/{rel}" if str(rel) != "." else "workspace/")
        self.list.clear()
        with self.list:
            if self.current != self.root:
                ui.item("..", on_click=lambda: self.go(self.current.parent)).classes("w-full")
            for child in sorted(p for p in self.current.iterdir() if p.is_dir() and not p.name.startswith(".")):
                ui.item(f"📁 {child.name}", on_click=lambda c=child: self.go(c)).classes("w-full")

    def go(self, folder: Path) -> None:
        folder = folder.resolve()
        if folder == self.root or self.root in folder.parents:
            self.current = folder
            self.show()

    def choose(self) -> None:
        # relative path params are read from the folder nodeflow runs in (RunContext.resolve_path)
        cwd = Path.cwd().resolve()
        chosen = self.current.relative_to(cwd) if self.current.is_relative_to(cwd) else self.current
        self.on_pick(chosen.as_posix())
        self.dialog.close()


def _fmt(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _number(value: Any, kind: str) -> Any:
    if value is None:
        return None
    return int(value) if kind == "int" and float(value).is_integer() else value


def _split(text: str, kind: str | None) -> list[Any]:
    items = [t.strip() for t in (text or "").split(",") if t.strip()]
    if kind == "integer":
        return [int(t) if t.lstrip("-").isdigit() else t for t in items]
    if kind == "number":
        out = []
        for t in items:
            try:
                out.append(float(t))
            except ValueError:
                out.append(t)
        return out
    return items
