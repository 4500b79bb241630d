"""The inspector: a node's parameter form, generated from its pydantic JSON schema.

Every change goes through ``session.document.edit('set_params', ...)``; a refused value stays in its field
with the reason under it, so the user sees what to change.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nicegui import ui

from nodeflow.access import Refused
from nodeflow.node import auto_title
from nodeflow.paths import stored_form
from nodeflow.session import EditError, Session

FOLDER_FORMATS = {"directory-path"}
PATH_KEY = "x-nodeflow-path"  # how nodeflow.paths marks a param that names a folder or file
WIDGET_KEY = "x-widget"  # a param's schema may name its control, e.g. {"x-widget": "layers"}
LAST_N_KEY = "x-last-n"  # on a layers param: the int param that picks the last N frozen blocks when none is named
FOLDER_SVG = ('<svg viewBox="0 0 24 24" width="18" height="18" aria-hidden="true" class="nf-folder-icon" style="flex: none; min-width: 18px; min-height: 18px">'
              '<path fill="#f9a825" d="M10 4H4a2 2 0 0 0-2 2v12a2 2 0 0 0 2 2h16a2 2 0 0 0 2-2V8a2 2 0 0 0-2-2h-8z"/>'
              '</svg>')


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
    extra = prop.get("widget") or prop.get(WIDGET_KEY)
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


def sweep_kind(prop: dict[str, Any]) -> str | None:
    """How a param can be swept: ``int`` or ``number`` (typed values), ``choice`` (ticks of its
    allowed values), ``layers`` (ticks of freeze boundaries); None for params a sweep does not offer."""
    kind = widget_kind("", prop)
    if kind in ("int", "number"):
        return kind
    if kind == "select" and len(prop.get("enum") or []) > 1:
        return "choice"
    if kind == "layers":
        return "layers"
    return None


class ParamForm:
    """One node's form. ``on_edit(redraw)`` is called after the session accepted a change; ``redraw``
    is True when the change touched other fields than the one being edited (draw the form again).
    With ``on_sweep``, numeric and choice params get a "Sweep…" button that calls it with the param."""

    def __init__(self, session: Session, node_id: str, entry: dict[str, Any],
                 on_edit: Callable[[bool], None] = lambda redraw: None,
                 on_sweep: Callable[[str], None] | None = None) -> None:
        self.session = session
        self.node_id = node_id
        self.entry = entry
        self.on_edit = on_edit
        self.on_sweep = on_sweep
        self.errors: dict[str, ui.label] = {}
        self.watchers: list[Callable[[], None]] = []  # parts of the form that depend on other params
        spec = session.document.graph.node(node_id)
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
            # no min/max on the control: it would clamp silently; the session refuses with the reason
            w = ui.number(label + bounds_text(prop), value=value, step=1 if kind == "int" else None,
                          on_change=lambda e, n=name, k=kind: self.set(n, _number(e.value, k))).props("debounce=400")
        elif kind == "folder":
            with ui.row().classes("w-full items-end no-wrap gap-1"):
                w = ui.input(label, value=value or "", on_change=lambda e, n=name: self.set(n, e.value or None
                                                                                      if nullable else e.value))
                w.props("debounce=500").classes("grow")
                files = prop.get(PATH_KEY) == "file"  # a weights file, say: the picker lists files too
                with ui.button(on_click=lambda field=w, f=files: self.pick_folder(field, f)) \
                        .props(f'flat dense aria-label="{"Choose a file" if files else "Choose a folder"}"') \
                        .classes("nf-pick-folder"):
                    ui.html(FOLDER_SVG, sanitize=False).style("flex: none; min-width: 18px")
        elif kind == "layers":
            LayerPicker(self, name, value or [], prop.get(LAST_N_KEY))
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
            shown = value if isinstance(value, str) and value in bare_words(self.entry["params_schema"], name) \
                else json.dumps(value, indent=1)
            w = ui.textarea(label + " (JSON)", value=shown,
                            on_change=lambda e, n=name: self.set_json(n, e.value)).props("debounce=700 autogrow")
        w.classes("w-full").mark(f"param-{name}")
        if self.on_sweep is not None and sweep_kind(prop) in ("int", "number", "choice"):
            with ui.row().classes("w-full items-center no-wrap gap-1") as row:
                pass
            w.move(row)
            w.classes(remove="w-full").classes("grow")
            with row:
                self.sweep_button(name)
        if help_text:  # shown under the field (no tooltip: one aimed at a redrawn field logs "Anchor … not found")
            ui.label(help_text).classes("text-grey-6 text-xs nf-help")

    def sweep_button(self, name: str) -> None:
        with ui.button(icon="call_split", on_click=lambda: self.on_sweep(name)) \
                .props(f'flat dense round size=sm color=indigo-7 aria-label="Sweep {name}…"').classes("nf-sweep-btn") \
                .mark(f"sweep-{name}"):
            ui.tooltip(f"Sweep {name}…: run the graph once per value")  # a child: the form is redrawn often

    # -- applying ---------------------------------------------------------------------------------
    def set(self, name: str, value: Any) -> bool:
        return self.set_many({name: value})

    def set_many(self, values: dict[str, Any]) -> bool:
        """Apply params as one undo step; the node's title follows if it was the automatic one."""
        spec = self.session.document.graph.node(self.node_id)
        if all(self.params.get(k) == v and k in spec.params for k, v in values.items()):
            return True
        ops: list[dict[str, Any]] = [{"op": "set_params", "id": self.node_id, "params": values}]
        title = self.follow_title({**self.params, **values}, spec.title)
        if title is not None:
            ops.append({"op": "rename", "id": self.node_id, "title": title})
        try:
            self.session.document.edits(ops)
        except (EditError, Refused) as exc:
            reason = str(exc).removeprefix(f"{self.node_id}: ")
            for name in values:
                self.errors[name].set_text(f"Refused: {reason}")
                self.errors[name].set_visibility(True)
            return False
        self.params.update(values)
        for name in values:
            self.errors[name].set_visibility(False)
        for watcher in self.watchers:
            watcher()
        self.on_edit(len(values) > 1)
        return True

    def follow_title(self, new_params: dict[str, Any], title: str | None) -> str | None:
        """The new automatic title when the node's stored title is the automatic one (a file saved
        that way), else None: a node without a title shows the automatic one anyway, and one the
        user named keeps its name."""
        now = auto_title(self.entry, self.params)
        if now is None or not title or title != now:
            return None
        new = auto_title(self.entry, new_params)
        return new if new != title else None

    def set_json(self, name: str, text: str) -> None:
        """A JSON value, or one of the param's documented bare words (``auto`` for ``"auto"``)."""
        words = bare_words(self.entry["params_schema"], name)
        if text.strip() in words:
            self.set(name, text.strip())
            return
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            also = f", or {' or '.join(words)}" if words else ""
            self.errors[name].set_text(f"Refused: not JSON ({exc.msg}){also}")
            self.errors[name].set_visibility(True)
            return
        self.set(name, value)

    def pick_folder(self, field: ui.input, files: bool = False) -> None:
        FolderPicker(self.session.allowed_roots or [self.session.workspace], lambda rel: field.set_value(rel),
                     workspace=self.session.workspace, files=files)


