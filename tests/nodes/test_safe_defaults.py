"""Safe defaults, checked before running: an output layer without an activation, warnings that
name the node and param (a ReLU on the output layer, ImageNet weights that cannot be fetched) and
never block a run, titles that follow the params, and errors that name nodes as their cards do."""

from __future__ import annotations

import socket
import subprocess
import sys


from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodeflow.node import card_title
from nodes.engine.models import ARCHS, IMAGENET_FILES, can_reach, imagenet_url, kept_imagenet_url
from nodes.model import Dense
from tests.nodes.conftest import ROOT, TEMPLATE, small_template, with_params


def test_an_output_layer_has_no_activation_unless_one_is_set():
    assert Dense.Params.model_validate({"units": "auto"}).activation == "none"
    assert Dense.Params.model_validate({}).activation == "relu"  # a hidden layer
    assert Dense.Params.model_validate({"units": "auto", "activation": "relu"}).activation == "relu"  # asked for


def test_a_relu_on_the_output_layer_is_a_warning_naming_it_that_does_not_block_the_run(registry, shapes, workspace):
    graph = with_params(small_template(shapes), {"classifier.activation": "relu"})
    executor = Executor(registry, workspace)
    [warning] = executor.validate(graph)
    assert (warning.node_id, warning.param, warning.severity) == ("classifier", "activation", "warning")
    assert str(warning).startswith("warning: classifier.activation: activation relu on the output layer")
    assert set(executor.plan(graph).values()) == {"run"}  # nothing blocks the run
    assert executor.status(graph)["classifier"] == "idle"  # not "invalid"


def test_a_dense_layer_that_feeds_the_trainer_directly_is_the_output_layer(registry, shapes, workspace):
    graph = with_params(small_template(shapes), {"classifier.units": 2, "classifier.activation": "relu"})
    [warning] = Executor(registry, workspace).validate(graph)  # said once, though both trainers see it
    assert (warning.node_id, warning.param, warning.other_node) == ("classifier", "activation", "train")
    assert "it feeds 'train' (Train the new head) directly" in warning.message


def test_the_cli_validate_shows_warnings_and_exits_0(shapes, tmp_path):
    path = tmp_path / "graph.json"
    with_params(small_template(shapes), {"classifier.activation": "relu"}).save(path)
    done = subprocess.run([sys.executable, "-m", "nodeflow.cli", "--no-plugins", "validate", str(path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"{path}: valid (11 nodes, 12 edges); 1 warning"
    assert lines[1].startswith(f"{path}: warning: classifier.activation: activation relu")


def test_imagenet_weights_that_cannot_be_fetched_are_a_warning_naming_the_param(registry, shapes, workspace,
                                                                                tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    graph = small_template(shapes, vgg16__weights="imagenet")
    monkeypatch.setattr("nodes.model.can_reach", lambda url: False)  # this machine offline, wherever the test runs
    [warning] = Executor(registry, workspace).validate(graph)
    assert (warning.node_id, warning.param, warning.severity) == ("vgg16", "weights", "warning")
    assert "vgg16-397923af.pth" in warning.message and str(workspace / "weights") in warning.message
    monkeypatch.setattr("nodes.model.can_reach", lambda url: True)  # online: torchvision will download them
    assert Executor(registry, workspace).validate(graph) == []
    monkeypatch.setattr("nodes.model.can_reach", lambda url: False)
    (workspace / "weights").mkdir(parents=True)
    (workspace / "weights" / "vgg16-397923af.pth").write_bytes(b"")  # already here: nothing to fetch
    assert Executor(registry, workspace).validate(graph) == []


def test_reachability_is_a_real_bounded_connection_and_is_remembered():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert can_reach(f"http://127.0.0.1:{port}/weights.pth")
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        free = closed.getsockname()[1]
    assert not can_reach(f"http://localhost:{free}/x", timeout=0.5)
    assert can_reach(f"http://127.0.0.1:{port}/other.pth")  # remembered per host: no second connection
    assert imagenet_url("vgg16").endswith("/vgg16-397923af.pth")


def test_the_imagenet_file_names_kept_here_are_torchvisions():
    """Whether ImageNet weights are here, and where they come from, is told from these names
    without importing torchvision."""
    assert {arch: imagenet_url(arch).rsplit("/", 1)[-1] for arch in ARCHS} == IMAGENET_FILES
    assert {arch: kept_imagenet_url(arch) for arch in ARCHS} == {arch: imagenet_url(arch) for arch in ARCHS}


def test_titles_follow_the_params(registry):
    graph = Graph.load(TEMPLATE)
    titles = {n.id: card_title(registry.get(n.type), n.title, n.params) for n in graph.nodes}
    assert titles["input"] == "Input layer (150×150×3)" and titles["formatter"] == "Resize + crop to 150×150×3"
    assert titles["finetune"] == "Unfreeze the last block" and titles["train"] == "Train the new head"
    small = with_params(graph, {"input.height": 64, "input.width": 64, "formatter.height": 64, "formatter.width": 64,
                                "finetune.unfreeze": ["block3", "block4", "block5"]})
    titles = {n.id: card_title(registry.get(n.type), n.title, n.params) for n in small.nodes}
    assert titles["input"] == "Input layer (64×64×3)" and titles["formatter"] == "Resize + crop to 64×64×3"
    assert titles["finetune"] == "Unfreeze block3, block4, block5"


def test_errors_name_nodes_by_the_id_and_title_on_their_cards(registry, shapes, workspace):
    graph = with_params(small_template(shapes), {"formatter.height": 48})
    [mismatch] = [p for p in Executor(registry, workspace).validate(graph) if p.node_id == "train"]
    assert "'formatter' (Resize + crop to 48×32×3)" in mismatch.message
    assert "'input' (Input layer (32×32×3))" in mismatch.message
    # an output layer left unnamed is called dense1 inside the model, which no card shows
    graph = with_params(small_template(shapes), {"classifier.name": "", "classifier.units": 3})
    [trainer] = [p for p in Executor(registry, workspace).validate(graph) if p.node_id == "train"]
    assert "('classifier' (Output layer))" in trainer.message and "set classifier.units to 2" in trainer.message
    assert "dense1" not in trainer.message and trainer.other_node == "classifier"
