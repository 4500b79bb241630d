"""Run history, model lineage, sweeps and the run queue, in one SQLite file in the workspace.

Every run (from the command line, the editor or the HTTP API) is a row: its graph document and
hash, the params changed since the previous run of the same graph, what each node did, its final
metrics and per-epoch curves, and the model versions it produced. A version is a node result
named by its cache key; it keeps the keys of the results it was made from, so lineage is a walk
over cache keys. The latest settled state of every node and key (done, cached, failed, stopped)
is kept too, so what the editor shows survives a restart; a sweep is a row and its branches' runs.

The store is fed from a run's events (:class:`RunRecorder`, through the one reducer of
:mod:`nodeflow.events`), never by the scheduler itself.
Writes are transactions in WAL mode, so a run killed at any moment leaves whole rows; a row left
``running`` by a process that is gone is marked ``interrupted`` when the store is next opened, and so
is the node it was running. A run stopped on request is ``stopped``, as its node's card says: the
statuses are the node states' words (:data:`nodeflow.events.RUN_STATUSES`).
"""

from __future__ import annotations
from nodeflow.access import guarded, reads, writes

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodeflow.events import (RUN_STATUSES, SETTLED, Board, Event, Log, Metric, NodeFinished, NodeState, Preview,
                             Progress, RunStarted, Seen)
from nodeflow.graph import Graph
from nodeflow.paths import resolved_params

STATUSES = RUN_STATUSES
FINISHED = tuple(s for s in RUN_STATUSES if s not in ("queued", "running"))
#: the store's format (SQLite's user_version): 1 once runs stopped on request read "stopped" (before,
#: they read "interrupted", as runs whose process died still do)
FORMAT = 1
#: why a run whose process died is interrupted, as its record says
DIED = "the process running it stopped (killed or power lost)"
#: a running row whose owner has not written for this long is taken as dead (pid reuse after a reboot)
HEARTBEAT_STALE_SECONDS = 90.0
HEARTBEAT_SECONDS = 10.0
#: the port type whose results count as model versions
MODEL_TYPE = "Model"

#: ids of runs this process is executing, so reopening the store here does not take them for dead
_ACTIVE: set[tuple[str, int]] = set()

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    graph_name TEXT NOT NULL,
    graph_hash TEXT NOT NULL,
    graph TEXT NOT NULL,
    target TEXT,
    source TEXT NOT NULL,
    status TEXT NOT NULL,
    requested REAL NOT NULL,
    started REAL,
    ended REAL,
    pid INTEGER,
    heartbeat REAL,
    changes TEXT NOT NULL DEFAULT '{}',
    nodes TEXT NOT NULL DEFAULT '{}',
    models TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    warnings TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS runs_by_graph ON runs (graph_name, id);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, id);