class LayerPicker:
    """Which layers of the incoming model train: checkboxes with parameter counts, plus a freeze
    boundary (frozen blocks before it stay frozen, those from it on train). Layers the incoming
    model already trains (a new head) are shown checked and locked.

    The ticks show the effective selection, the one the node will apply: with no layer named, the
    last ``last_n`` frozen blocks (the node's own rule), and the picker says so."""

    def __init__(self, form: ParamForm, name: str, value: list[str], last_n_param: str | None = None) -> None:
        self.form = form
        self.name = name
        self.last_n_param = last_n_param
        self.layers = layer_facts(form.session.input_facts(form.node_id)) or []
        self.frozen = [layer["name"] for layer in self.layers if not layer.get("trainable")]
        self.chosen = list(value)
        form.watchers.append(self._refresh)
        with ui.column().classes("w-full gap-1 nf-layer-picker"):
            with ui.row().classes("w-full items-center no-wrap"):
                ui.label("Layers to train").classes("text-subtitle2 grow")
                if form.on_sweep is not None:
                    form.sweep_button(name)
            if not self.layers:
                ui.label("Connect a model to this node to pick its layers.").classes("text-grey-7 text-sm")
                ui.input("layer names (comma-separated)", value=", ".join(value),
                         on_change=lambda e: self.apply(_split(e.value, "string"))).props("debounce=500") \
                    .classes("w-full")
                return
            options = {i: f"from {n} on" for i, n in enumerate(self.frozen)}
            options[len(self.frozen)] = (f"none by name ({last_n_param} decides)" if last_n_param
                                         else "none by name")
            self.boundary = ui.select(options, label="Freeze boundary", value=self._boundary(),
                                      on_change=self.on_boundary).classes("w-full nf-freeze-boundary")
            self.total = ui.label("").classes("text-sm nf-layer-total")
            self.source = ui.label("").classes("text-xs text-grey-8 nf-layer-source")
            self.boxes: dict[str, ui.checkbox] = {}
            with ui.column().classes("w-full gap-0 nf-layers"):
                for layer in self.layers:
                    lname = layer["name"]
                    locked = bool(layer.get("trainable"))
                    with ui.row().classes("w-full items-center no-wrap gap-1 nf-layer").props(f"data-layer={lname}"):
                        box = ui.checkbox(lname, value=locked or lname in self.effective(),
                                          on_change=lambda e, n=lname: self.on_box(n, e.value)) \
                            .props("dense").classes("grow")
                        if locked:
                            box.disable()
                        self.boxes[lname] = box
                        kind = layer.get("kind") or ""
                        ui.label(f"{kind} · {human_count(layer.get('params')) or '?'}").classes("text-xs text-grey-7")
            self._refresh()

    @property
    def last_n(self) -> int:
        value = self.form.params.get(self.last_n_param) if self.last_n_param else None
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    def effective(self) -> list[str]:
        """The frozen layers this node unfreezes: the named ones, else the last ``last_n`` (as the node does)."""
        if self.chosen:
            return [n for n in self.frozen if n in self.chosen]
        return self.frozen[-self.last_n:] if self.last_n else []

    def _boundary(self) -> int | None:
        """The boundary, if the effective layers are exactly the frozen tail; else None (a custom pick)."""
        if not self.chosen:
            return len(self.frozen)
        for i in range(len(self.frozen) + 1):
            if set(self.frozen[i:]) == set(self.chosen):
                return i
        return None

    def on_boundary(self, e) -> None:
        if e.value is None or e.value == self._boundary():
            return
        self.apply(self.frozen[int(e.value):])

    def on_box(self, name: str, checked: bool) -> None:
        effective = set(self.effective())
        if name not in self.frozen or (name in effective) == checked:
            return
        chosen = effective | {name} if checked else effective - {name}
        names = [n for n in self.frozen if n in chosen]
        if names:
            self.apply(names)
        else:  # nothing ticked: name none and let last_n unfreeze none
            self.apply([], extra={self.last_n_param: 0} if self.last_n else None)

    def apply(self, names: list[str], extra: dict[str, Any] | None = None) -> None:
        if self.form.set_many({self.name: names, **(extra or {})}):
            self.chosen = list(names)
        self._refresh()

    def trainable(self) -> list[str]:
        effective = set(self.effective())
        return [layer["name"] for layer in self.layers
                if layer["name"] in effective or layer["name"] not in self.frozen]

    def _refresh(self) -> None:
        if not self.layers:
            return
        self.chosen = list(self.form.params.get(self.name) or [])
        effective = set(self.effective())
        for lname in self.frozen:
            box = self.boxes[lname]
            if box.value != (lname in effective):
                box.value = lname in effective
        self.boundary.value = self._boundary()
        counts = {layer["name"]: layer.get("params") for layer in self.layers}
        training = self.trainable()
        unknown = [n for n in training if counts[n] is None]
        self.total.props(f"data-params={sum(counts[n] or 0 for n in training)}")
        self.total.set_text(f"{len(training)} of {len(self.layers)} layers train: "
                            f"{human_count(sum(counts[n] or 0 for n in training)) or 0} of "
                            f"{human_count(sum(c or 0 for c in counts.values())) or 0} parameters"
                            + (f" (+ {', '.join(unknown)}, sized when the data is known)" if unknown else ""))
        unfrozen = self.effective()
        if self.chosen:
            self.source.set_text(f"Unfreezes {', '.join(unfrozen) or 'nothing'} (named in '{self.name}').")
        elif self.last_n:
            self.source.set_text(f"Unfreezes {', '.join(unfrozen) or 'nothing'}: no layer is named, so "
                                 f"{self.last_n_param} = {self.last_n} picks the last {self.last_n} frozen "
                                 f"block{'s' if self.last_n != 1 else ''}.")
        else:
            self.source.set_text("Unfreezes nothing: no layer is named"
                                 + (f" and {self.last_n_param} = 0." if self.last_n_param else "."))


