"""Each fine-tuning technique works through its node: discriminative LRs and frozen BN statistics in
the trainer, batch augmentation and distillation that train, the LR finder's suggestion, the
strategy advice, per-image augmentation. What defines each technique on tensors is tested beside
the engine (tests/nodes/engine/)."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
import torch
from PIL import Image

from nodeflow.events import Metric, Preview
from nodeflow.node import RunContext
from nodes.engine import augment
from nodes.engine.images import make_transform
from nodes.engine.device import seed_everything
from nodes.engine.loop import network
from nodes.ports import ModelValue
from nodes.data import ImageFolderDataset, ImageFormatter
from nodes.evaluation import Evaluate
from nodes.advice import recommend
from nodes.training import FineTune, LRFinder, Trainer
from tests.imagegen import make_image_set

RESNET = {"input_shape": [3, 32, 32], "layers": [
    {"kind": "backbone", "name": "backbone", "arch": "resnet18", "weights": "none"},
    {"kind": "global_pool", "name": "pool", "mode": "avg"},
    {"kind": "dense", "name": "fc", "units": "auto", "activation": "none", "dropout": 0.0}]}
MLP = {"input_shape": [3, 16, 16], "layers": [
    {"kind": "flatten", "name": "flatten"},
    {"kind": "dense", "name": "hidden", "units": 64, "activation": "relu", "dropout": 0.0},
    {"kind": "dense", "name": "out", "units": "auto", "activation": "none", "dropout": 0.0}]}


def formatted(shapes, workspace, size):
    ctx = RunContext("data", workspace)
    data = ImageFolderDataset().run(ctx, ImageFolderDataset.Params(root=str(shapes)))["data"]
    return ImageFormatter().run(ctx, ImageFormatter.Params(height=size, width=size), data)["data"]


@pytest.fixture(scope="module")
def data16(shapes, tmp_path_factory):
    return formatted(shapes, tmp_path_factory.mktemp("d16"), 16)


@pytest.fixture(scope="module")
def data32(shapes, tmp_path_factory):
    return formatted(shapes, tmp_path_factory.mktemp("d32"), 32)


RUNS = itertools.count()  # not random.random(): the trainer seeds Python's generator


def train(workspace, model, data, node_id="train", teacher=None, **params):
    """Trainer.run with a fresh checkpoint folder per call, so no run resumes another."""
    params = {"optimizer": "adam", "lr": 1e-3, "epochs": 3, "batch_size": 16, **params}
    ctx = RunContext(node_id, workspace, device="cpu", key=f"{node_id}-{next(RUNS)}")
    return Trainer().run(ctx, Trainer.Params(**params), model, data, teacher)["model"]


# -- discriminative learning rates and BN freezing -------------------------------------------------


def test_trainer_uses_the_discriminative_lrs(data32, tmp_path):
    model = ModelValue(spec=RESNET, frozen=("stem", "layer1", "layer2"))
    trained = train(tmp_path, model, data32, epochs=1, lr=1e-3, block_lrs=[1e-4, 1e-2])
    assert trained.history[0]["lr"] == 1e-4  # the first group: layer3 + layer4


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_frozen_batchnorm_statistics_do_not_change_while_fine_tuning(data32, tmp_path, freeze_bn):
    base = ModelValue(spec=RESNET, frozen=("stem", "layer1", "layer2", "layer3", "layer4"))
    tuned = FineTune().run(RunContext("ft", tmp_path), FineTune.Params(unfreeze=["layer4"],
                                                                       freeze_batchnorm=freeze_bn), base)["model"]
    seed_everything(0)
    before = network(tuned, 2).state_dict()
    after = train(tmp_path, tuned, data32, epochs=1).state
    stats = [k for k in after if k.startswith("layer4.") and ("running_" in k or "num_batches" in k)]
    assert stats
    unchanged = all(torch.equal(after[k], before[k]) for k in stats)
    assert unchanged is freeze_bn
    assert not torch.equal(after["layer4.0.conv1.weight"], before["layer4.0.conv1.weight"])  # it did train


# -- losses and batch augmentation -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mixup", "cutmix", "ricap"])
def test_batch_augmentation_trains_and_asks_for_raw_images(data16, tmp_path, kind):
    params = Trainer.Params(batch_augment=kind)
    assert augment.uses_random_batch_augment(params.batch_augment)
    assert not augment.uses_random_batch_augment(Trainer.Params().batch_augment)
    trained = train(tmp_path, ModelValue(spec=MLP), data16, epochs=4, batch_augment=kind, mix_alpha=0.4)
    assert trained.history[-1]["val_accuracy"] >= 0.8


@pytest.mark.slow
def test_a_student_learns_from_the_teachers_soft_targets_alone(data16, tmp_path):
    """The student's training labels are shuffled: with distill_alpha 0 it never sees them and
    learns the teacher's function; trained on those labels alone it stays near chance."""
    teacher = train(tmp_path, ModelValue(spec=MLP), data16, "teacher", epochs=4)
    assert teacher.history[-1]["val_accuracy"] >= 0.9
    items = list(data16.split("train"))
    labels = [y for _, y in items]
    random.Random(0).shuffle(labels)
    noisy = data16.with_(splits={**data16.splits, "train": tuple((p, y) for (p, _), y in zip(items, labels))})
    student = train(tmp_path, ModelValue(spec=MLP), noisy, "student", teacher, epochs=6, distill_alpha=0.0,
                    distill_temperature=2.0, seed=1)
    alone = train(tmp_path, ModelValue(spec=MLP), noisy, "alone", epochs=6, seed=1)
    assert student.history[-1]["val_accuracy"] >= 0.9
    assert student.history[-1]["val_accuracy"] >= alone.history[-1]["val_accuracy"] + 0.2


