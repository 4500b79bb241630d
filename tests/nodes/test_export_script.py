"""The templates written as standalone PyTorch scripts: plain torch and torchvision, and, run on
the same generated images, the same numbers as the graph's own run.

Parity, and how close it is:
- hot-dog (ResNet-18 fine-tuned and from scratch, random resized crop + flip): equal to the last
  bit. Every random draw has the same source: the trainer's seed for the initialisation, the
  data-order generator (seeded with the trainer's seed) for the shuffle and for the loader's
  worker seeds, which draw the crops and flips; the decoded-image path gives the same pixels as
  the script's PIL transforms. Tolerance 1e-6, for the printing of floats.
- cats vs dogs (VGG16 frozen, then block5 fine-tuned): the graph's run computes the frozen
  blocks' outputs once and keeps them in fp16 (its feature cache); the script runs them on every
  batch in full precision. Losses agree to 1e-3 (measured: under 1e-4); an accuracy may differ by
  one image whose two class scores are closer than that rounding (measured: one of 24 training
  images in the fine-tuning epoch, in a run on twice as many images as here).
The seeds derived from cache keys (``RunContext.seed``) only seed the editor's sample previews;
nothing a script reproduces depends on them.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nodeflow.cli import apply_overrides, load_graph
from nodeflow.executor import Executor
from nodeflow.script import export_script
from tests.imagegen import make_image_set

#: the templates shrunk to seconds: 32-pixel images, 2 epochs of 3 batches, no downloads
TINY = {"input.height": 32, "input.width": 32, "formatter.height": 32, "formatter.width": 32}
CATS = {**TINY, "vgg16.weights": "none", "train.epochs": 2, "train_finetuned.epochs": 2, "train.batch_size": 8,
        "train_finetuned.batch_size": 8, "train.optimizer": "adam", "train.lr": 1e-3,
        "train_finetuned.optimizer": "adam", "train_finetuned.lr": 1e-4, "train.workers": 0, "train_finetuned.workers": 0}
HOTDOG = {**TINY, "resnet18_ft.weights": "none", "formatter.resize_to": 36, "train_ft.epochs": 2,
          "train_sc.epochs": 2, "train_ft.batch_size": 8, "train_sc.batch_size": 8}
STANDARD_LIBRARY = set(sys.stdlib_module_names)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """6 training, 2 validation and 2 test images per class, as cat/ and dog/ folders: parity does
    not need more, and every image is trained on by the graph and by its script."""
    return make_image_set(tmp_path_factory.mktemp("pets"), ("circle", "stripes"), per_class=10, size=36,
                          vary_size=True, class_names=("cat", "dog"))


def template(registry, name: str, values: dict):
    sets = [f"{key}={json.dumps(value) if not isinstance(value, str) else value}" for key, value in values.items()]
    return apply_overrides(load_graph(name), sets, registry)


def run_script(text: str, folder: Path) -> dict:
    """The script run as a person runs it, in a folder of its own, with no nodeflow on its path, on
    as many torch threads as the graph's run here (a from-scratch training's losses move with the
    thread count's order of summing: the hot-dog scratch twin's 0.931 on two threads is 0.983 on
    one, in a 6-step run)."""
    import torch

    path = folder / "train.py"
    path.write_text(text)
    threads = str(torch.get_num_threads())
    done = subprocess.run([sys.executable, "-I", str(path)], capture_output=True, text=True, cwd=folder, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout[done.stdout.rindex("\n{\n") + 1:])


def compare(registry, graph, folder: Path, loss_tolerance: float, images_apart: int) -> dict:
    """Run the graph and its script; every metric both report must agree."""
    report = Executor(registry, folder / "workspace", device="cpu").run(graph)
    assert report.ok, report.to_json()
    script = run_script(export_script(graph, registry).text, folder)
    compared = {}
    for node, metrics in script.items():
        for name, value in metrics.items():
            ours = report.nodes[node].metrics[name]
            compared[f"{node}.{name}"] = (ours, value)
            if name.endswith("accuracy"):
                seen = report.nodes["dataset"].metrics[("validation" if name.startswith("val") else "train")
                                                        + "_images"] if node.startswith("train") else \
                    report.nodes[node].metrics["samples"]
                assert abs(value - ours) <= images_apart / seen + 1e-9, (node, name, ours, value)
            elif name.endswith("loss"):
                assert value == pytest.approx(ours, abs=loss_tolerance), (node, name, ours, value)
            else:  # counts: images per split, trainable parameters
                assert value == ours, (node, name, ours, value)
    return compared


@pytest.mark.slow
def test_the_cats_vs_dogs_script_gives_the_graphs_numbers(registry, images, tmp_path):
    graph = template(registry, "cats_vs_dogs_finetune", {**CATS, "dataset.root": str(images)})
    compared = compare(registry, graph, tmp_path, loss_tolerance=1e-3, images_apart=1)
    assert {"train.val_loss", "train_finetuned.train_loss", "evaluate.accuracy", "evaluate.loss",
            "train_finetuned.trainable_params", "dataset.train_images"} <= set(compared)


@pytest.mark.slow
def test_the_hotdog_script_gives_the_graphs_numbers_to_the_last_bit(registry, images, tmp_path):
    graph = template(registry, "hotdog_resnet18_finetune", {**HOTDOG, "dataset.root": str(images)})
    compared = compare(registry, graph, tmp_path, loss_tolerance=1e-6, images_apart=0)
    assert {"train_ft.val_loss", "train_sc.train_loss", "evaluate_ft.accuracy", "evaluate_sc.loss"} <= set(compared)


@pytest.mark.slow
def test_early_stopping_keeps_the_same_weights_in_the_script_as_in_the_graph(registry, images, tmp_path):
    """Early stopping's bookkeeping (the best weights kept, epochs without a better loss) is the
    script's ``keep_best`` in both, so the kept weights, and every number after them, agree."""
    values = {**HOTDOG, "dataset.root": str(images), "train_ft.epochs": 3, "train_ft.early_stopping": 1,
              "train_sc.epochs": 3, "train_sc.early_stopping": 1}
    graph = template(registry, "hotdog_resnet18_finetune", values)
    assert "keep_best(best, stale, val_loss, model)" in export_script(graph, registry).text
    compared = compare(registry, graph, tmp_path, loss_tolerance=1e-6, images_apart=0)
    assert {"train_ft.val_loss", "evaluate_ft.loss", "evaluate_sc.loss"} <= set(compared)