class FolderPicker:
    """A dialog that browses folders inside the allowed roots only (the workspace and each
    ``--allow-root``, all shown at the top level); returns the folder relative to the workspace when
    it lies inside it, else absolute (:func:`nodeflow.paths.stored_form`). With ``files`` (a param that
    names a file, such as a weights file) it lists the files too, and a click on one picks it. Icons
    are inline SVG: nothing here waits for a font download."""

    def __init__(self, roots: list[Path], on_pick: Callable[[str], None], workspace: Path | None = None,
                 files: bool = False) -> None:
        self.files = files
        resolved = list(dict.fromkeys(Path(r).resolve() for r in roots))
        self.workspace = Path(workspace).resolve() if workspace is not None else resolved[0]
        self.roots = [r for r in resolved if r.is_dir()] or [self.workspace]
        self.on_pick = on_pick
        self.current: Path | None = self.roots[0] if len(self.roots) == 1 else None  # None: the list of roots
        with ui.dialog() as self.dialog, ui.card().classes("w-[28rem] nf-folder-picker"):
            self.title = ui.label("").classes("text-subtitle2 nf-folder-title").style("overflow-wrap: anywhere")
            self.list = ui.column().classes("w-full gap-0 max-h-80 overflow-auto")
            with ui.row().classes("w-full justify-end"):
                ui.button("Cancel", on_click=self.dialog.close).props("flat")
                self.choose_btn = ui.button("Choose this folder", on_click=self.choose)
        self.show()
        self.dialog.open()

    def root_of(self, folder: Path) -> Path | None:
        return next((r for r in self.roots if folder == r or r in folder.parents), None)

    def label_of(self, root: Path) -> str:
        return f"workspace ({root})" if root == self.workspace else str(root)

    def _entry(self, text: str, on_click: Callable[[], None]) -> None:
        with ui.item(on_click=on_click).classes("w-full nf-folder").props("dense"):
            with ui.row().classes("items-center no-wrap gap-2"):
                ui.html(FOLDER_SVG, sanitize=False).style("flex: none; min-width: 18px")
                ui.label(text).style("overflow-wrap: anywhere")

    def show(self) -> None:
        self.list.clear()
        self.choose_btn.set_enabled(self.current is not None)
        with self.list:
            if self.current is None:
                self.title.set_text("Allowed folders")
                for root in self.roots:
                    self._entry(self.label_of(root), lambda r=root: self.go(r))
                return
            root = self.root_of(self.current)
            rel = self.current.relative_to(root)
            self.title.set_text(self.label_of(root) + ("" if str(rel) == "." else f" / {rel.as_posix()}"))
            if self.current != root:
                ui.item("↑ ..", on_click=lambda: self.go(self.current.parent)).classes("w-full nf-folder-up")
            elif len(self.roots) > 1:
                ui.item("↑ all allowed folders", on_click=lambda: self.go(None)).classes("w-full nf-folder-up")
            try:
                children = sorted(p for p in self.current.iterdir() if p.is_dir() and not p.name.startswith("."))
            except OSError as exc:
                ui.label(f"cannot list this folder: {exc.strerror}").classes("text-negative text-sm")
                children = []
            for child in children:
                self._entry(child.name, lambda c=child: self.go(c))
            if self.files:
                try:
                    found = sorted(p for p in self.current.iterdir() if p.is_file() and not p.name.startswith("."))
                except OSError:
                    found = []
                for file in found:
                    ui.item(file.name, on_click=lambda f=file: self.pick(f)).classes("w-full nf-file-entry") \
                        .props("dense").style("overflow-wrap: anywhere")

    def go(self, folder: Path | None) -> None:
        if folder is None:
            self.current = None
            self.show()
            return
        folder = folder.resolve()
        if self.root_of(folder) is not None:
            self.current = folder
            self.show()

    def pick(self, file: Path) -> None:
        """A file, chosen by a click (it must still lie inside an allowed root)."""
        file = file.resolve()
        if self.root_of(file) is not None:
            self.on_pick(stored_form(file, self.workspace))
            self.dialog.close()

    def choose(self) -> None:
        if self.current is None:
            return
        # relative path params start at the workspace wherever nodeflow runs (nodeflow.paths.resolve)
        self.on_pick(stored_form(self.current, self.workspace))
        self.dialog.close()