# -- schedules and optimizers -----------------------------------------------------------------------


# -- LR finder --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def four16(tmp_path_factory):
    """Four shapes at 16 px: hard enough that the LR sweep does not learn them outright."""
    root = make_image_set(tmp_path_factory.mktemp("four"), ("circle", "square", "triangle", "cross"), per_class=40,
                          size=16, seed=3)
    return formatted(root, tmp_path_factory.mktemp("d4"), 16)


def test_lr_finder_suggests_a_tenth_of_the_min_loss_lr_and_that_lr_trains(four16, tmp_path):
    events = []
    ctx = RunContext("lr_finder", tmp_path, device="cpu", emit=events.append)
    result = LRFinder().run(ctx, LRFinder.Params(start_lr=1e-6, end_lr=10, steps=60, batch_size=16),
                            ModelValue(spec=MLP), four16)["result"]
    curve = result.tables["curve"]
    best = int(np.argmin(curve["smoothed"]))
    assert result.values["min_loss_lr"] == curve["lr"][best]
    assert result.values["suggested_lr"] == pytest.approx(curve["lr"][best] / 10)
    assert len(curve["lr"]) < 60 and curve["smoothed"][-1] > 2 * min(curve["smoothed"])  # stopped as it blew up
    assert curve["lr"] == sorted(curve["lr"]) and curve["lr"][-1] / curve["lr"][0] > 1e3
    assert (ctx.scratch / "lr_finder.csv").read_text().startswith("lr,loss,smoothed_loss")
    assert Image.open(ctx.scratch / "lr_finder.png").size == (480, 300)
    points = [e.data for e in events if isinstance(e, Metric) and e.name == "lr_finder_loss"]
    assert len(points) == len(curve["lr"]) and all("lr" in p for p in points)
    assert any(isinstance(e, Preview) and e.name == "lr_finder_plot" for e in events)
    good = train(tmp_path, ModelValue(spec=MLP), four16, lr=result.values["suggested_lr"], epochs=4)
    assert good.history[-1]["train_loss"] < 0.5 * math.log(4) and good.history[-1]["val_accuracy"] >= 0.5
    hot = train(tmp_path, ModelValue(spec=MLP), four16, lr=result.values["min_loss_lr"] * 10, epochs=4)
    assert good.history[-1]["train_loss"] < hot.history[-1]["train_loss"]


# -- linear classifier, metrics, strategy ---------------------------------------------------------


def test_evaluate_reports_top5_accuracy_by_default():
    assert Evaluate.Params().top_k == 5


def test_recommend_covers_the_four_scenarios():
    blocks = ["stem", "layer1", "layer2", "layer3", "layer4"]
    found = {(n, s): recommend(n, s, 1000, blocks) for n in (50, 5000) for s in ("similar", "different")}
    assert {k: v["strategy"] for k, v in found.items()} == {
        (50, "similar"): "feature_extraction", (50, "different"): "finetune_top",
        (5000, "similar"): "finetune_top", (5000, "different"): "finetune_all"}
    assert len({v["why"] for v in found.values()}) == 4
    assert "layer4" in found[(50, "different")]["how"] and "layer1" in found[(5000, "different")]["how"]
    assert found[(50, "similar")]["scenario"] == "small dataset, similar domain"


# -- per-image augmentation -------------------------------------------------------------------------

FORMAT = {"height": 32, "width": 32, "channels": 3, "resize": "shorter_side", "crop": "center", "normalize": "none"}


def test_random_erasing_cuts_out_one_rectangle_of_the_training_image_only():
    image = Image.new("RGB", (32, 32), (200, 150, 100))
    torch.manual_seed(0)
    erased = make_transform(FORMAT, [{"op": "random_erasing", "p": 1.0}], train=True)(image)
    holes = (erased == 0).all(0)
    rows, cols = holes.any(1).nonzero().flatten(), holes.any(0).nonzero().flatten()
    box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert holes.sum() == box and 0.02 * 1024 <= box <= 0.34 * 1024  # one filled rectangle, 2–33 % of the area
    clean = make_transform(FORMAT, [{"op": "random_erasing", "p": 1.0}], train=False)(image)
    assert not (clean == 0).any()


@pytest.mark.parametrize("policy", ["autoaugment", "randaugment", "trivialaugment"])
def test_augmentation_policies_change_training_images_but_never_evaluation_images(policy):
    rng = random.Random(0)
    pixels = np.array([[[rng.randint(0, 255) for _ in range(3)] for _ in range(32)] for _ in range(32)], np.uint8)
    image = Image.fromarray(pixels)
    plain = make_transform(FORMAT)(image)
    torch.manual_seed(0)
    augmented = make_transform(FORMAT, [{"op": policy}], train=True)
    outputs = [augmented(image) for _ in range(8)]
    assert all(o.shape == plain.shape for o in outputs)
    assert any(not torch.equal(o, plain) for o in outputs)
    assert torch.equal(make_transform(FORMAT, [{"op": policy}], train=False)(image), plain)
