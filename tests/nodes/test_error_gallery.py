"""A confusion cell's gallery: error analysis draws a cell's Grad-CAM overlays when the cell is
opened, keeps them on disk by (model, file, class, block), and the second opening draws nothing;
the run report carries the top errors as a table, also when the node comes from the cache."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import nodes.engine.explain as explain
from nodeflow.session import Session
from tests.clirun import nodeflow_here
from tests.imagegen import make_image_set
from tests.nodes.conftest import ROOT
from tests.nodes.graphs import error_analysis_graph

SIZE = 32


@pytest.fixture(scope="module")
def session(registry, tmp_path_factory):
    base = tmp_path_factory.mktemp("gallery")
    root = make_image_set(base / "images", ("circle", "stripes"), per_class=30, size=SIZE, fmt="png", seed=3)
    session = Session(registry, base / "ws", graph=error_analysis_graph(root, size=SIZE), device="cpu")
    session.queue.run()
    report = session.queue.wait(300)
    assert report is not None and report.ok, report and report.to_json()
    yield session
    session.close()


def biggest_cell(session) -> tuple[str, str, int]:
    tables = session.executor.cache.get(session.executor.keys(session.document.graph)["errors"],
                                        session.registry.get("eval.errors"))[0]["errors"].tables
    cell = max(tables["confusion_cells"], key=lambda c: c["count"])
    return cell["true"], cell["predicted"], cell["count"]


def test_a_cell_is_drawn_once_then_read_from_the_overlay_cache(session, monkeypatch):
    calls: list[int] = []
    real = explain.grad_cam

    def counting(model, files, *args, **kwargs):
        calls.append(len(files))
        return real(model, files, *args, **kwargs)

    monkeypatch.setattr(explain, "grad_cam", counting)
    true, predicted, count = biggest_cell(session)
    assert count >= 3  # 12 test images in at most four cells
    first = session.results.cell_gallery("errors", true, predicted, page=1, per_page=2)
    rows = first["rows"]
    assert first["count"] == count and first["pages"] == -(-count // 2) and len(rows) == 2
    assert (first["drawn"], first["from_cache"]) == (2, 0) and calls == [2]
    assert all(r["true"] == true and r["predicted"] == predicted for r in rows)
    assert [r["loss"] for r in rows] == sorted((r["loss"] for r in rows), reverse=True)
    assert [r["rank"] for r in rows] == [1, 2]
    paths = [r["overlay"] for r in rows]
    assert all(p.startswith(str(session.results.overlay_folder)) and open(p, "rb").read(4) == b"\x89PNG" for p in paths)
    stamps = [Path(p).stat().st_mtime_ns for p in paths]

    again = session.results.cell_gallery("errors", true, predicted, page=1, per_page=2)
    assert (again["drawn"], again["from_cache"]) == (0, 2) and calls == [2]  # nothing recomputed
    assert [r["overlay"] for r in again["rows"]] == paths
    assert [Path(p).stat().st_mtime_ns for p in paths] == stamps

    # the next page goes on where the first ended, worst first across the boundary
    second = session.results.cell_gallery("errors", true, predicted, page=2, per_page=2)
    assert [r["rank"] for r in second["rows"]][:1] == [3]
    assert second["rows"][0]["loss"] <= rows[-1]["loss"] and second["drawn"] == len(second["rows"])
    assert calls == [2, len(second["rows"])]


def test_overlay_cache_keys_on_model_file_class_and_block(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(b"x")
    cache = explain.OverlayCache(tmp_path / "overlays")
    base = cache.path("model1", str(image), 0, "")
    assert cache.path("model1", str(image), 0, "") == base
    others = {cache.path("model2", str(image), 0, ""), cache.path("model1", str(image), 1, ""),
              cache.path("model1", str(image), 0, "layer3"), cache.path("model1", str(tmp_path / "b.png"), 0, "")}
    assert base not in others and len(others) == 4
    image.write_bytes(b"changed")  # an edited picture is drawn again
    assert cache.path("model1", str(image), 0, "") != base


def test_unknown_node_class_or_page_and_nodes_without_galleries_are_lookup_errors(session):
    true, predicted, count = biggest_cell(session)
    with pytest.raises(LookupError, match="no node with id 'nope'"):
        session.results.cell_gallery("nope", true, predicted)
    with pytest.raises(LookupError, match="no class 'zebra'"):
        session.results.cell_gallery("errors", "zebra", predicted)
    with pytest.raises(LookupError, match="no page 99"):
        session.results.cell_gallery("errors", true, predicted, page=99)
    with pytest.raises(LookupError, match="add an Error analysis node"):
        session.results.cell_gallery("eval", true, predicted)


@pytest.mark.slow
def test_report_lists_the_top_errors_also_when_the_node_comes_from_the_cache(tmp_path, capsys):
    root = make_image_set(tmp_path / "images", ("circle", "stripes"), per_class=20, size=SIZE, fmt="png", seed=4)
    graph_file = tmp_path / "graph.json"
    error_analysis_graph(root, size=SIZE, top_n=3, overlays=2).save(graph_file)
    reports = []
    for attempt in range(2):
        report_file = tmp_path / f"report{attempt}.json"
        cmd = ["--no-plugins", "run", str(graph_file), "--workspace", str(tmp_path / "ws"), "--device", "cpu",
               "--quiet", "--report", str(report_file)]
        if attempt == 0:  # trains and writes the cache in this process; a new process then finds it
            done = nodeflow_here(capsys, cmd)
        else:
            done = subprocess.run([sys.executable, "-m", "nodeflow.cli", *cmd], capture_output=True, text=True,
                                  cwd=ROOT, timeout=600)
        assert done.returncode == 0, done.stderr
        reports.append(json.loads(report_file.read_text())["nodes"]["errors"])
    first, second = reports
    assert (first["status"], second["status"]) == ("ran", "cached")
    table = first["tables"]["top_errors"]
    assert table["columns"] == ["file", "true", "predicted", "confidence", "loss", "overlay"]
    rows = table["rows"]
    assert 0 < len(rows) <= 3 and len(rows) == min(3, int(first["metrics"]["errors"]))
    assert [r["loss"] for r in rows] == sorted((r["loss"] for r in rows), reverse=True)
    assert all(r["true"] != r["predicted"] and 0 < r["confidence"] <= 1 for r in rows)
    overlays = [r["overlay"] for r in rows if "overlay" in r]
    assert len(overlays) == min(2, len(rows))
    assert all(p.startswith(str(tmp_path / "ws" / "errors" / "errors")) and open(p, "rb").read(4) == b"\x89PNG"
               for p in overlays)
    assert second["tables"] == first["tables"]  # the cached node reports the same list
