"""What a run tells, as typed records, and the one reducer that folds them into each node's state.

A node reports through its :class:`~nodeflow.node.RunContext` (progress, metrics, logs, previews);
the scheduler (:mod:`nodeflow.scheduler`) alone says what became of a node: finished (ran or from
the cache), failed, skipped or stopped. Every view of a run (the editor's cards, the minimap, the
Output tab, the Runs panel, ``GET /api/status``, the run history and the terminal) reads the
:class:`NodeState` that :func:`fold` makes of these events, so they cannot disagree.

Events cross processes (a worker process, a Dask worker) as JSON, written and read here only
(:func:`to_json`, :func:`from_json`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from nodeflow.words import rough_seconds


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of every event: ``node_id`` is None for events about a whole run."""

    #: the event's name in its JSON form (what a stored run, a worker's pipe and the browser read); code
    #: tells events apart by their class (``match event: case NodeStopped(...)``), never by this name
    kind: ClassVar[str]
    #: the event's fields under other names in its JSON form (a field may not be called ``kind``)
    json_names: ClassVar[dict[str, str]] = {}
    node_id: str | None = None

    @property
    def data(self) -> dict[str, Any]:
        """The event's fields (all but ``node_id``) as its JSON payload; an optional field left at
        None is left out (reading it back gives None again)."""
        return {self.json_names.get(f.name, f.name): getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "node_id" and not (getattr(self, f.name) is None and f.default is None)}


@dataclass(frozen=True, kw_only=True)
class RunQueued(Event):
    """A run was accepted and waits for its turn; ``plan``: node -> "run" | "cached"."""

    kind: ClassVar[str] = "run_queued"
    plan: dict[str, str] = field(default_factory=dict)
    target: str | None = None


@dataclass(frozen=True, kw_only=True)
class RunStarted(Event):
    kind: ClassVar[str] = "run_started"
    plan: dict[str, str] = field(default_factory=dict)
    target: str | None = None


@dataclass(frozen=True, kw_only=True)
class NodeStarted(Event):
    kind: ClassVar[str] = "node_started"
    key: str = ""
    type: str = ""


@dataclass(frozen=True, kw_only=True)
class Progress(Event):
    """``done`` of ``total`` (batches, images...); a training also says how many of its ``epochs``
    it has completed (``epoch``), so a view can say "epoch 12/40" and a stop "stopped at epoch 11/40"."""

    kind: ClassVar[str] = "progress"
    done: float = 0.0
    total: float = 1.0
    message: str = ""
    epoch: int | None = None
    epochs: int | None = None


@dataclass(frozen=True, kw_only=True)
class Metric(Event):
    """A number a node logged; with ``step`` it is a point of a curve (an epoch)."""

    kind: ClassVar[str] = "metric"
    name: str = ""
    value: float = 0.0
    step: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def data(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "step": self.step, **self.extra}


@dataclass(frozen=True, kw_only=True)
class Log(Event):
    kind: ClassVar[str] = "log"
    message: str = ""


@dataclass(frozen=True, kw_only=True)
class Preview(Event):
    """Something to show beside a node (sample images, a plot): ``name`` says what it is."""

    kind: ClassVar[str] = "preview"
    json_names: ClassVar[dict[str, str]] = {"name": "kind"}
    name: str = ""
    payload: Any = None


@dataclass(frozen=True, kw_only=True)
class NodeFinished(Event):
    """A node has its outputs for ``key``: computed now (``from_cache`` False) or taken from the cache."""

    kind: ClassVar[str] = "node_finished"
    key: str = ""
    seconds: float = 0.0
    from_cache: bool = False
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class NodeFailed(Event):
    """``param`` names the parameter the failure blames, when it blames one."""

    kind: ClassVar[str] = "node_failed"
    key: str = ""
    message: str = ""
    traceback: str = ""
    param: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True, kw_only=True)
class NodeSkipped(Event):
    kind: ClassVar[str] = "node_skipped"
    reason: str = "an input did not finish"


@dataclass(frozen=True, kw_only=True)
class NodeStopped(Event):
    """A node stopped on request. ``epoch`` of ``epochs`` were completed (a training), and
    ``resumable`` says whether the next run continues from its checkpoint."""

    kind: ClassVar[str] = "node_stopped"
    key: str = ""
    seconds: float = 0.0
    epoch: int | None = None
    epochs: int | None = None
    resumable: bool = False


@dataclass(frozen=True, kw_only=True)
class RunFinished(Event):
    kind: ClassVar[str] = "run_finished"
    ok: bool = False
    interrupted: bool = False
    nodes: dict[str, Any] = field(default_factory=dict)


