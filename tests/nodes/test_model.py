"""Layer nodes compose a model by shape propagation; wrong compositions are named at validation."""

from __future__ import annotations

import hashlib
import io

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodeflow.templates import template_path
from nodes.engine.download import MIRROR_ENV
from nodes.engine.models import SpecError, build, summarize
from nodes.ports import MODEL, ModelValue
from tests.nodes.conftest import ROOT, small_template, with_params


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
    for group in data.get("groups", []):  # the template's groups name their members
        group["members"] = [m for m in group["members"] if m != "flatten"]
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


TINY_HOTDOG = {"input.height": 32, "input.width": 32, "formatter.height": 32, "formatter.width": 32,
               "formatter.resize_to": 36}


def hotdog(root, **values) -> Graph:
    return with_params(Graph.load(template_path("hotdog_resnet18_finetune")),
                       {**TINY_HOTDOG, "dataset.root": str(root), **{k.replace("__", "."): v for k, v in values.items()}})


def seeded_resnet18() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18()


def built_stem_weight(report, node_id: str) -> torch.Tensor:
    """The first convolution of the network the trainer will build from the node's output."""
    return build(report.outputs[node_id]["model"].spec).stem.conv1.weight


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_the_hotdog_backbone_takes_a_resnet18_saved_the_torchvision_way(registry, shapes, workspace, tmp_path,
                                                                         suffix):
    model = seeded_resnet18()
    path = tmp_path / f"r18{suffix}"
    if suffix == ".pth":
        torch.save(model.state_dict(), path)
    else:
        save_file(model.state_dict(), str(path))
    report = Executor(registry, workspace, device="cpu").run(hotdog(shapes, resnet18_ft__weights=str(path)),
                                                             target="resnet18_ft")
    assert report.ok, report.to_json()
    assert torch.equal(built_stem_weight(report, "resnet18_ft"), model.conv1.weight)


def test_a_file_for_another_resnet_is_one_line_naming_node_param_and_the_arch_it_fits(shapes, tmp_path, monkeypatch,
                                                                                      capsys):
    """The CLI's run, in this process (what it prints is the point, not the process)."""
    from nodeflow.cli import main

    torch.save(torchvision.models.resnet34().state_dict(), tmp_path / "r34.pth")
    argv = ["--no-plugins", "run", "hotdog_resnet18_finetune", "--workspace", str(tmp_path / "ws"), "--device", "cpu",
            "--quiet", "--target", "resnet18_ft",
            *(a for k, v in {**TINY_HOTDOG, "dataset.root": shapes, "resnet18_ft.weights": tmp_path / "r34.pth"}.items()
              for a in ("--set", f"{k}={v}"))]
    monkeypatch.chdir(ROOT)
    code = main(argv)
    stderr = capsys.readouterr().err
    assert code == 1
    error = next(line for line in stderr.splitlines() if line.startswith("error:"))
    assert error.startswith(f"error: node 'resnet18_ft' failed: parameter 'weights': weights file "
                            f"'{tmp_path / 'r34.pth'}' does not fit resnet18: read with torchvision's key names")
    assert "expects keys such as conv1.weight" in error and "It fits resnet34" in error
    assert "Traceback" not in stderr


def test_imagenet_weights_come_from_the_mirror_checked_against_the_hash_in_their_name(
        registry, shapes, workspace, tmp_path, mirror, monkeypatch):
    """The real download path of weights: imagenet, with NODEFLOW_MIRROR_URL set. The file is a
    seeded ResNet-18, so its SHA-256 cannot begin like torchvision's published one; the test puts
    its own hash into the name torchvision's weights table gives, as a mirror of that file would."""
    model = seeded_resnet18()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    name = f"resnet18-{hashlib.sha256(buffer.getvalue()).hexdigest()[:8]}.pth"
    mirror.files[name] = buffer.getvalue()
    monkeypatch.setattr(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.value, "url",
                        f"https://download.pytorch.org/models/{name}")
    monkeypatch.setenv(MIRROR_ENV, mirror.url)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    report = Executor(registry, workspace, device="cpu").run(hotdog(shapes, resnet18_ft__weights="imagenet"),
                                                             target="resnet18_ft")
    assert report.ok, report.to_json()
    assert mirror.requests == [f"/models/{name}"]
    assert sorted(p.name for p in (workspace / "weights").iterdir()) == [name]
    assert torch.equal(built_stem_weight(report, "resnet18_ft"), model.conv1.weight)


def test_a_mirrored_file_that_is_not_torchvisions_is_refused_and_not_kept(registry, shapes, workspace, tmp_path,
                                                                          mirror, monkeypatch):
    buffer = io.BytesIO()
    torch.save(seeded_resnet18().state_dict(), buffer)
    mirror.files["resnet18-f37072fd.pth"] = buffer.getvalue()
    monkeypatch.setenv(MIRROR_ENV, mirror.url)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    report = Executor(registry, workspace, device="cpu").run(hotdog(shapes, resnet18_ft__weights="imagenet"),
                                                             target="resnet18_ft")
    error = report.nodes["resnet18_ft"].error
    assert report.nodes["resnet18_ft"].status == "failed"
    assert error.startswith(f"parameter 'weights': could not download the ImageNet weights of resnet18: "
                            f"{mirror.url}/resnet18-f37072fd.pth is not the published resnet18-f37072fd.pth")
    assert "not kept" in error and MIRROR_ENV in error and ".safetensors" in error
    assert not list((workspace / "weights").iterdir())
