"""Layer nodes compose a model by shape propagation; wrong compositions are named at validation."""

from __future__ import annotations

import pytest
import torch

from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodes.engine.models import SpecError, build, summarize
from nodes.ports import MODEL, ModelValue
from tests.nodes.conftest import small_template, with_params


def chain(*layers, size=32):
    return {"input_shape": [3, size, size], "layers": list(layers)}


@pytest.mark.parametrize("size", [32, 64, 72])
def test_dense_input_size_follows_the_image_size(size):
    spec = chain({"kind": "backbone", "name": "backbone", "arch": "vgg16"}, {"kind": "flatten", "name": "flatten"},
                 {"kind": "dense", "name": "dense", "units": 8, "activation": "relu"}, size=size)
    side = size // 32
    assert summarize(spec)["output_shape"] == [8]
    net = build(spec, load_weights=False)
    assert net.dense[0].in_features == 512 * side * side
    assert net(torch.randn(2, 3, size, size)).shape == (2, 8)


def test_a_head_of_every_layer_kind_builds_and_runs():
    spec = chain({"kind": "backbone", "name": "backbone", "arch": "mobilenet_v3_small"},
                 {"kind": "batchnorm", "name": "bn1"}, {"kind": "global_pool", "name": "pool", "mode": "max"},
                 {"kind": "dropout", "name": "drop", "p": 0.2},
                 {"kind": "dense", "name": "hidden", "units": 16, "activation": "gelu", "dropout": 0.1},
                 {"kind": "batchnorm", "name": "bn2"}, {"kind": "dense", "name": "out", "units": "auto"})
    assert summarize(spec)["output_shape"] == ["auto"]
    net = build(spec, num_classes=3, load_weights=False)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    assert [n for n, _ in net.named_children()][:2] == ["stem", "stage1"]


def test_too_small_images_and_dense_on_feature_maps_are_explained():
    with pytest.raises(SpecError, match="too small"):
        summarize(chain({"kind": "backbone", "name": "backbone", "arch": "vgg16"}, size=16))
    with pytest.raises(SpecError, match="put a flatten or global average pool"):
        summarize(chain({"kind": "backbone", "name": "backbone", "arch": "resnet18"},
                        {"kind": "dense", "name": "dense", "units": 4}))


def test_missing_flatten_in_the_template_is_a_validation_error_on_dense(registry, shapes, workspace):
    graph = small_template(shapes)
    data = graph.model_dump(mode="json")
    data["nodes"] = [n for n in data["nodes"] if n["id"] != "flatten"]
    data["edges"] = [e for e in data["edges"] if "flatten" not in (e["source"], e["target"])]
    data["edges"].append({"source": "vgg16", "source_port": "model", "target": "dense", "target_port": "model"})
    problems = Executor(registry, workspace).validate(Graph.from_data(data))
    assert [(p.node_id, p.param) for p in problems] == [("dense", "units")]
    assert "flatten" in problems[0].message


def test_fixed_output_units_must_match_the_classes(registry, shapes, workspace):
    graph = with_params(small_template(shapes), {"classifier.units": 3})
    problems = Executor(registry, workspace).validate(graph)
    trainer = next(p for p in problems if p.node_id == "train")
    assert "'classifier'" in trainer.message and "2 classes" in trainer.message


def test_weights_file_that_does_not_exist_is_named(registry, shapes, workspace, tmp_path):
    graph = small_template(shapes, vgg16__weights=str(tmp_path / "nope.safetensors"))
    problems = Executor(registry, workspace).validate(graph)
    assert [(p.node_id, p.param) for p in problems] == [("vgg16", "weights")]


def test_an_architecture_value_is_plain_json(tmp_path):
    model = ModelValue(spec=chain({"kind": "flatten", "name": "flatten"}), frozen=("block1",))
    MODEL.codec.save(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json"]
    assert MODEL.codec.load(tmp_path) == model
