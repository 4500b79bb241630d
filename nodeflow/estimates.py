"""The cost preview of an open document, in two speeds.

- :meth:`Estimates.price` answers at once, from what is known: a cached node costs nothing; a node a
  queued or running run computes first will be cached by then; a node whose type and params ran on
  this machine before costs what that run measured (per epoch, and only the epochs left when it
  resumes from a checkpoint); a node profiled earlier for its current key costs what the profile
  said. What is not known stays unknown. The cards and the Run confirmation read this one answer,
  so they show the same number, and Run never waits for it.
- :meth:`Estimates.estimate` measures (:meth:`Executor.estimate`: a few real batches, for what never
  ran); the page runs it in the background, and the Estimate button and ``GET /api/estimate`` on
  demand. Its results are kept per node and key for :meth:`price`. Where a session has a worker (or
  a shared server's limits), the batches are measured in a process of their own
  (:class:`nodeflow.worker.EstimateWorker`), never in the process that serves the editor.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

from nodeflow.access import guarded, reads, works, writes
from nodeflow.checker import Checked
from nodeflow.errors import GraphInvalid
from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodeflow.runs import RunStore
from nodeflow.worker import EstimateFailed, EstimateWorker


class HasGraph(Protocol):
    graph: Graph


@guarded
class Estimates:
    """Prices for the nodes of a document (its graph as it is when asked). ``ahead``: the cache keys
    that queued or running runs will compute before a new run starts. ``worker``: the process
    estimates are measured in (None: this one, on the caller's thread). ``estimating``: held while an
    estimate is measured (a shared machine counts it against its owner's, and raises to refuse one)."""

    def __init__(self, executor: Executor, store: RunStore, document: HasGraph, ahead: Callable[[], set[str]] = set,
                 worker: EstimateWorker | None = None,
                 estimating: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext) -> None:
        self.document = document
        self.estimating = estimating
        self.executor = executor
        self.store = store
        self.ahead = ahead
        self.worker = worker
        self._lock = threading.Lock()
        self._measuring = threading.Lock()
        self._profiled: dict[str, dict[str, Any]] = {}  # node id -> its latest profile (with its key)
        self._measured: dict[tuple[str, str], dict[str, Any] | None] = {}  # (type, params) -> what ran took
        #: changes whenever a price may have changed (a profile, a finished run)
        self._revision = 0
        self._memo: tuple[Any, dict[str, dict[str, Any]]] | None = None

    # -- at once ---------------------------------------------------------------------------------------
    @reads
    def price(self, target: str | None = None) -> dict[str, Any]:
        """What running ``target`` (everything if None) costs as far as it is known now: per node of
        the plan its entry (``status`` cached, ahead, measured, stale, quick or unknown, and ``seconds``),
        the total of what is known and whether everything is known. Raises GraphInvalid or KeyError as
        :meth:`Executor.plan`."""
        graph = self.document.graph
        checked = self.executor.check(graph)
        plan = self.executor.plan(graph, target)
        ahead = self.ahead()
        nodes = {node_id: self._node_price(checked, node_id, action, ahead) for node_id, action in plan.items()}
        return summed(target, self.executor.device, nodes)

    @reads
    def prices(self, keys: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
        """Each stale node's price of the open document, for its card (:meth:`prices_of`)."""
        return self.prices_of(self.document.graph, keys)

    @reads
    def prices_of(self, graph: Graph, keys: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
        """Each stale node's price by itself, for its card (nodes the graph cannot run have none).
        ``keys``: the graph's cache keys as a snapshot already worked them out, so the cards of every
        tab, polled several times a second, are priced again only when something changed."""
        ahead = self.ahead()
        signature = (tuple(sorted(keys.items())), frozenset(ahead), self._revision) if keys is not None else None
        if signature is not None and self._memo is not None and self._memo[0] == signature:
            return self._memo[1]
        checked = self.executor.check(graph)
        broken = {p.node_id for p in checked.problems}
        found = {n: self._node_price(checked, n, "run", ahead) for n in checked.keys if n not in broken
                 and not self.executor.cache.has(checked.keys[n])}
        if signature is not None:
            self._memo = (signature, found)
        return found

    def _node_price(self, checked: Checked, node_id: str, action: str, ahead: set[str]) -> dict[str, Any]:
        key = checked.keys[node_id]
        node = checked.types[node_id]
        base = {"type": node.type, "key": key}
        if action == "cached":
            return {**base, "status": "cached", "seconds": 0.0}
        if key in ahead:
            return {**base, "status": "ahead", "seconds": 0.0, "note": "computed by a run ahead in the queue"}
        if not node.has_estimate():
            return {**base, "status": "quick", "seconds": None, "note": "quick; not measured"}
        stopped = self._stopped(node_id, key)
        if stopped is not None:
            return {**base, **stopped}
        measured = self._ran_before(node.type, checked.params[node_id].model_dump(mode="json"))
        if measured is not None and measured.get("seconds") is not None:
            return {**base, **self._from_history(node_id, key, measured)}
        with self._lock:
            profiled = self._profiled.get(node_id)
        if profiled is not None and profiled.get("key") == key:
            return profiled
        return {**base, "status": "unknown", "seconds": None, "note": "not measured yet"}

    def _ran_before(self, node_type: str, params: dict[str, Any]) -> dict[str, Any] | None:
        import json

        found = (node_type, json.dumps(params, sort_keys=True))
        if found not in self._measured:  # a finished run adds a measurement: asked again after each run
            self._measured[found] = self.store.measured(node_type, params)
        return self._measured[found]

    def _from_history(self, node_id: str, key: str, measured: dict[str, Any]) -> dict[str, Any]:
        seconds, epochs = float(measured["seconds"]), measured.get("epochs")
        entry: dict[str, Any] = {"status": "measured", "note": "measured when it ran before with these params"}
        if epochs:
            done = self._epochs_done(node_id, key)
            entry.update(epochs=epochs - done, epoch_seconds=seconds / epochs,
                         seconds=round(seconds / epochs * (epochs - done), 3))
            if done:
                entry["note"] = f"resumes after epoch {done}: {epochs - done} of {epochs} epochs left"
        else:
            entry["seconds"] = round(seconds, 3)
        return entry

    def _stopped(self, node_id: str, key: str) -> dict[str, Any] | None:
        """A training of this key stopped and resumable: finishing it costs the seconds per epoch it
        took before the stop times the epochs left (what was just measured, on this machine, with
        this very config, rather than an older run of the same params or a profile)."""
        same = self.store.seen({node_id: key})[node_id].same
        if same is None or same.state != "stopped" or not same.resumable or not same.epoch or not same.epochs \
                or not same.seconds:
            return None
        done, epochs = int(same.epoch), int(same.epochs)
        rate = float(same.seconds) / done
        return {"status": "measured", "epochs": epochs - done, "epoch_seconds": round(rate, 4),
                "seconds": round(rate * (epochs - done), 3),
                "note": f"resumes after epoch {done}: {epochs - done} of {epochs} epochs left at the "
                        f"{rate:.2g} s/epoch measured before the stop"}

    def _epochs_done(self, node_id: str, key: str) -> int:
        """Epochs a stopped run of this key completed, when it resumes from its checkpoint."""
        same = self.store.seen({node_id: key})[node_id].same
        if same is not None and same.state == "stopped" and same.resumable and same.epoch:
            return int(same.epoch)
        return 0

    @writes
    def forget_measurements(self) -> None:
        """Runs finished since: look their measurements up again."""
        self._measured.clear()
        self._revision += 1

    # -- measured ----------------------------------------------------------------------------------
    @works
    def estimate(self, target: str | None = None) -> dict[str, Any]:
        """Measure what running ``target`` (or everything) in the open document would cost
        (:meth:`estimate_of`); on a shared machine, counted against its owner's estimates at once
        while it is measured."""
        with self.estimating():
            return self.estimate_of(self.document.graph, target)

    @works
    def estimate_of(self, graph: Graph, target: str | None = None) -> dict[str, Any]:
        """Measure what running ``target`` (or everything) would cost, per stale node (see
        :meth:`Executor.estimate`). It runs on the caller's thread (measured there, or in the
        worker while the thread waits): the HTTP API calls it from its thread pool and the page from a
        background thread, so the event loop stays free. One at a
        time: a second caller waits for the first. Raises GraphInvalid or KeyError as
        :meth:`Executor.plan`."""
        with self._measuring:
            if self.worker is None:
                found = self.executor.estimate(graph, target)
            else:
                found = self._measured_apart(graph, target)
            with self._lock:
                self._profiled.update({n: e for n, e in found["nodes"].items() if e.get("status") == "stale"})
                self._revision += 1
            return found

    @reads
    @property
    def measuring(self) -> bool:
        """Whether an estimate is being measured now."""
        return self._measuring.locked()

    def _measured_apart(self, graph: Graph, target: str | None) -> dict[str, Any]:
        """The estimate measured by the worker. Where it refused the graph or the target, checked here
        again to raise GraphInvalid or KeyError as :meth:`Executor.plan`; where nothing could be measured
        (its process died: over the memory limit, say), every node the run would compute says why."""
        try:
            return self.worker.estimate(graph, target)
        except EstimateFailed as exc:
            plan = self.executor.plan(graph, target)  # GraphInvalid, KeyError: as a run would refuse it
            checked = self.executor.check(graph)
            nodes = {}
            for node_id, action in plan.items():
                base = {"type": checked.types[node_id].type, "key": checked.keys[node_id]}
                nodes[node_id] = {**base, "status": "cached", "seconds": 0.0} if action == "cached" else \
                    {**base, "status": "error", "seconds": None, "error": str(exc)}
            return summed(target, self.executor.device, nodes)

    @writes
    def close(self) -> None:
        """End the estimate process (and an estimate it is measuring)."""
        if self.worker is not None:
            self.worker.close()

    @works
    def profile_unknown(self) -> bool:
        """Measure, in the caller's (background) thread, the nodes of the open document whose price is
        unknown; whether there were any."""
        graph = self.document.graph
        try:
            unknown = [n for n, e in self.prices_of(graph).items() if e["status"] == "unknown"]
        except (GraphInvalid, KeyError):
            return False
        for node_id in unknown:
            try:
                self.estimate_of(graph, node_id)
            except (GraphInvalid, KeyError):
                continue
        return bool(unknown)


def summed(target: str | None, device: str, nodes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """An estimate's totals over its nodes; ``complete``: every node's cost is known."""
    total = sum(e["seconds"] for e in nodes.values() if isinstance(e.get("seconds"), (int, float)))
    return {"target": target, "device": device, "nodes": nodes, "total_seconds": round(total, 3),
            "complete": all(e["status"] in ("cached", "stale", "quick", "measured", "ahead") for e in nodes.values())}
