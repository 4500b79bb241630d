"""Trying a trained model (``nodeflow predict``, ``POST /api/models/{node}/predict`` and the Tryer
behind both) answers what ``eval.predict`` answers on the same images: the same label, the same
probability within 1e-5, for colour, grey and RGBA pictures of several sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from nodeflow.cli import main
from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodeflow.node import Registry
from nodeflow.trying import Picture, Tryer
from tests.imagegen import make_image_set
from tests.nodes.graphs import classifier_graph

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("agree")
    root = make_image_set(base / "images", per_class=10, size=32, fmt="png", seed=5, vary_size=True, grayscale=1,
                          rgba=1)
    data = classifier_graph(root, size=32, epochs=2, lr=3e-3).model_dump(mode="json")
    data["nodes"].append({"id": "predict", "type": "eval.predict", "params": {"folder": str(root / "test")}})
    data["edges"].append({"source": "train", "source_port": "model", "target": "predict", "target_port": "model"})
    graph = Graph.from_data(data)
    graph_file = base / "graph.json"
    graph.save(graph_file)
    workspace = base / "workspace"
    executor = Executor(Registry.discover(plugins=False), workspace, device="cpu")
    report = executor.run(graph)
    assert report.failure() is None, report.failure()
    rows = report.outputs["predict"]["predictions"]
    assert len(rows) >= 4 and len({r["label"] for r in rows}) >= 1
    return {"graph": graph, "file": graph_file, "workspace": workspace, "executor": executor, "rows": rows}


def agrees(rows: list[dict], answers: list[dict]) -> None:
    assert [a["image"] for a in answers] == [r["file"] for r in rows]
    for row, answer in zip(rows, answers):
        best = answer["classes"][0]
        assert best["label"] == row["label"], (row, answer)
        assert abs(best["probability"] - row["confidence"]) <= 1e-5, (row, answer)
        probabilities = [c["probability"] for c in answer["classes"]]
        assert probabilities == sorted(probabilities, reverse=True) and abs(sum(probabilities) - 1) < 1e-4


def test_the_tryer_agrees_with_eval_predict(trained):
    rows = trained["rows"]
    tryer = Tryer(trained["executor"])
    try:
        found = tryer.predict(trained["graph"], "train", [Picture(r["file"], Path(r["file"]).read_bytes())
                                                           for r in rows])
        assert found["stale"] is False and found["loaded"] is True
        agrees(rows, found["results"])
        again = tryer.predict(trained["graph"], "train", [Picture(rows[0]["file"], Path(rows[0]["file"]).read_bytes())])
        assert again["loaded"] is False  # the model stayed loaded in its process
        assert tryer.process.pid is not None
    finally:
        tryer.close()
    assert tryer.process.pid is None


def test_the_command_line_agrees_with_eval_predict(trained):
    rows = trained["rows"]
    done = subprocess.run([sys.executable, "-m", "nodeflow.cli", "--no-plugins", "predict", str(trained["file"]),
                           "train", *[r["file"] for r in rows], "--workspace", str(trained["workspace"]),
                           "--device", "cpu", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    agrees(rows, json.loads(done.stdout))


def test_the_command_lines_plain_answer_names_the_label(trained, capsys):
    rows = trained["rows"]
    code = main(["--no-plugins", "predict", str(trained["file"]), "train", rows[0]["file"],
                 "--workspace", str(trained["workspace"]), "--device", "cpu"])
    assert code == 0 and capsys.readouterr().out.strip().startswith(f"{rows[0]['file']}: {rows[0]['label']} (")


def test_the_api_agrees_with_eval_predict(trained):
    from tests.ui.conftest import Server

    rows = trained["rows"]
    server = Server(trained["workspace"], "--builtin", "--graph", str(trained["file"]))
    try:
        files = [("image", (r["file"], Path(r["file"]).read_bytes(), "image/png")) for r in rows]
        answer = httpx.post(server.url + "/api/models/train/predict", files=files, timeout=300)
        assert answer.status_code == 200, answer.text
        agrees(rows, answer.json()["results"])
    finally:
        server.stop()


@pytest.mark.parametrize("bad, message", [
    (["train", "missing.png"], "cannot read image 'missing.png'"),
    (["eval", "IMG"], "gives no trained model"),
    (["nope", "IMG"], "no node with id 'nope'"),
    (["train", "GRAPH"], "is not an image"),
])
def test_the_command_line_refuses_in_one_line(trained, bad, message, capsys):
    image = trained["rows"][0]["file"]
    args = [str(trained["file"]) if a == "GRAPH" else image if a == "IMG" else a for a in bad]
    code = main(["--no-plugins", "predict", str(trained["file"]), *args,
                 "--workspace", str(trained["workspace"]), "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code != 0 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_the_model_process_is_let_go_when_idle_and_loads_again_on_the_next_picture(trained):
    from tests.waiting import wait_for

    row = trained["rows"][0]
    picture = [Picture(row["file"], Path(row["file"]).read_bytes())]
    tryer = Tryer(trained["executor"], idle_seconds=0.5)
    try:
        assert tryer.predict(trained["graph"], "train", picture)["loaded"] is True
        first = tryer.process.pid
        assert first is not None and first != os.getpid()
        assert wait_for(lambda: tryer.process.pid is None, timeout=60)
        again = tryer.predict(trained["graph"], "train", picture)
        assert again["loaded"] is True and tryer.process.pid not in (None, first)
        assert again["results"][0]["classes"][0]["label"] == row["label"]
    finally:
        tryer.close()
