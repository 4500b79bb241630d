"""Transfer really happens through a weights file: a ResNet-18 pretrained here on generated shapes and
saved the way torchvision users save one feeds the hot-dog template on a related, tiny target set.

Source: 1,200 generated 32-px pictures of six kinds (circle, square, stripes, checker, cross,
triangle), two epochs of Adam on torchvision's own resnet18, saved with
``torch.save(model.state_dict(), ...)``. Target: "hot_dog" (circles) vs "not_hot_dog" (triangles) in
new colours and places, 10 training, 10 validation and 40 test images per class. The template runs
twice at 32 px (no random crop or flip, so a frozen backbone's features are computed once):
both twins frozen (pretrained vs random features, a new fc trained on top), then both trained
through (fine-tuned from the file vs from scratch). Scores are the template's evaluate nodes on
the 80 test images. Measured on a 2-core box with two torch threads: frozen pretrained 0.9625 vs
frozen random 0.725, fine-tuned 1.0 vs scratch 0.5; with one thread: 0.9875 vs 0.725 and 0.9625 vs
0.525. The test asks for margins of 0.15 and 0.2. (One epoch of pretraining was not enough to hold
them whatever the thread count: with one thread the frozen pretrained features scored 0.8375.)
"""

from __future__ import annotations

import random

import numpy as np
import torch
import torchvision
from torch import nn

from nodeflow.executor import Executor
from nodeflow.graph import Graph
from nodeflow.templates import template_path
from nodes.engine.images import IMAGENET_MEAN, IMAGENET_STD
from tests.imagegen import KINDS, draw, make_image_set
from tests.nodes.conftest import with_params

SIZE = 32
#: the template at 32 px; the formatter resizes the 36-px target images and crops their centre, as it would 256 -> 224
TINY = {"input.height": SIZE, "input.width": SIZE, "formatter.height": SIZE, "formatter.width": SIZE,
        "formatter.resize_to": SIZE + 4, "augment.random_resized_crop": False, "augment.hflip": 0.0,
        "train_ft.batch_size": 10, "train_sc.batch_size": 10, "train_ft.momentum": 0.9, "train_sc.momentum": 0.9}
FROZEN = {"resnet18_ft.feature_extractor": True, "resnet18_sc.feature_extractor": True,
          "train_ft.epochs": 30, "train_sc.epochs": 30, "train_ft.lr": 1e-2, "train_sc.lr": 1e-2}
#: the template's recipe scaled to 20 images: the scratch twin at 10x the fine-tune LR, the new fc at 10x (head_lr_mult)
TRAINED_THROUGH = {"train_ft.epochs": 10, "train_sc.epochs": 10, "train_ft.lr": 3e-4, "train_sc.lr": 3e-3}


def source_images(per_kind: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Generated pictures as the formatter hands them to a network: 0..1, then ImageNet-normalised."""
    rng = random.Random(seed)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    images, labels = [], []
    for _ in range(per_kind):
        for label, kind in enumerate(KINDS):
            pixels = torch.from_numpy(np.asarray(draw(kind, SIZE, rng), dtype=np.float32) / 255).permute(2, 0, 1)
            images.append((pixels - mean) / std)
            labels.append(label)
    return torch.stack(images), torch.tensor(labels)


def pretrain_resnet18(path, per_kind: int = 200, seed: int = 0, epochs: int = 2):
    """A torchvision resnet18 trained for ``epochs`` on the six kinds, saved as its users save one."""
    images, labels = source_images(per_kind, seed + 1)
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(num_classes=len(KINDS))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    order = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for batch in torch.randperm(len(images), generator=order).split(32):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(images[batch]), labels[batch]).backward()
            optimizer.step()
    torch.save(model.state_dict(), path)
    return model.eval()


def test_a_pretrained_resnet18_file_transfers_through_the_hotdog_template(registry, tmp_path):
    weights = tmp_path / "resnet18_shapes.pth"
    model = pretrain_resnet18(weights)
    held_out, truth = source_images(20, seed=99)
    with torch.no_grad():
        source_accuracy = (model(held_out).argmax(1) == truth).float().mean().item()
    assert source_accuracy >= 0.6, source_accuracy  # it learned the six kinds (chance: 0.17)

    target = make_image_set(tmp_path / "hotdog", ("circle", "triangle"), per_class=60, size=SIZE + 4,
                            fractions=(1 / 6, 1 / 6, 2 / 3), seed=0, class_names=("hot_dog", "not_hot_dog"))
    template = with_params(Graph.load(template_path("hotdog_resnet18_finetune")),
                           {**TINY, "dataset.root": str(target), "resnet18_ft.weights": str(weights)})
    executor = Executor(registry, tmp_path / "ws", device="cpu")
    scores = {}
    for name, values in (("frozen", FROZEN), ("trained through", TRAINED_THROUGH)):
        report = executor.run(with_params(template, values))
        assert report.ok, report.to_json()
        assert report.outputs["evaluate_ft"]["metrics"].values["samples"] == 80
        scores[name] = (report.nodes["evaluate_ft"].metrics["accuracy"], report.nodes["evaluate_sc"].metrics["accuracy"])

    pretrained, random_features = scores["frozen"]
    assert pretrained >= 0.85 and pretrained >= random_features + 0.15, scores
    fine_tuned, scratch = scores["trained through"]
    assert fine_tuned >= 0.8 and fine_tuned >= scratch + 0.2, scores
