"""Batch augmentation and soft targets do what defines them: mixed images with matching label
weights (torchvision's mixup and CutMix, our RICAP), smoothed targets, the distillation loss, and
every draw from the trainer's generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nodes.engine import augment


def indexed_batch(n=6, size=8):
    """Image i is filled with the value i and has label i: every output pixel names its source."""
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, size, size).clone()
    return images, torch.arange(n)


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
