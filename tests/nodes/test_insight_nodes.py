"""eval.errors and data.doctor from the command line: a trained model's planted wrong labels head
the error list with Grad-CAM overlays beside them, and the doctor lists a planted unreadable file
and planted copies across splits; the --report JSON carries both nodes' counts."""

from __future__ import annotations

import json
import shutil

import pytest

from nodeflow.graph import Graph
from tests.clirun import nodeflow_here
from tests.imagegen import make_image_set
from tests.nodes.graphs import classifier_graph

SIZE = 32


def insight_graph(root) -> Graph:
    """The classifier graph plus error analysis on its trained model and a doctor on its data,
    with a second, frozen backbone giving the doctor its codes."""
    data = json.loads(classifier_graph(root, size=SIZE, epochs=8, lr=3e-3).dumps())
    data["nodes"] += [
        {"id": "errors", "type": "eval.errors", "params": {"split": "test", "top_n": 10, "overlays": 4}},
        {"id": "codes_input", "type": "model.input", "params": {"height": SIZE, "width": SIZE}},
        {"id": "codes_backbone", "type": "model.backbone",
         "params": {"arch": "resnet18", "weights": "none", "feature_extractor": True}},
        {"id": "doctor", "type": "data.doctor", "params": {"min_side": 16}},
    ]
    data["edges"] += [
        {"source": "train", "source_port": "model", "target": "errors", "target_port": "model"},
        {"source": "fmt", "source_port": "data", "target": "errors", "target_port": "data"},
        {"source": "codes_input", "source_port": "model", "target": "codes_backbone", "target_port": "model"},
        {"source": "codes_backbone", "source_port": "model", "target": "doctor", "target_port": "model"},
        {"source": "fmt", "source_port": "data", "target": "doctor", "target_port": "data"},
    ]
    return Graph.from_data(data)


@pytest.mark.slow
def test_cli_report_shows_planted_errors_and_dataset_faults(tmp_path, capsys):
    root = make_image_set(tmp_path / "images", ("circle", "stripes"), per_class=60, size=SIZE, fmt="png", seed=5)
    flipped = []
    for i, path in enumerate(sorted((root / "test" / "circle").glob("*.png"))[:3]):
        target = root / "test" / "stripes" / f"flipped{i}.png"
        path.rename(target)
        flipped.append(str(target.resolve()))
    copies = []
    for i, path in enumerate(sorted((root / "train" / "stripes").glob("*.png"))[:2]):
        target = root / "validation" / "stripes" / f"copy{i}.png"
        shutil.copyfile(path, target)
        copies.append({str(path.resolve()), str(target.resolve())})
    broken = root / "train" / "circle" / "broken.png"
    broken.write_bytes(b"")
    graph_file = tmp_path / "graph.json"
    insight_graph(root).save(graph_file)
    report_file = tmp_path / "report.json"
    done = nodeflow_here(capsys, ["--no-plugins", "run", graph_file, "--workspace", tmp_path / "ws", "--device", "cpu",
                                  "--quiet", "--report", report_file])  # in this process: about the report
    assert done.returncode == 0, done.stderr
    nodes = json.loads(report_file.read_text())["nodes"]
    # 3 of the 24 test images carry a wrong label, so 0.875 is the best a model can score
    assert nodes["eval"]["metrics"]["accuracy"] >= 0.75, nodes["eval"]

    errors = nodes["errors"]["metrics"]
    assert errors["samples"] == 24 and errors["errors"] >= 3
    saved = json.loads((tmp_path / "ws" / "errors" / "errors" / "errors.json").read_text())
    rows = saved["tables"]["top_errors"]["rows"]
    assert [r["loss"] for r in rows] == sorted((r["loss"] for r in rows), reverse=True)
    listed = {r["file"] for r in rows}
    found = sum(f in listed for f in flipped)
    print(f"planted wrong labels among the listed errors: {found}/3 ({len(rows)} listed)")
    assert found >= 2
    overlays = [r["overlay"] for r in rows if "overlay" in r]
    assert len(overlays) == min(4, len(rows))
    assert all(open(p, "rb").read(4) == b"\x89PNG" for p in overlays)
    cells = saved["tables"]["confusion_cells"]
    assert sum(c["count"] for c in cells) == errors["samples"]
    assert any(c["true"] == "stripes" and c["predicted"] == "circle" and set(flipped) & set(c["files"]) for c in cells)

    doctor = nodes["doctor"]["metrics"]
    assert doctor["unreadable_count"] == 1 and doctor["leaked_exact_duplicates_count"] == 2
    findings = json.loads((tmp_path / "ws" / "doctor" / "doctor" / "findings.json").read_text())["tables"]["findings"]
    assert [f["file"] for f in findings["unreadable"]] == [str(broken.resolve())]
    assert sorted(map(set, (g["files"] for g in findings["exact_duplicates"])), key=sorted) == \
        sorted(copies, key=sorted)
    assert {"near_duplicates", "label_suspects"} <= set(findings)


