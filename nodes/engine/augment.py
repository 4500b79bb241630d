"""Batch augmentation (mixup and CutMix from torchvision, RICAP of our own) and soft-target losses
(label smoothing and probability targets through ``F.cross_entropy``, knowledge distillation): what
the trainer's objective does to a batch and its loss."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

BATCH_AUGMENTS = ("none", "mixup", "cutmix", "ricap")


def uses_random_batch_augment(batch_augment: str) -> bool:
    """Whether the trainer mixes images within a batch (mixup, CutMix, RICAP). Then a frozen
    prefix sees different inputs every epoch, so features cached from an earlier epoch are wrong:
    a feature cache must stay off (or be computed from the mixed batch)."""
    return batch_augment != "none"


# -- soft targets and losses -----------------------------------------------------------------------


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return F.one_hot(labels.long(), num_classes).float()


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, alpha: float,
                      temperature: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """Hinton et al.'s loss: α·CE(student, targets) + (1 − α)·T²·KL(p_teacher,T ‖ p_student,T).

    The T² keeps the soft term's gradients on the same scale as the hard term's whatever T is.
    ``targets`` are class probabilities (so mixup and label smoothing apply to the hard term).
    """
    hard = F.cross_entropy(student.float(), targets, label_smoothing=label_smoothing)
    t = temperature
    soft = F.kl_div(F.log_softmax(student.float() / t, dim=1), F.log_softmax(teacher.float() / t, dim=1),
                    reduction="batchmean", log_target=True)
    return alpha * hard + (1 - alpha) * t * t * soft


# -- batch augmentation ---------------------------------------------------------------------------


@contextlib.contextmanager
def drawing_from(generator: torch.Generator) -> Iterator[None]:
    """Let code that draws from torch's global CPU generator (torchvision's MixUp and CutMix) draw
    from ``generator`` instead, and advance it; the global stream is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(generator.get_state())
        yield
        generator.set_state(torch.get_rng_state())


def ricap(images: torch.Tensor, targets: torch.Tensor, cross: tuple[int, int], perms: Sequence[torch.Tensor],
          rng: np.random.Generator):
    """RICAP (Takahashi et al.): split the canvas at ``cross`` = (row, column) into four patches,
    fill each with a random crop of a different shuffled image, and weight each source's label by
    its patch's share of the area (the four weights sum to 1). Returns images, targets, weights."""
    n, _, height, width = images.shape
    y, x = cross
    sizes = [(y, x), (y, width - x), (height - y, x), (height - y, width - x)]
    corners = [(0, 0), (0, x), (y, 0), (y, x)]
    out = torch.empty_like(images)
    mixed = torch.zeros_like(targets)
    weights = []
    for (h, w), (top, left), perm in zip(sizes, corners, perms):
        weight = h * w / (height * width)
        weights.append(weight)
        if h == 0 or w == 0:
            continue
        sy, sx = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        out[:, :, top:top + h, left:left + w] = images[perm][:, :, sy:sy + h, sx:sx + w]
        mixed += weight * targets[perm]
    return out, mixed, weights


class Objective:
    """The trainer's loss when a technique needs more than hard-label cross-entropy: it prepares
    each batch (mixes images and labels, asks the teacher) and scores the logits against that.

    Every random draw comes from ``generator`` (the trainer's seeded data-order generator, which
    epoch checkpoints keep), so a resumed run mixes exactly as an uninterrupted one."""

    def __init__(self, num_classes: int, label_smoothing: float = 0.0, batch_augment: str = "none",
                 alpha: float = 1.0, seed: int = 0, teacher: nn.Module | None = None, distill_alpha: float = 0.5,
                 temperature: float = 4.0, autocast: Callable[[], Any] = contextlib.nullcontext,
                 generator: torch.Generator | None = None) -> None:
        from torchvision.transforms import v2

        if batch_augment not in BATCH_AUGMENTS:
            raise ValueError(f"unknown batch augmentation '{batch_augment}'")
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.batch_augment = batch_augment
        self.alpha = alpha
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)
        self.mix = {"mixup": v2.MixUp(alpha=alpha, num_classes=num_classes),
                    "cutmix": v2.CutMix(alpha=alpha, num_classes=num_classes)}.get(batch_augment)
        self.teacher = teacher.eval() if teacher is not None else None
        self.distill_alpha = distill_alpha
        self.temperature = temperature
        self.autocast = autocast

    def prepare(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Images to train on and what the loss compares with: class probabilities ("soft") and,
        with a teacher, its logits on exactly these (possibly mixed) images."""
        if self.mix is not None:
            with drawing_from(self.generator):
                images, targets = self.mix(images, labels.long())
        elif self.batch_augment == "ricap":
            n, height, width = images.shape[0], images.shape[2], images.shape[3]
            seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
            rng = np.random.default_rng(seed)
            cross = (int(round(height * rng.beta(self.alpha, self.alpha))),
                     int(round(width * rng.beta(self.alpha, self.alpha))))
            perms = [torch.randperm(n, generator=self.generator).to(images.device) for _ in range(4)]
            images, targets, _ = ricap(images, one_hot(labels, self.num_classes), cross, perms, rng)
        else:
            targets = one_hot(labels, self.num_classes)
        found = {"soft": targets}
        if self.teacher is not None:
            with torch.no_grad(), self.autocast():
                found["teacher"] = self.teacher(images).float()
        return images, found

    def __call__(self, logits: torch.Tensor, targets: dict[str, torch.Tensor] | torch.Tensor) -> torch.Tensor:
        if not isinstance(targets, dict):  # plain labels (e.g. when scoring a validation split)
            return F.cross_entropy(logits.float(), targets, label_smoothing=self.label_smoothing)
        if "teacher" in targets:
            return distillation_loss(logits, targets["teacher"], targets["soft"], self.distill_alpha,
                                     self.temperature, self.label_smoothing)
        return F.cross_entropy(logits.float(), targets["soft"], label_smoothing=self.label_smoothing)