CREATE TABLE IF NOT EXISTS curves (
    run_id INTEGER NOT NULL REFERENCES runs (id),
    node TEXT NOT NULL,
    name TEXT NOT NULL,
    step INTEGER NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (run_id, node, name, step)
);
CREATE TABLE IF NOT EXISTS versions (
    key TEXT PRIMARY KEY,
    node TEXT NOT NULL,
    type TEXT NOT NULL,
    params TEXT NOT NULL,
    given TEXT NOT NULL DEFAULT '{}',
    fingerprint TEXT,
    inputs TEXT NOT NULL,
    is_model INTEGER NOT NULL,
    metrics TEXT NOT NULL DEFAULT '{}',
    run_id INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS versions_by_node ON versions (node, created);
CREATE TABLE IF NOT EXISTS node_states (
    node TEXT NOT NULL,
    key TEXT NOT NULL,
    state TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    updated REAL NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (node, key)
);
CREATE INDEX IF NOT EXISTS node_states_by_node ON node_states (node, updated);
CREATE TABLE IF NOT EXISTS sweeps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    grid TEXT NOT NULL,
    target TEXT,
    metric TEXT,
    graph_name TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sweep_branches (
    sweep_id INTEGER NOT NULL REFERENCES sweeps (id),
    branch INTEGER NOT NULL,
    run_id INTEGER NOT NULL REFERENCES runs (id),
    params TEXT NOT NULL,
    PRIMARY KEY (sweep_id, branch)
);
CREATE INDEX IF NOT EXISTS sweep_branches_by_run ON sweep_branches (run_id);
"""
#: what a node state is called in a run's record (``GET /api/runs/ID``, ``nodeflow runs show``)
REPORT_WORDS = {"done": "ran", "cached": "cached", "failed": "failed", "skipped": "skipped",
                "stopped": "stopped", "running": "running", "queued": "planned"}
#: a queued run's place in the queue (1: next), read in the same query as its status, so the two agree
POSITION = "(CASE WHEN r.status = 'queued' THEN (SELECT COUNT(*) FROM runs q WHERE q.status = 'queued' AND q.id <= r.id) END)"
#: what of a settled node state the store keeps beside its key (the curves are kept per run)
KEPT = ("error", "param", "epoch", "epochs", "resumable", "seconds", "metrics")


#: the run store's file in a workspace
STORE_FILE = "runs.sqlite"


def has_queued_runs(workspace: Path) -> bool:
    """Whether the workspace's run store holds queued runs, read without opening the store for
    writing (a shared server asks this of every project when it starts)."""
    store = Path(workspace) / STORE_FILE
    if not store.is_file():
        return False
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT 1 FROM runs WHERE status = 'queued' LIMIT 1").fetchone() is not None
    except sqlite3.Error:
        return False


class RunNotFound(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def run_number(run_id: int | str) -> int:
    """A run id as the database stores it (a positive 64-bit integer), or RunNotFound."""
    try:
        number = int(run_id)
    except (TypeError, ValueError):
        raise RunNotFound(f"no run '{run_id}': run ids are numbers (see 'nodeflow runs')") from None
    if not 0 < number < 2**63:
        raise RunNotFound(f"no run {number} (see 'nodeflow runs')")
    return number


def graph_hash(graph: Graph) -> str:
    """What the graph computes (node types, params, edges), not where its boxes are drawn."""
    data = graph.model_dump(mode="json")
    body = {"nodes": sorted(([n["id"], n["type"], n.get("params") or {}] for n in data["nodes"]), key=lambda x: x[0]),
            "edges": sorted([e["source"], e["source_port"], e["target"], e["target_port"]] for e in data["edges"])}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def flat_params(graph_doc: dict[str, Any]) -> dict[str, Any]:
    """``node.param`` -> value for every param written in a graph document."""
    return {f"{n['id']}.{name}": value for n in graph_doc.get("nodes", [])
            for name, value in (n.get("params") or {}).items()}


def param_changes(before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``node.param`` -> {"from", "to"} for params that differ; added and removed nodes as ``node``."""
    if before is None:
        return {}
    old, new = flat_params(before), flat_params(after)
    old_nodes = {n["id"] for n in before.get("nodes", [])}
    new_nodes = {n["id"] for n in after.get("nodes", [])}
    changes: dict[str, dict[str, Any]] = {}
    for name in sorted(set(old) | set(new)):
        node = name.split(".", 1)[0]
        if node not in old_nodes or node not in new_nodes:
            continue
        if old.get(name) != new.get(name):
            changes[name] = {"from": old.get(name), "to": new.get(name)}
    for node in sorted(new_nodes - old_nodes):
        changes[node] = {"from": None, "to": "added"}
    for node in sorted(old_nodes - new_nodes):
        changes[node] = {"from": "removed", "to": None}
    return changes


def metric_deltas(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``node.metric`` -> {"a", "b", "delta"} for every numeric final metric of either side."""
    out: dict[str, dict[str, Any]] = {}
    for node in sorted(set(a) | set(b)):
        ma = (a.get(node) or {}).get("metrics") or {}
        mb = (b.get(node) or {}).get("metrics") or {}
        for name in sorted(set(ma) | set(mb)):
            va, vb = ma.get(name), mb.get(name)
            if not isinstance(va, (int, float, type(None))) or not isinstance(vb, (int, float, type(None))):
                continue
            delta = vb - va if va is not None and vb is not None else None
            out[f"{node}.{name}"] = {"a": va, "b": vb, "delta": delta}
    return out


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class NodeFacts:
    """What lineage needs to know of a node, gathered before a run from the executor's check."""

    type: str
    params: dict[str, Any]
    fingerprint: str | None
    #: the params as the graph document writes them (the ones a person chose), for short displays
    given: dict[str, Any]
    inputs: dict[str, dict[str, Any]]
    is_model: bool


def graph_facts(executor: Any, graph: Graph) -> dict[str, NodeFacts]:
    """Each node's cache key inputs (the keys of the results feeding it), validated params,
    fingerprint and whether it outputs a model; nodes that do not validate are left out."""
    keys = executor.keys(graph)
    facts: dict[str, NodeFacts] = {}
    for spec in graph.nodes:
        if spec.id not in keys or spec.type not in executor.registry:
            continue
        node = executor.registry.get(spec.type)
        try:
            params = resolved_params(node.Params.model_validate(spec.params), executor.path_base)  # as the key has them
        except Exception:
            continue
        try:
            fingerprint = node.fingerprint(params)
        except Exception as exc:  # as the executor does: a fingerprint never stops a run
            fingerprint = f"unavailable:{type(exc).__name__}"
        inputs = {}
        for edge in graph.incoming(spec.id):
            source = executor.registry.get(graph.node(edge.source).type) if graph.has_node(edge.source) else None
            port = source.output_port(edge.source_port) if source is not None else None
            inputs[edge.target_port] = {"node": edge.source, "port": edge.source_port, "key": keys.get(edge.source),
                                        "types": port.type.ancestry() if port is not None else []}
        is_model = any(MODEL_TYPE in p.type.ancestry() for p in node.outputs)
        facts[spec.id] = NodeFacts(spec.type, params.model_dump(mode="json"),
                                   None if fingerprint is None else str(fingerprint), dict(spec.params), inputs,
                                   is_model)
    return facts


#: how many stored curves (per cache key, or node of a run) a store keeps at hand for the Output tabs
SHOWN_CURVES = 256


@guarded
class RunStore:
    """The runs database of one workspace. Safe to share between threads."""

    def __init__(self, workspace: Path, placing: Callable[[int, int], int | None] | None = None) -> None:
        self.path = Path(workspace) / STORE_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        #: on a machine several stores share (a multi-user server), a queued run's place in the
        #: machine's queue, given the run and its place in this store's; None: this store's place
        self.placing = placing
        self._shown: dict[str, dict[str, Any]] = {}  # shown_curves's, by key or "run N node"
        with self._lock:
            self._db.executescript(SCHEMA)
            columns = {r["name"] for r in self._db.execute("PRAGMA table_info(versions)")}
            if "given" not in columns:  # a store written before versions kept the params as given
                self._db.execute("ALTER TABLE versions ADD COLUMN given TEXT NOT NULL DEFAULT '{}'")
            if "warnings" not in {r["name"] for r in self._db.execute("PRAGMA table_info(runs)")}:
                self._db.execute("ALTER TABLE runs ADD COLUMN warnings TEXT NOT NULL DEFAULT '[]'")
        self._name_stops()
        self._import_sweep_files()
        self.recover()

    @writes
    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- transactions -------------------------------------------------------------------------------
    class _Tx:
        def __init__(self, store: RunStore) -> None:
            self.store = store

        def __enter__(self) -> sqlite3.Connection:
            self.store._lock.acquire()
            self.store._db.execute("BEGIN IMMEDIATE")
            return self.store._db

        def __exit__(self, kind, exc, tb) -> None:
            try:
                self.store._db.execute("ROLLBACK" if kind else "COMMIT")
            finally:
                self.store._lock.release()

    def _tx(self) -> RunStore._Tx:
        return RunStore._Tx(self)

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, tuple(args)).fetchall()

    # -- lifecycle of a run -------------------------------------------------------------------------
    def _name_stops(self) -> None:
        """A store written before runs stopped on request were called "stopped" called them
        "interrupted", as it called their stopped nodes: such a run (no error, or a node recorded
        "interrupted", which then meant stopped) reads "stopped" from now on, and its nodes too. A run
        whose process died kept its error and its running node, and stays "interrupted". Done once,
        then the store's format says so."""
        with self._tx() as db:
            if db.execute("PRAGMA user_version").fetchone()[0] >= FORMAT:
                return
            for row in db.execute("SELECT id, nodes, error FROM runs WHERE status = 'interrupted'").fetchall():
                nodes = json.loads(row["nodes"])
                if row["error"] is None or any(n.get("status") == "interrupted" for n in nodes.values()):
                    nodes = {k: {**n, "status": "stopped"} if n.get("status") == "interrupted" else n
                             for k, n in nodes.items()}
                    db.execute("UPDATE runs SET status = 'stopped', nodes = ? WHERE id = ?",
                               (json.dumps(nodes), row["id"]))
            db.execute(f"PRAGMA user_version = {FORMAT}")

    @writes
    def recover(self) -> list[int]:
        """Mark ``running`` rows whose owner is gone (killed, power loss) as ``interrupted``, and the
        nodes they were running: in the run's record and as those nodes' settled state, so their cards
        say it after a restart. Nodes the run had not reached yet are recorded skipped, as after a stop."""
        now = time.time()
        gone = []
        with self._tx() as db:
            for row in db.execute("SELECT id, pid, heartbeat FROM runs WHERE status = 'running'").fetchall():
                mine = row["pid"] == os.getpid()
                active_here = (str(self.path), row["id"]) in _ACTIVE
                stale = row["heartbeat"] is not None and now - row["heartbeat"] > HEARTBEAT_STALE_SECONDS
                if (mine and not active_here) or (not mine and (not _pid_alive(row["pid"]) or stale)):
                    gone.append(row["id"])
            for run_id in gone:
                row = db.execute("SELECT nodes, COALESCE(heartbeat, started) AS ended FROM runs WHERE id = ?",
                                 (run_id,)).fetchone()
                nodes = json.loads(row["nodes"])
                for node, record in nodes.items():
                    if record.get("status") == "running":
                        record["status"] = "interrupted"
                        if record.get("key"):
                            db.execute("INSERT OR REPLACE INTO node_states (node, key, state, run_id, updated, detail) "
                                       "VALUES (?, ?, 'interrupted', ?, ?, '{}')", (node, record["key"], run_id, now))
                    elif record.get("status") == "planned":
                        record["status"] = "skipped"
                db.execute("UPDATE runs SET status = 'interrupted', ended = ?, nodes = ?, error = COALESCE(error, ?) "
                           "WHERE id = ?", (row["ended"], json.dumps(nodes), DIED, run_id))
        return gone

    @writes
    def create(self, graph: Graph, target: str | None = None, source: str = "cli", status: str = "running") -> int:
        """A new run of ``graph``: ``running`` now (owned by this process) or ``queued``."""
        doc = graph.model_dump(mode="json", exclude_none=True)
        now = time.time()
        with self._tx() as db:
            cursor = db.execute(
                "INSERT INTO runs (graph_name, graph_hash, graph, target, source, status, requested, started, pid, "
                "heartbeat) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (graph.name, graph_hash(graph), json.dumps(doc), target, source, status, now,
                 now if status == "running" else None, os.getpid() if status == "running" else None,
                 now if status == "running" else None))
            run_id = int(cursor.lastrowid)
            if status == "running":
                self._set_changes(db, run_id)
                _ACTIVE.add((str(self.path), run_id))
        return run_id

    @writes
    def claim(self, run_id: int) -> bool:
        """Take a queued run to run it here; False if it was cancelled or taken meanwhile."""
        now = time.time()
        with self._tx() as db:
            taken = db.execute("UPDATE runs SET status = 'running', started = ?, pid = ?, heartbeat = ? "
                               "WHERE id = ? AND status = 'queued'", (now, os.getpid(), now, run_id)).rowcount
            if taken:
                self._set_changes(db, run_id)
                _ACTIVE.add((str(self.path), run_id))
        return bool(taken)

    def _set_changes(self, db: sqlite3.Connection, run_id: int) -> None:
        """Params changed since the previous started run of the same graph (by name)."""
        row = db.execute("SELECT graph_name, graph FROM runs WHERE id = ?", (run_id,)).fetchone()
        prev = db.execute("SELECT graph FROM runs WHERE graph_name = ? AND id < ? AND started IS NOT NULL "
                          "ORDER BY id DESC LIMIT 1", (row["graph_name"], run_id)).fetchone()
        changes = param_changes(json.loads(prev["graph"]) if prev else None, json.loads(row["graph"]))
        db.execute("UPDATE runs SET changes = ? WHERE id = ?", (json.dumps(changes), run_id))

    @writes
    def finish(self, run_id: int, status: str, error: str | None = None) -> None:
        """Give a run its final status. A run stopped or interrupted before its nodes told how they
        ended (a second Ctrl-C aborts at once) has the node it was running recorded as the run is,
        and those it had not reached as skipped, so no finished run says "running"."""
        if status not in FINISHED:
            raise ValueError(f"not a final status: {status!r}")
        with self._tx() as db:
            updated = db.execute("UPDATE runs SET status = ?, ended = ?, error = COALESCE(?, error) WHERE id = ? "
                                 "AND status IN ('running', 'queued')", (status, time.time(), error, run_id)).rowcount
            row = db.execute("SELECT nodes FROM runs WHERE id = ?", (run_id,)).fetchone()
            if updated and row is not None and status in ("stopped", "interrupted"):
                nodes = json.loads(row["nodes"])
                ended = {"running": status, "planned": "skipped"}
                if any(n.get("status") in ended for n in nodes.values()):
                    nodes = {k: {**n, "status": ended.get(n.get("status"), n.get("status"))} for k, n in nodes.items()}
                    db.execute("UPDATE runs SET nodes = ? WHERE id = ?", (json.dumps(nodes), run_id))
        _ACTIVE.discard((str(self.path), run_id))

    @writes
    def add_warning(self, run_id: int, warning: str) -> None:
        """Note something that went wrong around a run without failing it (e.g. it could not be
        logged to MLflow after it finished)."""
        with self._tx() as db:
            row = db.execute("SELECT warnings FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is not None:
                db.execute("UPDATE runs SET warnings = ? WHERE id = ?",
                           (json.dumps([*json.loads(row["warnings"]), warning]), run_id))

    @writes
    def cancel(self, run_id: int) -> str:
        """Cancel a queued run; returns its status afterwards (a running run is the caller's to stop)."""
        run_id = run_number(run_id)
        with self._tx() as db:
            row = db.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise RunNotFound(f"no run {run_id}")
            if row["status"] == "queued":
                db.execute("UPDATE runs SET status = 'cancelled', ended = ? WHERE id = ?", (time.time(), run_id))
                return "cancelled"
            return row["status"]

    @writes
    def heartbeat(self, run_id: int) -> None:
        with self._tx() as db:
            db.execute("UPDATE runs SET heartbeat = ? WHERE id = ? AND status = 'running'", (time.time(), run_id))

    @reads
    def graph_of(self, run_id: int) -> tuple[Graph, str | None]:
        """The graph a run was asked for (as it was then) and its target."""
        rows = self._query("SELECT graph, target FROM runs WHERE id = ?", (run_id,))
        if not rows:
            raise RunNotFound(f"no run {run_id}")
        return Graph.from_data(json.loads(rows[0]["graph"]), f"run {run_id}"), rows[0]["target"]

    @writes
    def set_source(self, run_ids: list[int], source: str) -> None:
        with self._tx() as db:
            db.executemany("UPDATE runs SET source = ? WHERE id = ?", [(source, i) for i in run_ids])

    @reads
    def queued(self) -> list[int]:
        return [r["id"] for r in self._query("SELECT id FROM runs WHERE status = 'queued' ORDER BY id")]

    # -- what a recorder writes ---------------------------------------------------------------------
    @writes
    def update_nodes(self, run_id: int, nodes: dict[str, Any], models: list[str]) -> None:
        with self._tx() as db:
            db.execute("UPDATE runs SET nodes = ?, models = ?, heartbeat = ? WHERE id = ?",
                       (json.dumps(nodes), json.dumps(models), time.time(), run_id))

    @writes
    def add_point(self, run_id: int, node: str, name: str, step: int, value: float) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO curves VALUES (?, ?, ?, ?, ?)", (run_id, node, name, step, value))

    @writes
    def add_version(self, key: str, node: str, facts: NodeFacts, metrics: dict[str, Any], run_id: int) -> None:
        """Record a result's provenance; a key seen before keeps its first record, with newer metrics."""
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO versions (key, node, type, params, given, fingerprint, inputs, is_model, "
                       "metrics, run_id, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (key, node, facts.type, json.dumps(facts.params), json.dumps(facts.given, default=str),
                        facts.fingerprint, json.dumps(facts.inputs), int(facts.is_model), json.dumps(metrics), run_id,
                        time.time()))
            if metrics:
                db.execute("UPDATE versions SET metrics = ? WHERE key = ?", (json.dumps(metrics), key))

    @writes
    def settle(self, node: str, state: NodeState, run_id: int) -> None:
        """Keep a node's settled state (done, cached, failed, stopped) for its key: what the editor
        shows of it, also after a restart."""
        detail = {name: getattr(state, name) for name in KEPT}
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO node_states (node, key, state, run_id, updated, detail) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (node, state.key, state.state, run_id, time.time(),
                                                     json.dumps(detail, default=str)))

    @reads
    def seen(self, keys: dict[str, str | None]) -> dict[str, Seen]:
        """For each node, its latest settled state under its current key and whether it had a result
        under any key before (the history :meth:`nodeflow.executor.Executor.status` reads)."""
        if not keys:
            return {}
        names = list(keys)
        marks = ",".join("?" * len(names))
        before = {r["node"] for r in self._query(f"SELECT DISTINCT node FROM node_states WHERE node IN ({marks}) "
                                                 "AND state IN ('done', 'cached')", names)}
        pairs = [(n, k) for n, k in keys.items() if k]
        same: dict[str, NodeState] = {}
        if pairs:
            values = ",".join("(?, ?)" for _ in pairs)
            for row in self._query(f"SELECT node, key, state, run_id, detail FROM node_states WHERE (node, key) IN "
                                   f"(VALUES {values})", [x for pair in pairs for x in pair]):
                detail = json.loads(row["detail"])
                same[row["node"]] = NodeState(state=row["state"], key=row["key"],
                                              **{k: v for k, v in detail.items() if k in KEPT})
        return {n: Seen(same.get(n), n in before) for n in keys}

    @reads
    def measured(self, node_type: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """What the latest finished run of a node of this type with these params took: its seconds
        and its epochs (for a training), or None if none ran here."""
        rows = self._query("SELECT ns.detail FROM versions v JOIN node_states ns ON ns.key = v.key WHERE v.type = ? "
                           "AND v.params = ? AND ns.state = 'done' ORDER BY ns.updated DESC LIMIT 1",
                           (node_type, json.dumps(params)))
        if not rows:
            return None
        detail = json.loads(rows[0]["detail"])
        return {"seconds": detail.get("seconds"), "epochs": detail.get("epochs")}

    @reads
    def produced(self, key: str) -> tuple[int, str] | None:
        """The run and node that computed the result ``key`` (for its stored curves), if recorded."""
        rows = self._query("SELECT run_id, node FROM versions WHERE key = ?", (key,))
        return (rows[0]["run_id"], rows[0]["node"]) if rows else None

    # -- sweeps ---------------------------------------------------------------------------------------
    @writes
    def create_sweep(self, grid: list[tuple[str, list[Any]]], target: str | None, graph_name: str,
                     branches: list[tuple[dict[str, Any], int]], metric: str | None = None) -> int:
        """A sweep, the metric that ranks it (None: the default) and its branches (the values of each,
        and the run that computes it)."""
        with self._tx() as db:
            cursor = db.execute("INSERT INTO sweeps (grid, target, metric, graph_name, created) VALUES (?, ?, ?, ?, ?)",
                                (json.dumps([[n, v] for n, v in grid]), target, metric, graph_name, time.time()))
            sweep_id = int(cursor.lastrowid)
            db.executemany("INSERT INTO sweep_branches (sweep_id, branch, run_id, params) VALUES (?, ?, ?, ?)",
                           [(sweep_id, i, run_id, json.dumps(params)) for i, (params, run_id) in enumerate(branches)])
        return sweep_id

    @reads
    def sweep(self, sweep_id: int | str) -> dict[str, Any]:
        """``{"id", "grid", "target", "metric", "graph_name", "created", "branches": [{"params", "run"}]}``."""
        text = str(sweep_id)
        number = int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else 0  # not "²": int() refuses it
        rows = self._query("SELECT * FROM sweeps WHERE id = ?", (number,)) if number else []
        if not rows:
            raise RunNotFound(f"no sweep {text[:40]!r}")
        row = rows[0]
        branches = self._query("SELECT run_id, params FROM sweep_branches WHERE sweep_id = ? ORDER BY branch",
                               (number,))
        return {"id": row["id"], "grid": json.loads(row["grid"]), "target": row["target"], "metric": row["metric"],
                "graph_name": row["graph_name"], "created": row["created"],
                "branches": [{"params": json.loads(b["params"]), "run": b["run_id"]} for b in branches]}

    @reads
    def sweep_of(self, run_id: int) -> int | None:
        rows = self._query("SELECT sweep_id FROM sweep_branches WHERE run_id = ?", (run_id,))
        return rows[0]["sweep_id"] if rows else None

    def _import_sweep_files(self) -> None:
        """Sweeps an earlier version kept as ``sweeps/N.json`` beside this file, taken in once."""
        folder = self.path.parent / "sweeps"
        if not folder.is_dir():
            return
        for path in sorted(folder.glob("*.json")):
            if not path.stem.isdigit():
                continue
            try:
                record = json.loads(path.read_text())
                with self._tx() as db:
                    if db.execute("SELECT 1 FROM sweeps WHERE id = ?", (int(path.stem),)).fetchone():
                        continue
                    db.execute("INSERT INTO sweeps (id, grid, target, metric, graph_name, created) "
                               "VALUES (?, ?, ?, ?, ?, ?)",
                               (int(path.stem), json.dumps(record["grid"]), record.get("target"), record.get("metric"),
                                record.get("graph_name", ""), record.get("created", time.time())))
                    db.executemany("INSERT INTO sweep_branches (sweep_id, branch, run_id, params) VALUES (?, ?, ?, ?)",
                                   [(int(path.stem), i, b["run"], json.dumps(b["params"]))
                                    for i, b in enumerate(record["branches"])])
            except (OSError, ValueError, KeyError, TypeError, sqlite3.Error):
                continue  # an unreadable old file stays where it is, untouched

    # -- reading ------------------------------------------------------------------------------------
    def _row(self, row: sqlite3.Row, graph: bool = False) -> dict[str, Any]:
        data = {"id": row["id"], "graph_name": row["graph_name"], "graph_hash": row["graph_hash"],
                "target": row["target"], "source": row["source"], "status": row["status"],
                "requested": row["requested"], "started": row["started"], "ended": row["ended"],
                "seconds": round(row["ended"] - row["started"], 3) if row["ended"] and row["started"] else None,
                "changes": json.loads(row["changes"]), "nodes": json.loads(row["nodes"]),
                "models": json.loads(row["models"]), "error": row["error"], "warnings": json.loads(row["warnings"])}
        if data["status"] == "queued":
            data["position"] = self._place(row["id"], row["position"])
        if graph:
            data["graph"] = json.loads(row["graph"])
        return data

    @reads
    def list(self, limit: int = 200) -> list[dict[str, Any]]:
        rows = self._query(f"SELECT *, {POSITION} AS position FROM runs r ORDER BY id DESC LIMIT ?", (limit,))
        return [self._row(r) for r in rows]

    @reads
    def get(self, run_id: int | str) -> dict[str, Any]:
        number = run_number(run_id)
        rows = self._query(f"SELECT *, {POSITION} AS position FROM runs r WHERE id = ?", (number,))
        if not rows:
            raise RunNotFound(f"no run {number} (see 'nodeflow runs')")
        data = self._row(rows[0], graph=True)
        data["curves"] = self.curves(number)
        return data

    @reads
    def place(self, run_id: int) -> tuple[str, int | None]:
        """A run's status and, while queued, its place in the queue (1: next)."""
        rows = self._query(f"SELECT status, {POSITION} AS position FROM runs r WHERE id = ?", (run_id,))
        if not rows:
            raise RunNotFound(f"no run {run_id}")
        status = rows[0]["status"]
        return status, self._place(run_id, rows[0]["position"]) if status == "queued" else None

    def _place(self, run_id: int, here: int) -> int | None:
        return here if self.placing is None else self.placing(run_id, here)

    @reads
    def run_curves(self, run: dict[str, Any]) -> dict[str, dict[str, list[list[float]]]]:
        """A run's curves by node, and for a node it took from the cache, the curves of the run that
        computed that result (so a sweep branch that came from the cache has its curves too)."""
        curves = dict(run.get("curves") or self.curves(run["id"]))
        for node, info in run["nodes"].items():
            if node not in curves and info.get("status") == "cached" and info.get("key"):
                made = self.produced(info["key"])
                if made is not None:
                    found = self.curves(made[0]).get(made[1])
                    if found:
                        curves[node] = found
        return curves

    @reads
    def result_curves(self, key: str) -> dict[str, Any]:
        """The curves of the node run that computed ``key``, as a node's series
        (``{name: [{"step", "value"}]}``), with that run's start and end."""
        made = self.produced(key)
        if made is None:
            return {"series": {}, "started": None, "finished": None}
        return self.node_curves(*made)

    @reads
    def result_keys(self, node: str) -> list[tuple[str, int | None]]:
        """The keys under which ``node`` finished (done or cached), newest first, each with its run:
        the models a node trained before its params changed (the Try it tab's stale answer)."""
        rows = self._query("SELECT key, run_id FROM node_states WHERE node = ? AND state IN ('done', 'cached') "
                           "ORDER BY updated DESC", (node,))
        return [(row["key"], row["run_id"]) for row in rows]

    @reads
    def shown_curves(self, key: str, node_id: str | None = None) -> dict[str, Any]:
        """The curves of the run that computed ``key`` (what a cached node's Output tab shows); with
        ``node_id``, of the run that left that node stopped, failed or interrupted under ``key``: its
        curves up to where it ended, after a restart as before it. The last SHOWN_CURVES are kept at
        hand, by run, as a later run may stop the node again under the same key."""
        run_id = None if node_id is None else self.settled_run(node_id, key)
        if node_id is not None and run_id is None:
            return {"series": {}, "started": None, "finished": None}
        held = key if node_id is None else f"run {run_id} {node_id}"  # never a cache key: those have no spaces
        with self._lock:
            found = self._shown.get(held)
        if found is None:
            found = self.result_curves(key) if run_id is None else self.node_curves(run_id, node_id)
            with self._lock:
                if len(self._shown) >= SHOWN_CURVES:
                    self._shown.pop(next(iter(self._shown)))
                self._shown[held] = found
        return found

    @reads
    def settled_run(self, node: str, key: str) -> int | None:
        """The run that left ``node`` in its latest settled state under ``key`` (a stop, a failure, a
        process that died: what its Output tab shows after a restart), if recorded."""
        rows = self._query("SELECT run_id FROM node_states WHERE node = ? AND key = ?", (node, key))
        return rows[0]["run_id"] if rows else None

    @reads
    def node_curves(self, run_id: int, node: str) -> dict[str, Any]:
        """One node's curves in one run, as a node's series (``{name: [{"step", "value"}]}``), with
        that run's start and end."""
        rows = self._query("SELECT started, ended FROM runs WHERE id = ?", (run_id,))
        points = self._query("SELECT name, step, value FROM curves WHERE run_id = ? AND node = ? ORDER BY name, step",
                             (run_id, node))
        series: dict[str, list[dict[str, float]]] = {}
        for r in points:
            series.setdefault(r["name"], []).append({"step": r["step"], "value": r["value"]})
        return {"series": series, "started": rows[0]["started"] if rows else None,
                "finished": rows[0]["ended"] if rows else None}

    @reads
    def curves(self, run_id: int) -> dict[str, dict[str, list[list[float]]]]:
        """node -> metric -> [[step, value], ...]"""
        out: dict[str, dict[str, list[list[float]]]] = {}
        for r in self._query("SELECT node, name, step, value FROM curves WHERE run_id = ? ORDER BY node, name, step",
                             (run_id,)):
            out.setdefault(r["node"], {}).setdefault(r["name"], []).append([r["step"], r["value"]])
        return out

    @reads
    def diff(self, a: int | str, b: int | str) -> dict[str, Any]:
        """What changed from run A to run B (params by ``node.param``) and what it did (metric deltas)."""
        ra, rb = self.get(a), self.get(b)
        both = set(ra["nodes"]) & set(rb["nodes"])
        changed = sorted(n for n in both if ra["nodes"][n].get("key") != rb["nodes"][n].get("key"))
        return {"a": ra["id"], "b": rb["id"], "params": param_changes(ra["graph"], rb["graph"]),
                "metrics": metric_deltas(ra["nodes"], rb["nodes"]), "changed_nodes": changed}

    # -- lineage ------------------------------------------------------------------------------------
    @reads
    def version(self, ref: str) -> dict[str, Any]:
        """A version by cache key (or a unique prefix of at least 6), or a node id's latest version."""
        rows = self._query("SELECT * FROM versions WHERE node = ? ORDER BY created DESC LIMIT 1", (ref,))
        if not rows and len(ref) >= 6:
            rows = self._query("SELECT * FROM versions WHERE key LIKE ? LIMIT 2", (ref.lower() + "%",))
            if len(rows) > 1:
                raise RunNotFound(f"'{ref}' matches several versions; give more of the key")
        if not rows:
            raise RunNotFound(f"no recorded version of '{ref}' (a node id, or a cache key of 6+ characters)")
        return self._version(rows[0])

    def _version(self, row: sqlite3.Row) -> dict[str, Any]:
        return {"key": row["key"], "node": row["node"], "type": row["type"], "params": json.loads(row["params"]),
                "given": json.loads(row["given"]), "fingerprint": row["fingerprint"], "inputs": json.loads(row["inputs"]),
                "is_model": bool(row["is_model"]), "metrics": json.loads(row["metrics"]), "run_id": row["run_id"],
                "created": row["created"]}

    @reads
    def by_key(self, key: str | None) -> dict[str, Any] | None:
        if key is None:
            return None
        rows = self._query("SELECT * FROM versions WHERE key = ?", (key,))
        return self._version(rows[0]) if rows else None

    @reads
    def lineage(self, ref: str) -> dict[str, Any]:
        """Where a version came from: the chain of models it was trained or fine-tuned from (oldest
        first), and the data it was made with (sources with their fingerprints)."""
        version = self.version(ref)
        chain = [version]
        seen = {version["key"]}
        current = version
        while True:
            parent_ref = _model_parent(current)
            parent = self.by_key(parent_ref)
            if parent is None or parent["key"] in seen:
                break
            chain.append(parent)
            seen.add(parent["key"])
            current = parent
        chain.reverse()
        data = []
        for step in chain:
            for port, ref_ in step["inputs"].items():
                if MODEL_TYPE not in ref_.get("types", []) and ref_.get("key"):
                    data.extend(self._sources(ref_["key"], port))
        unique = list({d["key"]: d for d in data}.values())
        return {"version": version, "chain": chain, "data": unique}

    def _sources(self, key: str, port: str) -> list[dict[str, Any]]:
        found, todo, seen = [], [key], set()
        while todo:
            k = todo.pop()
            if k in seen:
                continue
            seen.add(k)
            v = self.by_key(k)
            if v is None:
                continue
            if not v["inputs"]:
                found.append({"key": v["key"], "node": v["node"], "type": v["type"], "fingerprint": v["fingerprint"],
                              "params": v["params"]})
            todo.extend(i["key"] for i in v["inputs"].values() if i.get("key"))
        return found

    @reads
    def compare_versions(self, a: str, b: str) -> dict[str, Any]:
        """What changed between two versions along their lineage (params of every node id in
        either chain, by ``node.param``) and what it did (their metric deltas)."""
        la, lb = self.lineage(a), self.lineage(b)
        pa = {f"{v['node']}.{k}": val for v in la["chain"] for k, val in v["params"].items()}
        pb = {f"{v['node']}.{k}": val for v in lb["chain"] for k, val in v["params"].items()}
        params = {k: {"from": pa.get(k), "to": pb.get(k)} for k in sorted(set(pa) | set(pb)) if pa.get(k) != pb.get(k)}
        da = {d["node"]: d["fingerprint"] for d in la["data"]}
        db = {d["node"]: d["fingerprint"] for d in lb["data"]}
        data = {k: {"from": da.get(k), "to": db.get(k)} for k in sorted(set(da) | set(db)) if da.get(k) != db.get(k)}
        va, vb = la["version"], lb["version"]
        metrics = metric_deltas({va["node"]: va}, {vb["node"]: vb}) if va["node"] == vb["node"] else \
            metric_deltas({"version": va}, {"version": vb})
        return {"a": va["key"], "b": vb["key"], "params": params, "data": data, "metrics": metrics}


def _model_parent(version: dict[str, Any]) -> str | None:
    """The input a version was made from: its model input, else its only input."""
    inputs = version["inputs"]
    models = [i for i in inputs.values() if MODEL_TYPE in i.get("types", [])]
    if models:
        return models[0].get("key")
    if len(inputs) == 1:
        return next(iter(inputs.values())).get("key")
    return None


class RunRecorder:
    """Listens to one run's events and writes them to the store as they happen, so a kill leaves
    every finished node and every epoch point recorded. What each node did is what the one reducer
    (:class:`nodeflow.events.Board`) makes of the events, as every view shows it."""

    def __init__(self, store: RunStore, run_id: int, facts: dict[str, NodeFacts]) -> None:
        self.store = store
        self.run_id = run_id
        self.facts = facts
        self.board = Board()
        self.models: list[str] = []
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True, name=f"nodeflow-run-{run_id}-heartbeat")
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self.store.heartbeat(self.run_id)
            except sqlite3.Error:
                pass

    def close(self) -> None:
        self._stop.set()

    def __call__(self, event: Event) -> None:
        changed = self.board.apply(event)
        if isinstance(event, Metric):
            if event.step is not None and not event.name.startswith("batch") and event.node_id:
                self.store.add_point(self.run_id, event.node_id, event.name, int(event.step), float(event.value))
            return
        if not changed or isinstance(event, (Progress, Log, Preview)):
            return
        for node_id in changed:
            state = self.board.nodes[node_id]
            facts = self.facts.get(node_id)
            if isinstance(event, NodeFinished) and state.key and facts is not None:
                self.store.add_version(state.key, node_id, facts, dict(state.metrics), self.run_id)
                if facts.is_model and state.state == "done" and state.key not in self.models:
                    self.models.append(state.key)
            if state.state in SETTLED and state.key and not isinstance(event, RunStarted):
                self.store.settle(node_id, state, self.run_id)
        self.store.update_nodes(self.run_id, {n: node_record(s) for n, s in self.board.nodes.items()}, self.models)