EVENT_TYPES: dict[str, type[Event]] = {cls.kind: cls for cls in (
    RunQueued, RunStarted, NodeStarted, Progress, Metric, Log, Preview, NodeFinished, NodeFailed, NodeSkipped,
    NodeStopped, RunFinished)}


def to_json(event: Event) -> dict[str, Any]:
    """An event as plain JSON values, to cross a process or a machine, whatever a node put in it."""
    return {"kind": event.kind, "node_id": event.node_id, "data": _plain(event.data)}


def from_json(message: dict[str, Any]) -> Event:
    """The event :func:`to_json` wrote; unknown payload keys of a metric go to its ``extra``."""
    cls = EVENT_TYPES[message["kind"]]
    data = dict(message.get("data") or {})
    fields = {f.name for f in dataclasses.fields(cls)} - {"node_id"}
    names = {json_name: name for name, json_name in cls.json_names.items()}
    args = {names.get(k, k): v for k, v in data.items() if names.get(k, k) in fields}
    if cls is Metric:
        args["extra"] = {k: v for k, v in data.items() if k not in ("name", "value", "step")}
    return cls(node_id=message.get("node_id"), **args)


def _plain(value: Any) -> Any:
    import json

    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return {"message": str(value)}


# -- the state of a node, as every view shows it --------------------------------------------------------

#: every state a node can be in, in the words every view uses:
#: idle (never ran), stale (ran before with other params or inputs), queued, running, done (computed
#: by its latest run), cached (its latest run took it from the cache), failed, stopped (on request;
#: may resume), interrupted (the process running it died under it: kill -9, power lost; found when the
#: run store is next opened), skipped (an input did not finish), invalid (the graph says it cannot run),
#: disabled (left out of runs by the user)
STATES = ("idle", "stale", "queued", "running", "done", "cached", "failed", "stopped", "interrupted", "skipped",
          "invalid", "disabled")
#: what became of a whole run, in the same words as its nodes' states where they mean the same: stopped
#: on request, interrupted when the process running it died; cancelled while it waited in the queue
RUN_STATUSES = ("queued", "running", "done", "failed", "stopped", "interrupted", "cancelled")
#: states a node keeps after its run ended that a person reads as "it did not finish": the next run
#: computes it again (a stopped or interrupted training resumes from its checkpoint)
UNFINISHED = ("failed", "stopped", "interrupted")
#: states in which a node is part of a run that has not finished
ACTIVE = ("queued", "running")
#: the most points a curve keeps while a run goes on
SERIES_LIMIT = 5000


@dataclass
class NodeState:
    """What is known of one node: its state, and of its latest run the progress, metrics, curves,
    previews and error. Made by :func:`fold`; stored per run by the run history."""

    state: str = "idle"
    key: str | None = None
    progress: float = 0.0
    message: str = ""
    #: a training: epochs completed and the total
    epoch: int | None = None
    epochs: int | None = None
    #: seconds left, from the pace of this run so far (None before it can be told)
    eta: float | None = None
    resumable: bool = False
    error: str | None = None
    traceback: str | None = None
    #: the parameter a failure blames
    param: str | None = None
    seconds: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    #: metric name -> [{"step", "value", ...}]
    series: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    previews: dict[str, Any] = field(default_factory=dict)
    started: float | None = None
    finished: float | None = None
    #: what the run before showed ({"series", "metrics", "started", "finished"}), kept while a new run
    #: of the node waits or goes, so its curves can stay (greyed) until the new ones replace them
    previous: dict[str, Any] | None = None
    #: wall time and progress when this run's progress began, for the ETA
    paced: tuple[float, float] | None = None

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("paced")
        return data

    def words(self) -> str:
        """The state as a person reads it on a card, in the Output tab and in the Runs panel."""
        return describe(self.state, self.epoch, self.epochs, self.resumable, self.progress, self.eta)

    def view(self) -> dict[str, Any]:
        """What every view shows of the node (a copy): its fields, its words, the param its error
        blames and when its run began and ended."""
        view = self.to_json()  # asdict: copies of its dicts and lists
        view["words"] = self.words()
        view["error_param"] = self.param
        view["run"] = {"started": self.started, "finished": self.finished}
        return view


