"""Each fine-tuning technique does what defines it: LR groups, frozen BN statistics, mixed images
with matching label weights, smoothed targets, distillation, SGDR restarts, AdaBound's update rule,
the LR finder's suggestion, CNN codes + a linear classifier, top-k accuracy, the strategy advice."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from nodeflow.node import RunContext
from nodes.engine import augment, metrics, optim
from nodes.engine.images import make_transform
from nodes.engine.device import seed_everything
from nodes.engine.loop import apply_freezing, network
from nodes.ports import ModelValue
from nodes.data import ImageFolderDataset, ImageFormatter
from nodes.evaluation import Evaluate
from nodes.advice import recommend
from nodes.engine.linear import fit_linear
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


def indexed_batch(n=6, size=8):
    """Image i is filled with the value i and has label i: every output pixel names its source."""
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, size, size).clone()
    return images, torch.arange(n)


# -- discriminative learning rates and BN freezing -------------------------------------------------


def test_param_groups_get_head_multiplier_layer_decay_and_fastai_style_lrs():
    model = ModelValue(spec=RESNET, frozen=("stem", "layer1"))
    net = network(model, 2)
    apply_freezing(net, model.frozen)

    def rates(groups):
        return {g["name"]: g["lr"] for g in groups}

    plain = optim.layerwise_groups(net, model, 1e-3, head_mult=10)
    assert rates(plain) == {"backbone": 1e-3, "head": pytest.approx(1e-2)}
    assert sum(p.numel() for p in plain[1]["params"]) == 512 * 2 + 2
    decayed = optim.layerwise_groups(net, model, 1e-3, head_mult=10, lr_decay=0.5)
    assert rates(decayed) == pytest.approx({"layer2": 2.5e-4, "layer3": 5e-4, "layer4": 1e-3, "head": 1e-2})
    fastai = optim.layerwise_groups(net, model, 1.0, block_lrs=[1e-5, 1e-4, 1e-2])
    assert rates(fastai) == {"layer2": 1e-5, "layer3": 1e-5, "layer4": 1e-4, "head": 1e-2}
    optimizer = optim.make_optimizer("sgd", fastai, 0.9, 0.0)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-5, 1e-5, 1e-4, 1e-2]
    frozen = {id(p) for name in ("stem", "layer1") for p in getattr(net, name).parameters()}
    assert not frozen & {id(p) for g in optimizer.param_groups for p in g["params"]}


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


def test_label_smoothing_targets_and_loss_match_the_definition():
    """The objective's soft-target loss is torch's cross-entropy with label smoothing, whose
    targets are (1 − ε)·t + ε/K."""
    eps, k = 0.1, 4
    labels = torch.tensor([0, 3, 1])
    logits = torch.randn(3, k)
    targets = augment.one_hot(labels, k) * (1 - eps) + eps / k
    assert targets[0].tolist() == pytest.approx([1 - eps + eps / k, eps / k, eps / k, eps / k])
    by_definition = -(targets * F.log_softmax(logits, 1)).sum(1).mean()
    objective = augment.Objective(k, label_smoothing=eps, batch_augment="mixup", alpha=0.4)
    soft = {"soft": augment.one_hot(labels, k)}
    assert objective(logits, soft).item() == pytest.approx(by_definition.item(), rel=1e-5)
    assert objective(logits, labels).item() == pytest.approx(
        F.cross_entropy(logits, labels, label_smoothing=eps).item(), rel=1e-5)


def test_mixup_blends_images_and_labels_by_the_same_lambda():
    images, labels = indexed_batch()
    objective = augment.Objective(6, batch_augment="mixup", alpha=0.4, seed=3)
    mixed, found = objective.prepare(images, labels)
    values = found["soft"] @ torch.arange(6.0)  # the label-weighted source index = the pixel value
    assert torch.allclose(mixed[:, 0, 0, 0], values, atol=1e-5)
    assert torch.allclose(found["soft"].sum(1), torch.ones(6))
    lam = found["soft"].max(1).values
    assert torch.allclose(lam, lam[0].expand(6))  # one λ for the batch
    for i in range(6):  # every image blends with one partner only, pixels and labels alike
        assert int((found["soft"][i] > 0).sum()) <= 2
        assert torch.allclose(mixed[i], mixed[i, 0, 0, 0].expand_as(mixed[i]))


def test_mixing_draws_from_the_trainers_generator_so_a_resumed_run_mixes_alike():
    images, labels = indexed_batch(size=10)
    for kind in ("mixup", "cutmix", "ricap"):
        first = augment.Objective(6, batch_augment=kind, alpha=0.4, generator=torch.Generator().manual_seed(7))
        first.prepare(images, labels)
        saved = first.generator.get_state()  # what an epoch checkpoint keeps
        expected = first.prepare(images, labels)
        resumed = augment.Objective(6, batch_augment=kind, alpha=0.4, generator=torch.Generator().manual_seed(0))
        resumed.generator.set_state(saved)
        torch.manual_seed(12345)  # the global stream (dropout, init) does not matter
        got = resumed.prepare(images, labels)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1]["soft"], expected[1]["soft"]), kind


def test_cutmix_label_weight_is_the_pasted_box_area():
    images, labels = indexed_batch(size=10)
    objective = augment.Objective(6, batch_augment="cutmix", alpha=1.0, seed=0)
    for _ in range(5):
        mixed, found = objective.prepare(images, labels)
        for i in range(6):
            for j in range(6):  # each source's label weight is its share of the pixels
                share = (mixed[i, 0] == j).float().mean().item()
                assert found["soft"][i, j].item() == pytest.approx(share, abs=1e-6)


def test_ricap_label_weights_sum_to_one_and_match_the_patch_areas():
    images, labels = indexed_batch(size=12)
    rng = np.random.default_rng(1)
    perms = [torch.randperm(6, generator=torch.Generator().manual_seed(s)) for s in range(4)]
    mixed, targets, weights = augment.ricap(images, augment.one_hot(labels, 6), (5, 8), perms, rng)
    assert weights == pytest.approx([5 * 8 / 144, 5 * 4 / 144, 7 * 8 / 144, 7 * 4 / 144])
    assert sum(weights) == pytest.approx(1)
    for i in range(6):
        shares = torch.stack([(mixed[i, 0] == j).float().mean() for j in range(6)])
        assert torch.allclose(targets[i], shares, atol=1e-6)  # label weight = share of pixels from that image
    objective = augment.Objective(6, batch_augment="ricap", alpha=0.3, seed=0)
    for _ in range(5):
        mixed, found = objective.prepare(images, labels)
        assert torch.allclose(found["soft"].sum(1), torch.ones(6))
        assert torch.allclose(found["soft"] @ torch.arange(6.0), mixed[:, 0].mean((1, 2)), atol=1e-5)


@pytest.mark.parametrize("kind", ["mixup", "cutmix", "ricap"])
def test_batch_augmentation_trains_and_asks_for_raw_images(data16, tmp_path, kind):
    params = Trainer.Params(batch_augment=kind)
    assert augment.uses_random_batch_augment(params.batch_augment)
    assert not augment.uses_random_batch_augment(Trainer.Params().batch_augment)
    trained = train(tmp_path, ModelValue(spec=MLP), data16, epochs=4, batch_augment=kind, mix_alpha=0.4)
    assert trained.history[-1]["val_accuracy"] >= 0.8


def test_distillation_loss_matches_its_formula():
    torch.manual_seed(0)
    student, teacher = torch.randn(5, 3), torch.randn(5, 3) * 3
    labels = torch.tensor([0, 1, 2, 1, 0])
    alpha, t = 0.3, 2.5
    p_teacher = torch.softmax(teacher / t, 1)
    kl = (p_teacher * (torch.log(p_teacher) - torch.log_softmax(student / t, 1))).sum(1).mean()
    expected = alpha * F.cross_entropy(student, labels) + (1 - alpha) * t * t * kl
    got = augment.distillation_loss(student, teacher, augment.one_hot(labels, 3), alpha, t)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


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


def test_sgdr_restarts_the_lr_after_each_cycle_and_cycles_grow():
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    schedule = optim.make_schedule("sgdr", optimizer, epochs=7, steps_per_epoch=4, step_size=1, gamma=0.1,
                                  cycle_epochs=1, cycle_mult=2)
    lrs = []
    for _ in range(28):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    restarts = [s for s in range(1, 28) if lrs[s] > lrs[s - 1]]
    assert restarts == [4, 12]  # cycles of 1, 2 and 4 epochs (4 batches each)
    assert all(lrs[s] == pytest.approx(0.1) for s in (0, 4, 12))
    assert lrs[8] == pytest.approx(0.05) and lrs[3] < 0.02  # cosine: halfway is half, the end is near 0
    for name in ("cosine", "step", "onecycle"):
        assert optim.make_schedule(name, torch.optim.SGD([weight], lr=0.1), 2, 4, 1, 0.5) is not None


def test_adabound_follows_its_update_rule():
    lr, final_lr, gamma, b1, b2, eps = 0.01, 0.1, 1e-3, 0.9, 0.999, 1e-8
    weight = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    optimizer = optim.AdaBound([weight], lr=lr, final_lr=final_lr, gamma=gamma, betas=(b1, b2), eps=eps)
    w, m, v = [1.0, -2.0, 0.5], [0.0] * 3, [0.0] * 3
    grads = [[0.3, -1e-4, 2.0], [0.1, 5e-5, -1.0], [-0.2, 1e-6, 0.5]]
    for t, grad in enumerate(grads, start=1):
        weight.grad = torch.tensor(grad, dtype=torch.float64)
        optimizer.step()
        lower, upper = final_lr * (1 - 1 / (gamma * t + 1)), final_lr * (1 + 1 / (gamma * t))
        for i, g in enumerate(grad):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            step = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) / (math.sqrt(v[i]) + eps)
            w[i] -= min(max(step, lower), upper) * m[i]
        assert weight.tolist() == pytest.approx(w, rel=1e-12)
    # the tiny gradient's Adam step (≈ lr/|g|·|g|) is far above the upper bound at first: the clip binds
    assert lr / (math.sqrt(1 - b2) * 1e-4) > final_lr * (1 + 1 / gamma)


def test_adabound_ends_up_as_sgd_with_the_final_lr():
    weight = torch.nn.Parameter(torch.tensor([1.0]))
    optimizer = optim.AdaBound([weight], lr=1.0, final_lr=0.05, gamma=0.5)
    for _ in range(2000):
        weight.grad = torch.tensor([1.0])
        optimizer.step()
    before = weight.item()
    weight.grad = torch.tensor([1.0])
    optimizer.step()
    assert before - weight.item() == pytest.approx(0.05, rel=2e-3)


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
    points = [e.data for e in events if e.kind == "metric" and e.data["name"] == "lr_finder_loss"]
    assert len(points) == len(curve["lr"]) and all("lr" in p for p in points)
    assert any(e.kind == "preview" and e.data["kind"] == "lr_finder_plot" for e in events)
    good = train(tmp_path, ModelValue(spec=MLP), four16, lr=result.values["suggested_lr"], epochs=4)
    assert good.history[-1]["train_loss"] < 0.5 * math.log(4) and good.history[-1]["val_accuracy"] >= 0.5
    hot = train(tmp_path, ModelValue(spec=MLP), four16, lr=result.values["min_loss_lr"] * 10, epochs=4)
    assert good.history[-1]["train_loss"] < hot.history[-1]["train_loss"]


# -- linear classifier, metrics, strategy ---------------------------------------------------------


@pytest.mark.parametrize("method", ["logistic_regression", "linear_svm"])
def test_linear_classifier_fits_separable_codes(method):
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 20, generator=gen) * 3
    y = torch.arange(4).repeat(50)
    x = centres[y] + torch.randn(200, 20, generator=gen) + 100  # offset: standardisation must be folded back
    weight, bias = fit_linear(x, y, 4, method, c=1.0, max_iter=100)
    assert ((x @ weight.T + bias).argmax(1) == y).float().mean() >= 0.95


def test_topk_accuracy_counts_the_true_class_among_the_k_best():
    logits = torch.tensor([[0.1, 0.5, 0.4, 0.0], [0.9, 0.05, 0.03, 0.02], [0.2, 0.3, 0.1, 0.4]])
    true = torch.tensor([2, 3, 0])
    net = torch.nn.Identity()
    with metrics.TopK(net, 2) as top:
        net(logits)
    assert top.accuracy(true) == pytest.approx(1 / 3)  # row 0: 2 is second best; rows 1, 2: missed
    with metrics.TopK(net, 3) as top:
        net(logits)
    assert top.accuracy(true) == pytest.approx(2 / 3)
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
