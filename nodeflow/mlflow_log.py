"""Copy a recorded run to MLflow, for teams that already track experiments there.

Imported only when a tracking URI is given (``--mlflow URI`` or ``MLFLOW_TRACKING_URI``), so
nodeflow never needs MLflow otherwise. Params are logged as ``node.param``, per-epoch curves as
``node.metric`` with their steps (final metrics without a curve at step 0), the graph document as
the artifact ``graph.json``, and tags name the graph hash and the nodeflow run id.
"""

from __future__ import annotations

import json
from typing import Any

from nodeflow.runs import RunStore, flat_params

#: MLflow's limits per log_batch call and per param value
BATCH_METRICS, BATCH_PARAMS, PARAM_CHARS = 1000, 100, 6000
STATUS = {"done": "FINISHED", "failed": "FAILED", "interrupted": "KILLED", "cancelled": "KILLED"}


def log_run(store: RunStore, run_id: int, uri: str, experiment: str | None = None) -> str:
    """Log nodeflow run ``run_id`` to the MLflow store at ``uri`` (experiment: the graph's name);
    returns the MLflow run id."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    run = store.get(run_id)
    client = MlflowClient(tracking_uri=uri)
    name = experiment or run["graph_name"]
    found = client.get_experiment_by_name(name)
    experiment_id = found.experiment_id if found is not None else client.create_experiment(name)
    started = int((run["started"] or run["requested"]) * 1000)
    tags = {"mlflow.runName": f"nodeflow run {run_id}", "nodeflow.run_id": str(run_id),
            "nodeflow.graph_hash": run["graph_hash"], "nodeflow.graph_name": run["graph_name"],
            "nodeflow.status": run["status"], "nodeflow.source": run["source"]}
    if run["target"]:
        tags["nodeflow.target"] = run["target"]
    ml_run = client.create_run(experiment_id, start_time=started, tags=tags)
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
        client.log_batch(ml_id, params=param_list[i:i + BATCH_PARAMS])
    for i in range(0, len(metrics), BATCH_METRICS):
        client.log_batch(ml_id, metrics=metrics[i:i + BATCH_METRICS])
    client.log_text(ml_id, json.dumps(run["graph"], indent=2), "graph.json")
    ended = int(run["ended"] * 1000) if run["ended"] else None
    client.set_terminated(ml_id, status=STATUS.get(run["status"], "FINISHED"), end_time=ended)
    return ml_id


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
