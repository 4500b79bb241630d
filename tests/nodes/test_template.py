"""The cats-vs-dogs template end to end: it learns, it resumes in a new process, it adapts to
another backbone, and its mistakes are named before anything trains."""

from __future__ import annotations

import socket

import pytest

from nodeflow.errors import GraphInvalid
from nodeflow.executor import Executor
from nodes.engine.download import MIRROR_ENV
from tests.mirror import unreachable_url
from tests.nodes.conftest import run, small_template

ALL_NODES = {"input", "vgg16", "flatten", "dense", "classifier", "dataset", "formatter", "train", "finetune",
             "train_finetuned", "evaluate"}


@pytest.mark.slow
def test_cli_runs_all_eleven_nodes_learns_then_reruns_only_the_fine_tuning(template_twice):
    """``template_twice`` (tests/conftest.py): the CLI ran the template, then again in a new process with more
    blocks unfrozen and ``--target train_finetuned``."""
    report = template_twice.first
    assert {k for k, v in report["nodes"].items() if v["status"] == "ran"} == ALL_NODES
    nodes = report["nodes"]
    assert nodes["evaluate"]["metrics"]["accuracy"] >= 0.8, nodes  # two classes: chance is 0.5
    assert nodes["train_finetuned"]["metrics"]["val_accuracy"] >= 0.8

    statuses = {k: v["status"] for k, v in template_twice.second["nodes"].items()}
    assert {k for k, v in statuses.items() if v == "ran"} == {"finetune", "train_finetuned"}
    assert {k for k, v in statuses.items() if v == "cached"} == ALL_NODES - {"finetune", "train_finetuned", "evaluate"}


@pytest.mark.slow
def test_resnet18_backbone_with_the_same_template(registry, shapes, workspace):
    graph = small_template(shapes, vgg16__arch="resnet18", train__epochs=2, train_finetuned__epochs=2)
    facts = Executor(registry, workspace).input_facts(graph, "finetune")["model"]
    assert [layer["name"] for layer in facts["layers"]][:5] == ["stem", "layer1", "layer2", "layer3", "layer4"]
    assert facts["layers"][5]["name"] == "flatten" and facts["layers"][6]["params"] == 512 * 256 + 256
    report = run(registry, graph, workspace)
    assert report.ok, report.to_json()
    tuned = report.outputs["train_finetuned"]["model"]
    assert "layer4" not in tuned.frozen and "layer3" in tuned.frozen
    assert report.nodes["evaluate"].metrics["accuracy"] >= 0.75


def _online() -> bool:
    try:
        socket.getaddrinfo("download.pytorch.org", 443)
        return True
    except OSError:
        return False


def test_imagenet_weights_offline_fail_fast_naming_the_node(registry, shapes, workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    if _online():  # keep the test about the offline message even where the network works
        monkeypatch.setenv(MIRROR_ENV, unreachable_url())
    graph = small_template(shapes, vgg16__weights="imagenet")
    report = run(registry, graph, workspace, target="vgg16")
    assert report.nodes["vgg16"].status == "failed"
    error = report.nodes["vgg16"].error
    assert error.startswith("parameter 'weights': could not download") and "vgg16-397923af.pth" in error
    assert str(workspace / "weights") in error and "'none'" in error


def test_formatter_and_input_size_mismatch_is_a_validation_error_naming_both(registry, shapes, workspace):
    graph = small_template(shapes, formatter__height=48)
    problems = Executor(registry, workspace).validate(graph)
    trainer = next(p for p in problems if p.node_id == "train")
    assert "'formatter'" in trainer.message and "'input'" in trainer.message
    assert "3×48×32" in trainer.message and "3×32×32" in trainer.message
    assert trainer.other_node == "formatter"
    with pytest.raises(GraphInvalid):
        run(registry, graph, workspace)


def test_unknown_block_to_unfreeze_is_rejected_before_running(registry, shapes, workspace):
    graph = small_template(shapes, finetune__unfreeze=["layer4"])
    problems = Executor(registry, workspace).validate(graph)
    assert [(p.node_id, p.param) for p in problems] == [("finetune", "unfreeze")]
    assert "'layer4'" in problems[0].message and "block5" in problems[0].message


def test_backbone_facts_list_blocks_with_parameter_counts(registry, shapes, workspace):
    facts = Executor(registry, workspace).input_facts(small_template(shapes), "flatten")["model"]
    blocks = {layer["name"]: layer for layer in facts["layers"]}
    assert list(blocks) == ["block1", "block2", "block3", "block4", "block5"]
    assert blocks["block1"]["params"] == 3 * 64 * 9 + 64 + 64 * 64 * 9 + 64
    assert not any(layer["trainable"] for layer in blocks.values())
    assert facts["output_shape"] == [512, 1, 1]