def doctor_graph(root, params: dict | None = None, with_model: bool = False, model_size: int = SIZE) -> Graph:
    nodes = [{"id": "data", "type": "data.image_folder", "params": {"root": str(root)}},
             {"id": "fmt", "type": "data.format", "params": {"height": SIZE, "width": SIZE}},
             {"id": "doctor", "type": "data.doctor", "params": params or {}}]
    edges = [{"source": "data", "source_port": "data", "target": "fmt", "target_port": "data"},
             {"source": "fmt", "source_port": "data", "target": "doctor", "target_port": "data"}]
    if with_model:
        nodes += [{"id": "input", "type": "model.input", "params": {"height": model_size, "width": model_size}},
                  {"id": "backbone", "type": "model.backbone",
                   "params": {"arch": "resnet18", "weights": "none", "feature_extractor": True}}]
        edges += [{"source": "input", "source_port": "model", "target": "backbone", "target_port": "model"},
                  {"source": "backbone", "source_port": "model", "target": "doctor", "target_port": "model"}]
    return Graph.from_data({"format": "nodeflow.graph", "version": 1, "nodes": nodes, "edges": edges})


def test_doctor_without_a_model_checks_files_balance_and_exact_copies(registry, tmp_path):
    from tests.nodes.conftest import run

    root = make_image_set(tmp_path / "images", ("circle", "stripes", "cross"), per_class=10, size=SIZE, fmt="png",
                          corrupt=1)
    shutil.copyfile(next((root / "train" / "cross").glob("*.png")), root / "test" / "cross" / "again.png")
    report = run(registry, doctor_graph(root, {"min_side": 40}), tmp_path / "ws")
    assert report.ok, report.to_json()
    metrics = report.nodes["doctor"].metrics
    # every generated picture is 32 px: all tiny against min_side 40; the corrupt files were skipped
    # by the dataset node and are named all the same
    assert metrics["unreadable_count"] == 3 and metrics["tiny_count"] == metrics["images"] == 31
    assert metrics["leaked_exact_duplicates_count"] == 1 and "near_duplicates_count" not in metrics
    saved = json.loads((tmp_path / "ws" / "doctor" / "doctor" / "findings.json").read_text())["tables"]
    assert saved["checked"] == ["balance", "files", "exact_duplicates", "label_conflicts"]
    assert {row["class"]: row["test"] for row in saved["class_balance"]} == {"circle": 2, "cross": 3, "stripes": 2}
    assert all(".broken" in f["file"] for f in saved["findings"]["unreadable"])


def test_doctor_calls_one_image_under_two_classes_a_label_conflict_naming_both_files(registry, tmp_path):
    from tests.nodes.conftest import run

    root = make_image_set(tmp_path / "images", ("circle", "stripes"), per_class=6, size=SIZE, fmt="png")
    original = sorted((root / "train" / "circle").glob("*.png"))[0]
    misfiled = root / "train" / "stripes" / "misfiled.png"
    shutil.copyfile(original, misfiled)
    report = run(registry, doctor_graph(root), tmp_path / "ws")
    assert report.ok, report.to_json()
    metrics = report.nodes["doctor"].metrics
    assert metrics["label_conflicts_count"] == 1 and metrics["exact_duplicates_count"] == 0
    findings = json.loads((tmp_path / "ws" / "doctor" / "doctor" / "findings.json").read_text())["tables"]["findings"]
    assert findings["exact_duplicates"] == []
    [conflict] = findings["label_conflicts"]
    assert sorted(zip(conflict["files"], conflict["classes"])) == [(str(original.resolve()), "circle"),
                                                                  (str(misfiled.resolve()), "stripes")]


def test_doctor_names_the_port_when_the_model_does_not_take_the_images(registry, tmp_path):
    from nodeflow.executor import Executor

    root = make_image_set(tmp_path / "images", per_class=10, size=SIZE, fmt="png")
    problems = Executor(registry, tmp_path / "ws").validate(doctor_graph(root, with_model=True, model_size=48))
    assert problems and "doctor" in str(problems[0]) and "48" in str(problems[0])