def node_record(state: NodeState) -> dict[str, Any]:
    """A node as a run's record tells it: its status in the report's words (ran, cached, failed,
    skipped, stopped; running or planned while the run goes; interrupted once its process died)."""
    record: dict[str, Any] = {"status": REPORT_WORDS.get(state.state, state.state)}
    if state.key:
        record["key"] = state.key
    for moment in ("started", "finished"):
        if getattr(state, moment) is not None:
            record[moment] = round(getattr(state, moment), 3)
    if state.state in ("done", "cached"):
        record.update(seconds=round(float(state.seconds or 0.0), 3), metrics=dict(state.metrics))
    elif state.state == "failed":
        record["error"] = state.error
    elif state.state == "stopped" and state.epochs:
        record.update(epoch=state.epoch, epochs=state.epochs, resumable=state.resumable)
    return record


def report_status(report: Any) -> str:
    """A run's final status from the executor's report: one the report says was interrupted was
    stopped on request (a process that dies writes no report; :meth:`RunStore.recover` finds it)."""
    if report.interrupted:
        return "stopped"
    return "done" if report.ok else "failed"


class Recording:
    """Record one run of ``executor`` in ``store``: ``with Recording(...) as rec: rec.report =
    executor.run(graph)``. Whatever happens in the block, the row ends in a final status.

    ``subscribe=False`` leaves hearing the run to the caller, who passes ``rec.recorder`` as a
    listener of that run alone: several runs of one executor at once (a sweep's branches)."""

    def __init__(self, store: RunStore, executor: Any, graph: Graph, target: str | None = None,
                 source: str = "cli", run_id: int | None = None, subscribe: bool = True) -> None:
        self.store = store
        self.run_id = run_id if run_id is not None else store.create(graph, target, source)
        self.recorder = RunRecorder(store, self.run_id, graph_facts(executor, graph))
        self._unsubscribe = executor.subscribe(self.recorder) if subscribe else (lambda: None)
        self.report: Any = None
        self.status: str | None = None
        self.error: str | None = None

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        self._unsubscribe()
        self.recorder.close()
        if self.status is None:
            if exc is None and self.report is not None:
                self.status = report_status(self.report)
            else:
                self.status = "stopped" if kind is KeyboardInterrupt else "failed"  # Ctrl-C: asked for
        error = self.error if exc is None else (str(exc).strip() or type(exc).__name__)
        self.store.finish(self.run_id, self.status, error)
