"""The node API: what a node type declares, what it gets when it runs, and how types are found.

A node type is one class::

    class Flatten(Node):
        type = "layers.flatten"
        title = "Flatten"
        category = "Model"
        inputs = (Port("model", MODEL),)
        outputs = (Port("model", MODEL),)

        class Params(NodeParams):
            start_dim: int = Field(1, ge=1, description="First dimension to flatten")

        def run(self, ctx, params, model):
            return {"model": model.then(...)}

This module imports neither torch nor any UI library: port values are opaque to it.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import functools
import importlib
import importlib.util
import inspect
import os
import pkgutil
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from nodeflow.access import guarded, reads, writes
from nodeflow.events import Event, Log, Metric, Preview, Progress
from nodeflow.limits import NO_LIMITS, JobLimits
from nodeflow.paths import PathNotAllowed, confine, escaping, resolve

ENTRY_POINT_GROUP = "nodeflow.nodes"
#: True while a run is being planned: see :func:`fingerprints_fresh`
_FRESH = contextvars.ContextVar("nodeflow_fresh_fingerprints", default=False)


def fingerprints_fresh() -> bool:
    """Whether :meth:`Node.fingerprint` must look at its files as they are now (a run is being
    planned) rather than answer from a memo that serves status polling."""
    return _FRESH.get()


@contextlib.contextmanager
def fresh_fingerprints() -> Iterator[None]:
    """Within this block, :func:`fingerprints_fresh` is true (in this thread)."""
    token = _FRESH.set(True)
    try:
        yield
    finally:
        _FRESH.reset(token)


class Interrupted(Exception):
    """Raised inside a node when the user asked the run to stop."""


class Codec(Protocol):
    """Writes a port value into a folder and reads it back, so cached outputs survive a restart."""

    def save(self, value: Any, folder: Path) -> None: ...

    def load(self, folder: Path) -> Any: ...


@dataclass(frozen=True, eq=False)
class PortType:
    """A kind of value that flows along an edge.

    ``parents`` lets a more specific type be used where a general one is expected
    (a trained model wherever a model is accepted). ``codec`` makes values persistable. ``files``
    lists the files a value names (a dataset's images), which a node taking it will read: a run
    from the editor checks them when the node starts (see :meth:`RunContext.check_inputs`).
    """

    name: str
    color: str = "#90a4ae"
    description: str = ""
    parents: tuple[PortType, ...] = ()
    codec: Codec | None = None
    files: Callable[[Any], Iterable[str]] | None = None

    def ancestry(self) -> list[str]:
        """This type's name followed by every type it can stand in for."""
        names = [self.name]
        for parent in self.parents:
            names.extend(n for n in parent.ancestry() if n not in names)
        return names

    def fits(self, expected: PortType) -> bool:
        """Whether a value of this type may be connected to an input of type ``expected``."""
        return expected.name == ANY.name or expected.name in self.ancestry()

    def __repr__(self) -> str:
        return f"PortType({self.name})"


ANY = PortType("Any", color="#bdbdbd", description="Accepts a value of any type")


@dataclass(frozen=True)
class Port:
    name: str
    type: PortType
    description: str = ""
    optional: bool = False


class NodeParams(BaseModel):
    """Base for every node's ``Params``: unknown keys are errors, assignments are validated, and
    values keep their JSON type: ``true`` is not an integer, ``"3"`` is not a number (an integer
    still fills a float), and Infinity or NaN is no number at all."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False)


class NoParams(NodeParams):
    pass


class StopFile:
    """A stop flag (what ``RunContext`` takes as ``stop_flag``) that is a file, so a stop request
    reaches other processes and machines that share the folder. The file is looked for at most every
    ``every`` seconds, as the flag is polled before every layer's forward and a network file system
    is asked over the network; once seen, it stays set. ``clear`` does nothing: the file belongs to
    whoever started the run, which removes it."""

    def __init__(self, path: str | Path, every: float = 0.25) -> None:
        self.path = Path(path)
        self.every = every
        self.seen = False
        self.checked = float("-inf")

    def is_set(self) -> bool:
        now = time.monotonic()
        if not self.seen and now - self.checked >= self.every:
            self.checked = now
            self.seen = self.path.exists()
        return self.seen

    def set(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        self.seen = True

    def clear(self) -> None:
        pass


class RunContext:
    """What a running node sees of the executor: progress, metrics, logs, interruption, device."""

    def __init__(
        self,
        node_id: str,
        workspace: Path,
        device: str = "auto",
        seed: int = 0,
        emit: Callable[[Event], None] | None = None,
        stop_flag: threading.Event | StopFile | None = None,
        scratch: Path | None = None,
        key: str = "",
        allowed_roots: list[Path] | None = None,
        path_params: Mapping[str, str] | None = None,
        limits: JobLimits | None = None,
    ) -> None:
        self.node_id = node_id
        self.key = key
        self.workspace = Path(workspace)
        self.device = device
        self.seed = seed
        self._emit = emit or (lambda event: None)
        self._stop = stop_flag or threading.Event()
        #: a training's completed epochs and their total, as its progress last told them
        self.epoch: int | None = None
        self.epochs: int | None = None
        self.metrics: dict[str, float] = {}
        #: named tables for the run report (see :meth:`table`)
        self.tables: dict[str, dict[str, Any]] = {}
        self._scratch = scratch
        #: folders the node's paths must stay inside (a run from the editor); None = unrestricted
        self.allowed_roots = allowed_roots
        #: path-param value -> param name, so a refused path names its parameter
        self._path_params = dict(path_params or {})
        #: what this job may use on a shared server (see :mod:`nodeflow.limits`); unlimited elsewhere
        self.limits = limits or NO_LIMITS

    @property
    def interrupted(self) -> bool:
        return self._stop.is_set()

    def check_interrupted(self) -> None:
        """Raise :class:`Interrupted` if the user pressed stop; call it at batch boundaries."""
        if self._stop.is_set():
            raise Interrupted(f"node '{self.node_id}' was interrupted")

    def progress(self, done: float, total: float, message: str = "", epoch: int | None = None,
                 epochs: int | None = None) -> None:
        """``done`` of ``total``; a training also says how many of its ``epochs`` are complete
        (``epoch``), so the editor shows "epoch 12/40" and a stop "stopped at epoch 11/40"."""
        if epochs:
            self.epoch, self.epochs = epoch, epochs
        self._emit(Progress(node_id=self.node_id, done=done, total=total, message=message, epoch=epoch,
                            epochs=epochs))
        self.check_interrupted()

    def log_metric(self, name: str, value: float, step: int | None = None, **extra: Any) -> None:
        self.metrics[name] = float(value)
        self._emit(Metric(node_id=self.node_id, name=name, value=float(value), step=step, extra=extra))

    def log(self, message: str) -> None:
        self._emit(Log(node_id=self.node_id, message=message))

    def table(self, name: str, rows: Iterable[Mapping[str, Any]], columns: Iterable[str] | None = None) -> None:
        """Put a table (JSON-able rows, e.g. the worst errors or a check's findings) into the run
        report beside the metrics; it is kept with the node's cached result, so a cached node
        reports it too. ``columns`` default to the keys of the rows, in order of appearance."""
        rows = [dict(row) for row in rows]
        names = list(columns) if columns is not None else list(dict.fromkeys(k for row in rows for k in row))
        self.tables[name] = {"columns": names, "rows": rows}

    def keep_predictions(self, split: str, files: Sequence[str], true: Any, predicted: Any, confidence: Any,
                         classes: Sequence[str]) -> None:
        """Keep the model's per-image outcome on a split (each file's true class index, predicted
        class index and the predicted class's probability), compactly, beside the node's cached
        result, so two runs can be compared image by image (:mod:`nodeflow.predictions`)."""
        from nodeflow.predictions import save

        save(self.scratch, self.workspace, split, files, true, predicted, confidence, classes)

    def preview(self, kind: str, payload: Any) -> None:
        """Publish something for the editor to show beside the node (sample images, a table)."""
        self._emit(Preview(node_id=self.node_id, name=kind, payload=payload))

    def resolve_path(self, value: str) -> Path:
        """A path param as an absolute path: ``~`` expanded, relative paths taken from the workspace
        (:func:`nodeflow.paths.resolve`), never from the folder nodeflow was started in, so a graph
        reads the same folder from the command line, the editor and a worker process. The executor
        hands nodes their path params resolved already; this resolves the same way.

        In a run started from the editor or its HTTP API the path is resolved (symlinks followed)
        and must lie inside the allowed folders, checked here, when it is used: a folder swapped
        for a symlink after the edit was checked cannot lead outside. The command line is the
        user's own shell and stays unrestricted."""
        if self.allowed_roots is None:
            return resolve(value, self.workspace)
        try:
            return confine(value, self.allowed_roots, self.workspace)
        except PathNotAllowed as exc:
            raise ParamProblem(str(exc), param=self._path_params.get(value)) from None

    def check_files(self, files: Iterable[Path], param: str | None = None, port: str | None = None) -> None:
        """In a run from the editor or its HTTP API, refuse (naming ``param`` or the input ``port``)
        the files that are links to somewhere outside the allowed folders; a file is checked when
        the node is about to read it, not only the folder it was found in."""
        if self.allowed_roots is None:
            return
        outside = escaping(files, self.allowed_roots)
        if outside:
            raise ParamProblem(f"{len(outside)} file(s) here are links to outside the folders this editor may use "
                               f"(e.g. to '{os.path.realpath(outside[0])}'); copy the files in, or start the "
                               "editor with --allow-root for their folder", param=param, port=port)

    def check_inputs(self, node: type[Node], inputs: Mapping[str, Any]) -> None:
        """Check the files the node's inputs name (see :attr:`PortType.files`) before it reads them:
        a dataset's image swapped for a link to a file outside since the dataset node ran (same
        size, same time, so the same cache key) is refused, not read."""
        for port in node.inputs:
            value = inputs.get(port.name)
            if port.type.files is not None and value is not None:
                self.check_files((Path(file) for file in port.type.files(value)), port=port.name)

    @property
    def checkpoints(self) -> Path:
        """A folder for this exact node run (same params, same inputs) that outlives an interrupted
        or crashed attempt, so the next attempt can resume; removed once the node succeeds."""
        folder = self.workspace / "checkpoints" / (self.key or self.node_id)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @property
    def scratch_root(self) -> Path:
        """Where :attr:`scratch` is, whether or not the node made it."""
        if self._scratch is None:
            self._scratch = self.workspace / "scratch" / self.node_id
        return self._scratch

    @property
    def scratch(self) -> Path:
        """A folder this node may write files into (plots, CSVs); when the node succeeds they are
        moved into its cache entry and the run's log says where."""
        self.scratch_root.mkdir(parents=True, exist_ok=True)
        return self.scratch_root


class Node:
    """Base class of every node type. Subclasses set the class attributes and implement ``run``."""

    type: ClassVar[str] = ""
    title: ClassVar[str] = ""
    #: A title that follows the params, e.g. "Input layer ({height}×{width}×{channels})": a card
    #: shows it while its node has no title of its own (see :func:`auto_title`).
    title_template: ClassVar[str] = ""
    #: Templates for particular params, tried in order before ``title_template``: ``(when,
    #: template)``, where ``when`` maps params to the values they must have, e.g.
    #: ``({"feature_extractor": True}, "{arch} feature extractor")``.
    title_cases: ClassVar[tuple[tuple[Mapping[str, Any], str], ...]] = ()
    #: How a param's value reads in a title, by value ("imagenet" → "ImageNet weights"); ``"*"``
    #: words any other value, ``{}`` standing for it (a path's file name).
    title_words: ClassVar[Mapping[str, Mapping[str, str]]] = {}
    category: ClassVar[str] = "Other"
    description: ClassVar[str] = ""
    Params: ClassVar[type[NodeParams]] = NoParams
    inputs: ClassVar[tuple[Port, ...]] = ()
    outputs: ClassVar[tuple[Port, ...]] = ()
    #: Write outputs to the workspace, for later processes, when every output type has a codec;
    #: False for values cheaper to recompute than to store.
    persist: ClassVar[bool] = True
    #: Bump when ``run`` changes meaning, so old cached results stop matching.
    version: ClassVar[int] = 1
    #: What one run needs of the machine that runs it, e.g. ``{"GPU": 1}`` for a trainer; a Dask
    #: worker must offer it (``dask worker --resources GPU=1``), so two never share one GPU.
    resources: ClassVar[dict[str, float]] = {}

    def run(self, ctx: RunContext, params: Any, **inputs: Any) -> dict[str, Any]:
        raise NotImplementedError

    def estimate(self, ctx: RunContext, params: Any, **inputs: Any) -> dict[str, Any] | None:
        """What running this node will cost, measured without running it: a JSON-able dict with
        ``seconds`` (total) and, as far as the node knows them, ``epochs``, ``first_epoch_seconds``,
        ``epoch_seconds``, ``peak_memory_bytes``, ``memory_method``, ``device``, ``feature_cache``
        and ``notes``; and optionally ``stand_in``: output values that cost what the real outputs
        would (e.g. a trainer's untrained model), so nodes after it can be estimated before it runs.
        It must leave its inputs, the cache and the workspace's files as they were.

        None (the default) means the node is quick: the cost preview runs it for real, uncached,
        when a node with an estimate needs its outputs (a dataset scan, a model spec)."""
        return None

    @classmethod
    def has_estimate(cls) -> bool:
        """Whether this node type measures its own cost (overrides :meth:`estimate`)."""
        return cls.estimate is not Node.estimate

    @classmethod
    def infer(cls, params: Any, inputs: Mapping[str, Mapping[str, Any]],
              node_id: str | None = None) -> dict[str, dict[str, Any]]:
        """Static check before anything runs: given what is known of the inputs (plain JSON-able
        facts such as image size), return the facts of the outputs, or raise :class:`ParamProblem`
        naming what is wrong. ``node_id`` lets a node put its own id into the facts it sets, so a
        later node can name both ends of a mismatch (a formatter and an input layer)."""
        return {}

    @classmethod
    def warnings(cls, params: Any, inputs: Mapping[str, Mapping[str, Any]], node_id: str | None = None,
                 workspace: Path | None = None) -> list[ParamWarning]:
        """Static advice from the same facts :meth:`infer` gets (called after it succeeded): what
        will run, but probably not as meant (a ReLU on the output layer, weights that cannot be
        downloaded here). Validation shows them; they never block a run. ``workspace`` is where a
        run would look for downloaded files (None when unknown)."""
        return []

    @classmethod
    def script(cls, ctx: ScriptContext, params: Any, **inputs: Any) -> ScriptPart | None:
        """This node's part of the graph written as one standalone PyTorch script (``nodeflow
        export-script``): ``inputs`` are what the parts before it gave for its connected input
        ports (``ScriptPart.outputs``). None, the default, means no script form: the exporter
        leaves the node out, with a comment saying so, and the nodes that need its outputs too.
        Raise :class:`ParamProblem` when these params have no script form, naming the param."""
        return None

    @classmethod
    def measures(cls, params: Any) -> dict[str, str]:
        """The split each metric this node logs is measured on (``{"val_accuracy": "validation"}``;
        splits: train, validation, test), so a sweep is judged on validation before anything ran and
        a test metric used for choosing is flagged. The image count of a split is logged as the
        metric ``SPLIT_images``. Metrics left out are not measured on a split of images."""
        return {}

    @classmethod
    def recorded_elsewhere(cls, params: Any) -> bool:
        """Whether this process only takes part in a computation that another machine records under
        the same cache key: a machine after the first of a multi-node training, whose ``run`` returns
        nothing. Its outcome is "recorded elsewhere": the executor runs it without holding the key
        (the recording machine holds it, and waits for this one to join), then takes the outputs
        that machine wrote. Asked before ``run``, as holding the key would keep the machines apart."""
        return False

    @classmethod
    def fingerprint(cls, params: Any) -> str | None:
        """Part of the cache key that is not in the params, e.g. the state of files on disk. It may
        be memoised for the status an editor polls, but while :func:`fingerprints_fresh` holds (a
        run is being planned) it must reflect every file as it is now."""
        return None

    @classmethod
    def input_port(cls, name: str) -> Port | None:
        return next((p for p in cls.inputs if p.name == name), None)

    @classmethod
    def output_port(cls, name: str) -> Port | None:
        return next((p for p in cls.outputs if p.name == name), None)

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """The catalogue entry the CLI prints and the editor renders a node from."""

        def port(p: Port) -> dict[str, Any]:
            return {
                "name": p.name,
                "type": p.type.name,
                "accepts_as": p.type.ancestry(),
                "color": p.type.color,
                "description": plain_text(p.description),
                "optional": p.optional,
            }

        schema = cls.Params.model_json_schema()
        for prop in schema.get("properties", {}).values():
            if isinstance(prop.get("description"), str):
                prop["description"] = plain_text(prop["description"])
        return {
            "type": cls.type,
            "title": cls.title or cls.type,
            "category": cls.category,
            "description": plain_text(cls.description or (inspect.getdoc(cls) or "")),
            "inputs": [port(p) for p in cls.inputs],
            "outputs": [port(p) for p in cls.outputs],
            "title_template": cls.title_template,
            "title_cases": [{"when": dict(when), "template": template} for when, template in cls.title_cases],
            "title_words": {name: dict(words) for name, words in cls.title_words.items()},
            "params_schema": schema,
            "defaults": cls.Params().model_dump(mode="json") if _has_all_defaults(cls.Params) else {},
            "persist": cls.persist,
            "source": getattr(cls, "_nodeflow_source", "unknown"),
        }


#: a Sphinx role as docstrings write it: :meth:`cell_gallery`, :class:`~nodeflow.node.Node`, :ref:`title <target>`
_ROLE = re.compile(r":(?:[a-z]+:)?[a-z]+:`(~?)([^`<]*?)\s*(?:<[^>]*>)?`")


def plain_text(doc: str) -> str:
    """A docstring or description as the editor and the CLI show it: Sphinx roles and literal
    quotes (``x``) become their plain words (``~a.b.name`` its last part, as Sphinx shows it)."""
    def role(match: re.Match[str]) -> str:
        text = match.group(2)
        return text.rsplit(".", 1)[-1] if match.group(1) else text

    return _ROLE.sub(role, doc).replace("``", "")


class ParamProblem(Exception):
    """Raised by ``Node.infer`` (or ``run``) to blame a parameter or an input, and to say what to do.

    ``other_node`` names a second node the problem involves (e.g. a formatter whose image size
    does not match an input layer), so the message can name both; ``nodes``, every node the
    message quotes by id ('formatter'), which validation follows with the title on its card.
    """

    def __init__(self, message: str, param: str | None = None, port: str | None = None,
                 other_node: str | None = None, nodes: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.param = param
        self.port = port
        self.other_node = other_node
        self.nodes = tuple(nodes)


@dataclass(frozen=True)
class ParamWarning:
    """What :meth:`Node.warnings` gives: a message, the param or input port it is about, and
    ``node``, another node it is about when not the one warning (e.g. the trainer warning about the
    output layer it is fed). Messages quote nodes by id ('train')."""

    message: str
    param: str | None = None
    port: str | None = None
    node: str | None = None
    #: other nodes the message quotes by id, which validation follows with their card titles
    nodes: tuple[str, ...] = ()


def auto_title(entry: Mapping[str, Any], params: Mapping[str, Any]) -> str | None:
    """A title that follows a node's params, from its catalogue entry (:meth:`Node.describe`): the
    type's first ``title_cases`` template whose params match, else its ``title_template``, filled in
    with the params as ``title_words`` words them ("Input layer (64×64×3)", "ResNet-18 feature
    extractor"); or, for a node with a layer picker (``x-widget: layers``), what it unfreezes
    ("Unfreeze the last block", "Unfreeze block4, block5"); None for other nodes. ``params`` may
    leave out defaults."""
    values = {**(entry.get("defaults") or {}), **params}
    template = next((case["template"] for case in entry.get("title_cases") or ()
                     if all(name in values and values[name] == want for name, want in case["when"].items())),
                    entry.get("title_template"))
    if template:
        words = entry.get("title_words") or {}
        try:
            return template.format_map({**values, **{name: _worded(values[name], words[name])
                                                     for name in words if name in values}})
        except (KeyError, ValueError, IndexError, AttributeError):
            return None
    props = (entry.get("params_schema") or {}).get("properties", {})
    layers = [(name, prop) for name, prop in props.items() if prop.get("x-widget") == "layers"]
    if not layers:
        return None
    name, prop = layers[0]
    chosen = values.get(name) or []
    if chosen:
        return "Unfreeze " + ", ".join(map(str, chosen))
    last_n = values.get(prop["x-last-n"]) if prop.get("x-last-n") else 0
    if not isinstance(last_n, int) or last_n <= 0:
        return "Unfreeze nothing"
    return "Unfreeze the last block" if last_n == 1 else f"Unfreeze the last {last_n} blocks"


def _worded(value: Any, words: Mapping[str, str]) -> Any:
    """A param's value as a title says it: its word, else the ``"*"`` word around its file name
    (a path reads by its last part), else the value itself."""
    if isinstance(value, str) and value in words:
        return words[value]
    if "*" in words:
        return words["*"].replace("{}", re.split(r"[\\/]", str(value).rstrip("/\\"))[-1] or str(value))
    return value


def card_title(node: type[Node], title: str | None, params: Mapping[str, Any]) -> str:
    """The title a node's card shows: its own, else the one that follows its params, else its type's."""
    return title or auto_title(_entry(node), params) or node.title or node.type


@functools.cache
def _entry(node: type[Node]) -> dict[str, Any]:
    return node.describe()


# -- the graph as a PyTorch script (see nodeflow.script) ------------------------------------------


@dataclass(frozen=True)
class ScriptPart:
    """A node's part of the exported script: ``code``, statements for the script's ``main()`` (in
    the order the graph runs the nodes; ``results[node_id] = {...}`` reports metrics); ``setup``,
    statements ``main()`` starts with, said once however many parts need them (``device = ...``);
    the top-level ``functions`` they call (source text, shared by name with other parts); the
    ``imports`` they need; ``outputs``, what the parts after it get for each output port (a
    variable name, or a description such as a model's layers); and ``notes``, where the script
    knowingly differs from the graph's run (said in its docstring)."""

    code: str = ""
    outputs: Mapping[str, Any] = field(default_factory=dict)
    setup: tuple[str, ...] = ()
    functions: tuple[str, ...] = ()
    imports: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


class ScriptContext:
    """What :meth:`Node.script` sees: its node's id, the facts static checking found for its
    inputs (as :meth:`Node.infer` gets them), and :meth:`const`, which names one of its params as a
    constant at the top of the script."""

    def __init__(self, node_id: str, params: Any, facts: Mapping[str, Mapping[str, Any]],
                 constants: dict[str, tuple[Any, str]]) -> None:
        self.node_id = node_id
        self.params = params
        self.facts = facts
        self._constants = constants

    def name(self, stem: str = "") -> str:
        """A Python name of this node's, e.g. ``train_model`` for node ``train`` and stem ``model``."""
        base = "".join(c if c.isalnum() or c == "_" else "_" for c in self.node_id)
        return f"{base}_{stem}" if stem else base

    def const(self, param: str, value: Any = ...) -> str:
        """The name of the constant that holds ``param`` (``TRAIN_LR`` for ``train.lr``), declared
        at the top of the script with the param's value (or ``value``)."""
        name = self.name(param).upper()
        self._constants[name] = (getattr(self.params, param) if value is ... else value, f"{self.node_id}.{param}")
        return name


def _has_all_defaults(model: type[BaseModel]) -> bool:
    return all(not f.is_required() for f in model.model_fields.values())


class UnknownNodeType(KeyError):
    def __init__(self, type_name: str, suggestions: list[str]) -> None:
        hint = f"; did you mean {', '.join(repr(s) for s in suggestions)}?" if suggestions else ""
        super().__init__(f"unknown node type '{type_name}'{hint}")
        self.type_name = type_name
        self.suggestions = suggestions

    def __str__(self) -> str:
        return self.args[0]


@guarded
class Registry:
    """Node types by their ``type`` id. Built from entry points or from explicit modules."""

    def __init__(self, nodes: Iterable[type[Node]] = ()) -> None:
        self._types: dict[str, type[Node]] = {}
        #: How this registry was built, so a worker process can build the same one.
        self.origins: list[tuple[str, Any]] = []
        for node in nodes:
            self.add(node)

    @writes
    def add(self, node: type[Node], source: str | None = None) -> None:
        if not node.type:
            raise ValueError(f"{node.__qualname__} has no 'type'")
        existing = self._types.get(node.type)
        if existing is not None and existing is not node:
            raise ValueError(
                f"node type '{node.type}' is defined twice: {existing.__module__}.{existing.__qualname__}"
                f" and {node.__module__}.{node.__qualname__}"
            )
        if source is not None:
            node._nodeflow_source = source  # type: ignore[attr-defined]
        self._types[node.type] = node

    @writes
    def add_module(self, module: ModuleType, source: str | None = None) -> None:
        """Add every Node subclass defined in ``module`` and, for a package, in its submodules."""
        self.origins.append(("module", getattr(module, "__file__", None) if module.__name__.startswith(_FILE_MODULE)
                             else module.__name__, source))
        self._add_module_nodes(module, source)

    def _add_module_nodes(self, module: ModuleType, source: str | None) -> None:
        for mod in _walk(module):
            # type(obj), not isinstance: a module that loads when first touched stays unloaded
            for obj in [value for value in vars(mod).values() if issubclass(type(value), type)]:
                if issubclass(obj, Node) and obj is not Node and obj.type and obj.__module__ == mod.__name__:
                    self.add(obj, source or module.__name__)

    @reads
    @classmethod
    def discover(cls, plugins: bool = True, group: str = ENTRY_POINT_GROUP) -> Registry:
        """Load node types from the ``nodeflow.nodes`` entry points (the built-ins register there
        too). With ``plugins=False`` only entry points of the nodeflow distribution are loaded."""
        registry = cls()
        registry.origins.append(("discover", plugins, group))
        for ep in sorted(entry_points(group=group), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else "?"
            if not plugins and dist_name != "nodeflow":
                continue
            target = ep.load()
            source = "built-in" if dist_name == "nodeflow" else f"plugin {dist_name}"
            if isinstance(target, ModuleType):
                registry._add_module_nodes(target, source)
            elif callable(target):
                for node in target():
                    registry.add(node, source)
        return registry

    @reads
    @classmethod
    def rebuild(cls, origins: list[tuple[str, Any]]) -> Registry:
        """The registry that ``origins`` (another registry's) describes, e.g. in a worker process."""
        registry = cls()
        for kind, *args in origins:
            if kind == "discover":
                plugins, group = args
                found = cls.discover(plugins=plugins, group=group)
                for node in found:
                    registry.add(node)
                registry.origins.extend(found.origins)
            else:
                ref, source = args
                registry.add_module(import_module_or_file(ref), source)
        return registry

    @reads
    def get(self, type_name: str) -> type[Node]:
        try:
            return self._types[type_name]
        except KeyError:
            close = difflib.get_close_matches(type_name, list(self._types), n=3, cutoff=0.5)
            raise UnknownNodeType(type_name, close) from None

    @reads
    def __contains__(self, type_name: object) -> bool:
        return type_name in self._types

    @reads
    def __iter__(self):
        return iter(sorted(self._types.values(), key=lambda n: (n.category, n.type)))

    @reads
    def __len__(self) -> int:
        return len(self._types)

    @reads
    def catalogue(self) -> list[dict[str, Any]]:
        return [node.describe() for node in self]


_FILE_MODULE = "nodeflow_user_nodes_"


def import_module_or_file(ref: str) -> ModuleType:
    """A module name (``my_pkg.nodes``) or the path of a ``.py`` file of node classes."""
    import sys

    if ref.endswith(".py"):
        path = Path(ref)
        if not path.is_file():
            raise ImportError(f"no such file: {ref}")
        name = f"{_FILE_MODULE}{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {ref}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(ref)


#: a package's list of its subpackages that hold no node classes, which the scan does not import
NOT_NODES = "nodeflow_not_nodes"
#: a package's list of the modules its nodes import when they run, which the processes that run them load once
PRELOAD = "nodeflow_preload"


def preloaded_modules(group: str = ENTRY_POINT_GROUP) -> list[str]:
    """The modules the built-in catalogue (the entry points of the nodeflow distribution) names in
    ``nodeflow_preload``: what every process that runs its nodes imports anyway. A plugin's are left out:
    a server started without plugins must not import one."""
    found: list[str] = []
    for ep in entry_points(group=group):
        dist = getattr(ep, "dist", None)
        if dist is None or dist.metadata["Name"] != "nodeflow":
            continue
        target = ep.load()
        found += [name for name in getattr(target, PRELOAD, ()) if name not in found]
    return found


def _walk(module: ModuleType) -> Iterable[ModuleType]:
    """``module`` and, for a package, its modules, leaving out private ones (``_name``) and those
    under the subpackages it names in ``nodeflow_not_nodes`` (the built-in catalogue's torch engine:
    reading the catalogue then does not pay for importing torch)."""
    yield module
    if hasattr(module, "__path__"):
        skipped = tuple(f"{module.__name__}.{name}" for name in getattr(module, NOT_NODES, ()))
        for info in pkgutil.walk_packages(module.__path__, prefix=module.__name__ + "."):
            if info.name.rsplit(".", 1)[-1].startswith("_") or any(
                    info.name == name or info.name.startswith(name + ".") for name in skipped):
                continue
            yield importlib.import_module(info.name)