def bare_words(schema: dict[str, Any], name: str) -> list[str]:
    """The words a JSON-typed param takes as they are, e.g. ``auto`` of ``int | Literal["auto"]``:
    the string choices among its alternatives (its help names them)."""
    prop = schema.get("properties", {}).get(name, {})
    words = []
    for option in prop.get("anyOf", []) + [prop]:
        option = resolve(schema, option)[0] if "$ref" in option else option
        for word in [option.get("const"), *(option.get("enum") or [])]:
            if isinstance(word, str) and word not in words:
                words.append(word)
    return words


def bounds_text(prop: dict[str, Any]) -> str:
    """A number field's range as a label suffix: brackets for inclusive ends, parentheses for
    exclusive ones, e.g. ``(0 … 10]`` for 0 < x ≤ 10."""
    lo_in, lo_ex = prop.get("minimum"), prop.get("exclusiveMinimum")
    hi_in, hi_ex = prop.get("maximum"), prop.get("exclusiveMaximum")
    if lo_in is None and lo_ex is None and hi_in is None and hi_ex is None:
        return ""
    left = f"[{_fmt(lo_in)}" if lo_in is not None else f"({_fmt(lo_ex)}" if lo_ex is not None else "(−∞"
    right = f"{_fmt(hi_in)}]" if hi_in is not None else f"{_fmt(hi_ex)})" if hi_ex is not None else "∞)"
    return f" {left} … {right}"


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
