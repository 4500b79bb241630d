"""Runs logged to a real local MLflow store (SQLite), read back with MlflowClient; and MLflow is
not even imported unless asked for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nodeflow.runs import RunStore
from nodeflow.session import Session

from .conftest import make_graph

ROOT = Path(__file__).resolve().parents[2]
PACK = str(ROOT / "tests" / "nodepack.py")


def graph():
    return make_graph({"a": ("test.constant", {"value": 2}), "slow": ("test.slow", {"steps": 3, "delay": 0}),
                       "sum": ("test.add", {})}, ["a.value->slow.value", "slow.value->sum.a"], name="tracked")


@pytest.mark.slow
def test_cli_run_is_logged_to_mlflow_with_params_curves_graph_and_tags(tmp_path, workspace):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    path = tmp_path / "g.json"
    graph().save(path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run([sys.executable, "-m", "nodeflow.cli", "--nodes", PACK, "run", str(path), "--workspace",
                             str(workspace), "--quiet", "--mlflow", uri], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=300)  # artifacts go to ./mlruns, here
    assert result.returncode == 0, result.stderr
    assert "logged to MLflow: run" in result.stderr
    ours = RunStore(workspace).get(1)

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tracked")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["nodeflow.run_id"] == "1"
    assert run.data.tags["nodeflow.graph_hash"] == ours["graph_hash"]
    params = run.data.params
    assert params["slow.steps"] == "3" and params["a.value"] == "2.0" and params["sum.offset"] == "0.0"
    history = client.get_metric_history(run.info.run_id, "slow.step_loss")
    assert [(m.step, round(m.value, 4)) for m in history] == [(0, 1.0), (1, 0.5), (2, 0.3333)]
    assert run.data.metrics["sum.sum"] == 5.0
    local = client.download_artifacts(run.info.run_id, "graph.json", str(tmp_path / "down"))
    assert json.loads(Path(local).read_text()) == ours["graph"]


def test_editor_runs_are_logged_when_the_session_has_a_tracking_uri(registry, workspace, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    session = Session(registry, workspace, graph=graph())
    session.mlflow_uri = uri
    try:
        session.queue.submit()
        session.queue.wait(120)
    finally:
        session.close()
    client = MlflowClient(tracking_uri=uri)
    [run] = client.search_runs([client.get_experiment_by_name("tracked").experiment_id])
    assert run.data.tags["nodeflow.source"] == "editor" and run.data.metrics["sum.sum"] == 5.0


def test_without_a_tracking_uri_nothing_of_mlflow_is_imported(tmp_path):
    path = tmp_path / "g.json"
    graph().save(path)
    script = textwrap.dedent(f"""
        import sys
        from nodeflow.cli import main
        from nodeflow.node import Registry
        from nodeflow.session import Session
        from tests import nodepack
        assert main(["--nodes", {PACK!r}, "run", {str(path)!r}, "--workspace", {str(tmp_path / 'ws')!r}, "--quiet"]) == 0
        registry = Registry()
        registry.add_module(nodepack)
        from nodeflow.graph import Graph
        session = Session(registry, {str(tmp_path / 'ws')!r}, graph=Graph.load({str(path)!r}))
        session.queue.submit()
        session.queue.wait(60)
        session.close()
        print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlflow', 'sqlalchemy', 'alembic')))
    """)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert len(RunStore(tmp_path / "ws").list()) == 2  # both runs were recorded all the same