def describe(state: str, epoch: int | None = None, epochs: int | None = None, resumable: bool = False,
             progress: float = 0.0, eta: float | None = None) -> str:
    """One line for a node's state: "running · epoch 12/40 · 3 min left", "stopped at epoch 11/40 ·
    resumes from its checkpoint"."""
    if state == "running":
        parts = ["running"]
        if epoch is not None and epochs:
            parts.append(f"epoch {min(epoch + 1, epochs)}/{epochs}")
        else:
            parts.append(f"{progress:.0%}")
        if eta is not None:
            parts.append(f"{rough_seconds(eta)} left")
        return " · ".join(parts)
    if state == "stopped":
        return stopped_words(epoch, epochs, resumable)
    if state == "interrupted":
        return "interrupted · the process running it ended"
    return {"idle": "not run", "stale": "stale", "skipped": "skipped"}.get(state, state)


def stopped_words(epoch: int | None, epochs: int | None, resumable: bool, by: str = "") -> str:
    """"stopped at epoch 11/40 · resumes from its checkpoint"; ``by`` says who stopped it."""
    where = f"stopped{by} at epoch {epoch}/{epochs}" if epoch is not None and epochs else f"stopped{by}"
    return f"{where} · resumes from its checkpoint" if resumable else f"{where} · starts again when run"


def log_line(event: Event, node: NodeState) -> tuple[str, str] | None:
    """What the editor's log says of a node's ``event`` (its kind and message), given the node's state
    after it; None: the log says nothing of it."""
    match event:
        case Log(message=message) | NodeFailed(message=message):
            return event.kind, message or event.kind
        case NodeStopped():
            return "stopped", stopped_words(node.epoch, node.epochs, node.resumable, " by the user") + \
                "; finished nodes stay cached"
        case NodeFinished(from_cache=True):
            return event.kind, "cached"
        case NodeFinished(seconds=seconds):
            return event.kind, f"done in {seconds:.2f}s"
    return None


def fold(node: NodeState, event: Event, now: float | None = None) -> NodeState:
    """``node`` after ``event`` (changed in place and returned): the one place that turns events into
    a node's state."""
    now = time.time() if now is None else now
    if isinstance(event, (RunQueued, RunStarted)):
        action = event.plan.get(event.node_id or "")
        if action == "run" and node.state == "running" and isinstance(event, RunQueued):
            pass  # running now, and queued again behind that: it shows what it does now
        elif action == "run":
            _keep_previous(node)
            node.state, node.progress, node.error, node.param, node.eta = "queued", 0.0, None, None, None
            node.epoch = node.epochs = None
        elif action == "cached":  # its key is told when the run reaches it
            node.state, node.key = "cached", None
    elif isinstance(event, NodeStarted):
        _keep_previous(node)
        node.state, node.key, node.progress, node.message = "running", event.key, 0.0, ""
        node.error = node.traceback = node.param = None
        node.eta, node.paced, node.epoch, node.epochs = None, None, None, None
        node.started, node.finished, node.seconds = now, None, None
    elif isinstance(event, Progress):
        fraction = min(1.0, float(event.done) / float(event.total or 1))
        node.progress, node.message = fraction, event.message
        if event.epochs:
            node.epoch, node.epochs = event.epoch, event.epochs
        if node.paced is None:
            node.paced = (now, fraction)
        else:
            began, start = node.paced
            if fraction > start and now > began:
                node.eta = (now - began) / (fraction - start) * (1.0 - fraction)
    elif isinstance(event, Metric):
        node.metrics[event.name] = event.value
        if event.step is not None or not event.name.startswith("batch"):
            series = node.series.setdefault(event.name, [])
            point = {"step": event.step if event.step is not None else len(series), "value": event.value,
                     **event.extra}
            if series and series[-1]["step"] == point["step"]:
                series[-1] = point  # the same step again (a resumed run re-tells its earlier epochs)
            else:
                series.append(point)
            del series[:-SERIES_LIMIT]
    elif isinstance(event, Preview):
        node.previews[event.name] = event.payload
    elif isinstance(event, NodeFinished):
        node.state = "cached" if event.from_cache else "done"
        node.key, node.progress, node.eta, node.finished = event.key, 1.0, None, now
        node.seconds = event.seconds
        node.error = node.traceback = node.param = None
        if event.metrics or event.from_cache:
            node.metrics = dict(event.metrics)
    elif isinstance(event, NodeFailed):
        node.state, node.error, node.traceback, node.param = "failed", event.message, event.traceback, event.param
        node.key = event.key or node.key
        node.eta, node.finished, node.seconds = None, now, event.seconds
    elif isinstance(event, NodeSkipped):
        node.state, node.eta = "skipped", None
    elif isinstance(event, NodeStopped):
        node.state, node.key, node.eta, node.finished = "stopped", event.key or node.key, None, now
        node.seconds, node.resumable = event.seconds, event.resumable
        node.error = None
        if event.epochs:
            node.epoch, node.epochs = event.epoch, event.epochs
    return node


