"""Copy a recorded run to MLflow, for teams that already track experiments there.

Imported only when a tracking URI is given (``--mlflow URI`` or ``MLFLOW_TRACKING_URI``), so
nodeflow never needs MLflow otherwise. Params are logged as ``node.param``, per-epoch curves as
``node.metric`` with their steps (final metrics without a curve at step 0), the graph document as
the artifact ``graph.json``, and tags name the graph hash and the nodeflow run id.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

from nodeflow.runs import RunStore, flat_params

#: MLflow's limits per log_batch call and per param value
BATCH_METRICS, BATCH_PARAMS, PARAM_CHARS = 1000, 100, 6000
STATUS = {"done": "FINISHED", "failed": "FAILED", "stopped": "KILLED", "interrupted": "KILLED", "cancelled": "KILLED"}
#: how long one request to a tracking server may take and how often it is tried again, unless the
#: environment says otherwise: MLflow's own defaults (120 s, 7 retries with doubling back-off) kept
#: trying an address where nothing listens for four minutes
HTTP_BOUNDS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
               "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def client(uri: str):
    """An MLflow client for ``uri``; ValueError (naming the URI) for a scheme MLflow has no store for,
    which MLflow says at once, so a command can refuse it before anything runs."""
    from mlflow.tracking import MlflowClient

    for name, value in HTTP_BOUNDS.items():
        os.environ.setdefault(name, value)
    try:
        return MlflowClient(tracking_uri=uri)
    except Exception as exc:  # MlflowException: an unsupported URI scheme, an unreadable store
        raise ValueError(f"'{uri}' is no MLflow tracking store: {str(exc).split('. ')[0]}") from None


def log_run(store: RunStore, run_id: int, uri: str, experiment: str | None = None) -> str:
    """Log nodeflow run ``run_id`` to the MLflow store at ``uri`` (experiment: the graph's name);
    returns the MLflow run id."""
    from mlflow.entities import Metric, Param

    run = store.get(run_id)
    ml = client(uri)
    name = experiment or run["graph_name"]
    found = ml.get_experiment_by_name(name)
    experiment_id = found.experiment_id if found is not None else ml.create_experiment(name)
    started = int((run["started"] or run["requested"]) * 1000)
    tags = {"mlflow.runName": f"nodeflow run {run_id}", "nodeflow.run_id": str(run_id),
            "nodeflow.graph_hash": run["graph_hash"], "nodeflow.graph_name": run["graph_name"],
            "nodeflow.status": run["status"], "nodeflow.source": run["source"]}
    if run["target"]:
        tags["nodeflow.target"] = run["target"]
    ml_run = ml.create_run(experiment_id, start_time=started, tags=tags)
    ml_id = ml_run.info.run_id

    params = run_params(store, run)
    param_list = [Param(k, _text(v)) for k, v in sorted(params.items())]
    metrics = []
    for node, curves in run["curves"].items():
        for metric, points in curves.items():
            metrics += [Metric(f"{node}.{metric}", float(value), started, int(step)) for step, value in points]
    for node, info in run["nodes"].items():
        for metric, value in (info.get("metrics") or {}).items():
            if isinstance(value, (int, float)) and metric not in run["curves"].get(node, {}):
                metrics.append(Metric(f"{node}.{metric}", float(value), started, 0))
    for i in range(0, len(param_list), BATCH_PARAMS):
        ml.log_batch(ml_id, params=param_list[i:i + BATCH_PARAMS])
    for i in range(0, len(metrics), BATCH_METRICS):
        ml.log_batch(ml_id, metrics=metrics[i:i + BATCH_METRICS])
    ml.log_text(ml_id, json.dumps(run["graph"], indent=2), "graph.json")
    ended = int(run["ended"] * 1000) if run["ended"] else None
    ml.set_terminated(ml_id, status=STATUS.get(run["status"], "FINISHED"), end_time=ended)
    return ml_id


class BackgroundLogger:
    """Logs finished runs to MLflow on a thread of its own, one after another, so a tracking server
    that is slow or unreachable never holds a run or the queue behind it: the run is finished and
    the next one started before its logging begins. A run that cannot be logged keeps a warning in
    its record and in ``log`` (the editor's log); nothing is retried after MLflow's own bounded tries."""

    def __init__(self, store: RunStore, uri: str, log: Callable[[str], None] = lambda message: None) -> None:
        self.store = store
        self.uri = uri
        self.log = log
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def submit(self, run_id: int) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, daemon=True, name="nodeflow-mlflow")
            self._thread.start()
        self._queue.put(run_id)

    def _work(self) -> None:
        while (run_id := self._queue.get()) is not None:
            try:
                log_run(self.store, run_id, self.uri)
            except Exception as exc:  # the run is recorded here whatever MLflow says
                warning = f"could not log run {run_id} to MLflow at {self.uri}: {exc}"
                self.store.add_warning(run_id, warning)
                self.log(warning)

    def close(self, timeout: float | None = None) -> bool:
        """Log what was handed over, waiting at most ``timeout`` seconds; whether all of it was."""
        if self._thread is None:
            return True
        self._queue.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()


def run_params(store: RunStore, run: dict[str, Any]) -> dict[str, Any]:
    """``node.param`` -> value: the validated params (defaults included) of every node the run
    recorded, else what the graph document says."""
    params = flat_params(run["graph"])
    for node, info in run["nodes"].items():
        key = info.get("key")
        version = store.by_key(key) if key else None
        if version is not None:
            params.update({f"{node}.{k}": v for k, v in version["params"].items()})
    return params


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= PARAM_CHARS else text[:PARAM_CHARS - 3] + "..."
