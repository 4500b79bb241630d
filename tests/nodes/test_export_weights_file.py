"""The exported script loads the backbone weights file the graph loads: "any ResNet-18 file", here
one with a 4-class classifier saved as torchvision users save one (``torch.save(model.state_dict())``
after replacing ``fc``), and one saved under nodeflow's block names with a head of its own. Run in a
folder of its own, the hot-dog script fine-tunes from either and gives the graph's numbers to the
last bit (as tests/nodes/test_export_script.py explains, every random draw has the same source)."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torchvision
from torch import nn

from nodeflow.executor import Executor
from nodeflow.script import export_script
from nodes.engine.models import split_blocks
from tests.imagegen import make_image_set
from tests.nodes.test_export_script import HOTDOG, run_script, template

TARGET = "evaluate_ft"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A few 36-pixel pictures per class (cropped to 32), as hotdog/ and not_hotdog/ folders."""
    return make_image_set(tmp_path_factory.mktemp("hotdog"), ("circle", "stripes"), per_class=10, size=36,
                          vary_size=True, class_names=("hotdog", "not_hotdog"))


def four_class_resnet18() -> nn.Module:
    torch.manual_seed(7)  # not the trainer's seed: weights that did not load would show in the numbers
    model = torchvision.models.resnet18(weights=None)
    model.fc = nn.Linear(512, 4)
    return model


def torchvision_file(path):
    torch.save(four_class_resnet18().state_dict(), path)
    return path


def nodeflow_file(path):
    """The same network under the feature blocks' names (stem.conv1.weight, layer1.0...), with its
    4-class head as a block of its own."""
    model = four_class_resnet18()
    state = nn.Sequential(OrderedDict(split_blocks("resnet18", model))).state_dict()
    state.update({f"head.{k}": v for k, v in model.fc.state_dict().items()})
    torch.save(state, path)
    return path


@pytest.mark.parametrize("save", [torchvision_file, nodeflow_file], ids=["torchvision-names", "nodeflow-names"])
def test_the_exported_script_fine_tunes_from_a_4_class_resnet18_file_as_the_graph_does(registry, images, tmp_path,
                                                                                      save):
    weights = save(tmp_path / "resnet18_4_classes.pth")
    graph = template(registry, "hotdog_resnet18_finetune",
                     {**HOTDOG, "dataset.root": str(images), "resnet18_ft.weights": str(weights)})
    report = Executor(registry, tmp_path / "workspace", device="cpu").run(graph, target=TARGET)
    assert report.ok, report.to_json()
    folder = tmp_path / "script"
    folder.mkdir()  # nothing there but the script: it reads the weights file where the graph names it
    script = run_script(export_script(graph, registry, target=TARGET).text, folder)
    assert {"train_ft", "evaluate_ft"} <= set(script)
    compared = 0
    for node, metrics in script.items():
        for name, value in metrics.items():
            assert value == pytest.approx(report.nodes[node].metrics[name], abs=1e-6), (node, name)
            compared += 1
    assert {"val_loss", "train_loss"} <= set(script["train_ft"]) and "loss" in script["evaluate_ft"]
    assert compared >= 5