def _keep_previous(node: NodeState) -> None:
    """Move what the node shows into ``previous`` (when it shows anything) and clear it for a new run."""
    if node.series or node.metrics:
        node.previous = {"series": node.series, "metrics": node.metrics, "started": node.started,
                         "finished": node.finished}
    node.series, node.metrics = {}, {}


class Board:
    """The states of a run's nodes, folded from its events (:func:`fold`); thread-safe enough for one
    writer (the run's thread) and readers that copy."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeState] = {}

    def apply(self, event: Event) -> list[str]:
        """Fold ``event`` in; returns the ids of the nodes it changed."""
        if isinstance(event, (RunQueued, RunStarted)):
            for node_id in event.plan:
                state = self.nodes.setdefault(node_id, NodeState())
                fold(state, dataclasses.replace(event, node_id=node_id))
            return list(event.plan)
        if event.node_id is None:
            return []
        fold(self.nodes.setdefault(event.node_id, NodeState()), event)
        return [event.node_id]

    def get(self, node_id: str) -> NodeState | None:
        return self.nodes.get(node_id)

    def view(self, node_id: str, state: str, key: str | None, seen: Seen | None, pending: set[str], running: bool,
             stored: Callable[[str, str | None], dict[str, Any]], metrics: Callable[[str], dict[str, float]]) -> dict:
        """What every view shows of a node: what a run of this board tells while it is queued or
        running, or told last of the node's current ``key``; else its ``state`` as the cache and a
        history say it (``seen``), with the curves ``stored`` (a key and, for a node left unfinished,
        its id) and, for a result no run recorded (an older store, a copied cache), its ``metrics``.
        ``pending``: the nodes queued or running runs will compute; ``running``: whether one runs."""
        live = self.nodes.get(node_id)
        if live is not None and (node_id in pending and live.state in ACTIVE or live.state == "running" and running):
            return live.view()  # queued or running now
        if live is not None and key is not None and live.key == key and live.state in SETTLED and state != "disabled":
            return live.view()  # what this board's latest run of it told
        shown = NodeState(state=state, key=key)
        if seen is not None and seen.same is not None and state != "disabled":  # what the store kept of it
            for name in ("error", "param", "epoch", "epochs", "resumable", "seconds", "metrics"):
                setattr(shown, name, getattr(seen.same, name))
        if state in ("done", "cached", *UNFINISHED) and key is not None:
            curves = stored(key, None if state in ("done", "cached") else node_id)
            shown.series, shown.started, shown.finished = curves["series"], curves["started"], curves["finished"]
            if not shown.metrics and state in ("done", "cached"):
                shown.metrics = metrics(key)
        view = shown.view()
        if live is not None and live.previous and live.state in ACTIVE:
            view["previous"] = live.previous
        return view


#: states a node's run ends in, which a history keeps
SETTLED = ("done", "cached", "failed", "stopped")


@dataclass(frozen=True)
class Seen:
    """What a history knows of a node: its latest settled state for the node's current cache key
    (``same``), and whether it had a result (done or cached) before under any key (``before``)."""

    same: NodeState | None = None
    before: bool = False


def derive(key: str | None, cached: bool, seen: Seen | None) -> str:
    """A node's state when no run is telling it otherwise, from its current cache ``key`` (None: the
    graph says it cannot run), whether the cache holds that key, and what a history (:class:`Memory`,
    or the run store across restarts) saw of it."""
    if key is None:
        return "invalid"
    same = seen.same if seen is not None else None
    if cached:
        return "done" if same is not None and same.state == "done" else "cached"
    if same is not None and same.state in UNFINISHED:
        return same.state
    return "stale" if seen is not None and seen.before else "idle"


class Memory:
    """The latest settled state of each node and key an executor ran, kept in memory: the history of
    an executor that has no run store (a script, a test, a worker process)."""

    def __init__(self) -> None:
        self.board = Board()
        self.settled: dict[tuple[str, str], NodeState] = {}
        self.nodes: set[str] = set()

    def __call__(self, event: Event) -> None:
        for node_id in self.board.apply(event):
            state = self.board.nodes[node_id]
            if state.state in SETTLED and state.key:
                self.settled[(node_id, state.key)] = dataclasses.replace(state)
                if state.state in ("done", "cached"):
                    self.nodes.add(node_id)

    def seen(self, keys: dict[str, str | None]) -> dict[str, Seen]:
        return {n: Seen(self.settled.get((n, k)) if k else None, n in self.nodes) for n, k in keys.items()}