@pytest.mark.parametrize("name", ["cats_vs_dogs_finetune", "hotdog_resnet18_finetune", "cnn_codes_linear"])
def test_every_template_reads_as_a_standalone_script(registry, images, name):
    graph = template(registry, name, {"dataset.root": str(images)})
    exported = export_script(graph, registry)
    tree = ast.parse(exported.text)
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported - STANDARD_LIBRARY == {"torch", "torchvision"}
    functions = [node.name for node in tree.body if isinstance(node, ast.FunctionDef)]
    assert functions[-1] == "main" and "find_images" in functions
    assert f'DATASET_ROOT = "{images}"' in exported.text  # the graph's params, as constants at the top
    for node in graph.nodes:
        assert f"    # -- {node.id}: " in exported.text  # every step, in order, done or left out
    if name == "cnn_codes_linear":
        assert set(exported.left_out) == {"codes", "linear", "evaluate", "recommend"}
    elif name == "hotdog_resnet18_finetune":
        assert exported.left_out == {"compare": "this node has no script form"}
        assert "keep_workers=True" in exported.text  # random resized crops: worker processes that stay, as in the graph


def test_the_dataset_doctor_is_left_out_with_a_comment(registry, images):
    graph = template(registry, "cats_vs_dogs_finetune", {"dataset.root": str(images)})
    data = graph.model_dump(mode="json")
    data["nodes"].append({"id": "doctor", "type": "data.doctor", "params": {}})
    data["edges"].append({"source": "formatter", "source_port": "data", "target": "doctor", "target_port": "data"})
    exported = export_script(type(graph).from_data(data), registry)
    assert exported.left_out == {"doctor": "this node has no script form"}
    assert "    # -- doctor: Dataset doctor (data.doctor)\n    # left out: this node has no script form" in exported.text


def test_a_training_setting_the_script_cannot_reproduce_leaves_the_trainer_out_naming_it(registry, images):
    graph = template(registry, "cats_vs_dogs_finetune", {"dataset.root": str(images), "train.batch_augment": "mixup"})
    left = export_script(graph, registry).left_out
    assert left["train"].startswith("train.batch_augment: 'mixup' has no script form")
    assert left["finetune"] == "it needs the output of 'train', left out above"
    assert set(left) == {"train", "finetune", "train_finetuned", "evaluate"}


def test_a_picked_folder_is_written_absolute_and_the_script_runs_in_an_empty_folder(images, tmp_path, monkeypatch,
                                                                                    capsys):
    """The dataset picked as the picker stores it (relative to the workspace), exported from another
    folder: the script names the folder absolute, runs from an empty folder, and takes --data. The
    export runs in this process (started in that other folder); the script in processes of its own."""
    import shutil

    from nodeflow.cli import main
    from nodeflow.graph import Graph

    workspace, elsewhere, empty = tmp_path / "ws", tmp_path / "elsewhere", tmp_path / "empty"
    elsewhere.mkdir()
    empty.mkdir()
    shutil.copytree(images, workspace / "data" / "hotdog")
    path = tmp_path / "graph.json"
    Graph.from_data({"format": "nodeflow.graph", "version": 2, "name": "picked", "nodes": [
        {"id": "dataset", "type": "data.image_folder", "params": {"root": "data/hotdog", "verify": False}}]}).save(path)
    with monkeypatch.context() as patch:
        patch.setenv("NODEFLOW_WORKSPACE", str(workspace))  # the workspace of the editor it was exported from
        patch.chdir(elsewhere)
        assert main(["--no-plugins", "export-script", str(path), "-o", str(tmp_path / "train.py")]) == 0, \
            capsys.readouterr().err
    text = (tmp_path / "train.py").read_text()
    assert f'DATASET_ROOT = "{workspace / "data" / "hotdog"}"' in text
    assert run_script(text, empty)["dataset"] == {"train_images": 12, "validation_images": 4, "test_images": 4}
    smaller = tmp_path / "smaller"
    for split in ("train", "validation", "test"):
        for label in ("cat", "dog"):
            (smaller / split / label).mkdir(parents=True)
            for image in sorted((images / split / label).iterdir())[:2]:
                shutil.copy(image, smaller / split / label)
    shutil.rmtree(workspace)  # the data is elsewhere on this machine: --data says where
    script = empty / "train.py"
    moved = subprocess.run([sys.executable, "-I", str(script), "--data", str(smaller)], capture_output=True,
                           text=True, cwd=empty, timeout=300)
    assert moved.returncode == 0, moved.stderr[-3000:]
    assert json.loads(moved.stdout[moved.stdout.rindex("\n{\n") + 1:])["dataset"] == {
        "train_images": 4, "validation_images": 4, "test_images": 4}
    lost = subprocess.run([sys.executable, "-I", str(script)], capture_output=True, text=True, cwd=empty, timeout=300)
    assert lost.returncode == 1 and "does not exist on this machine" in lost.stderr and "--data" in lost.stderr
    assert "Traceback" not in lost.stderr
