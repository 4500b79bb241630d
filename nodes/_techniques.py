"""Fine-tuning techniques the trainer and the technique nodes share: batch-level augmentation
(mixup, CutMix, RICAP), soft-target losses (label smoothing, distillation), discriminative
learning rates, the AdaBound optimizer, SGDR, an LR range test, top-k accuracy and a tiny plot.

Plain functions and small classes, so each one's defining behaviour can be tested on tensors.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nodes._models import summarize
from nodes._values import ModelValue

BATCH_AUGMENTS = ("none", "mixup", "cutmix", "ricap")


def uses_random_batch_augment(params: Any) -> bool:
    """Whether the trainer mixes images within a batch (mixup, CutMix, RICAP). Then a frozen
    prefix sees different inputs every epoch, so features cached from an earlier epoch are wrong:
    a feature cache must stay off (or be computed from the mixed batch)."""
    return getattr(params, "batch_augment", "none") != "none"


def needs_input_images(params: Any, teacher: Any = None) -> bool:
    """Whether training needs each batch's images, not only cached prefix features: batch
    augmentation mixes images and a distillation teacher looks at the images itself."""
    return uses_random_batch_augment(params) or teacher is not None


# -- soft targets and losses ----------------------------------------------------------------------


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return F.one_hot(labels.long(), num_classes).float()


def smooth(targets: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Label smoothing of (soft) targets: (1 − ε)·t + ε/K, as torch's CrossEntropyLoss does."""
    if not epsilon:
        return targets
    return targets * (1 - epsilon) + epsilon / targets.shape[1]


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a probability distribution per row (mixed or smoothed labels)."""
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(1).mean()


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, alpha: float,
                      temperature: float) -> torch.Tensor:
    """Hinton et al.'s loss: α·CE(student, targets) + (1 − α)·T²·KL(p_teacher,T ‖ p_student,T).

    The T² keeps the soft term's gradients on the same scale as the hard term's whatever T is.
    ``targets`` are class probabilities (so mixup and label smoothing apply to the hard term).
    """
    hard = soft_cross_entropy(student, targets)
    t = temperature
    soft = F.kl_div(F.log_softmax(student.float() / t, dim=1), F.log_softmax(teacher.float() / t, dim=1),
                    reduction="batchmean", log_target=True)
    return alpha * hard + (1 - alpha) * t * t * soft


# -- batch augmentation ---------------------------------------------------------------------------


def mixup(images: torch.Tensor, targets: torch.Tensor, lam: float, perm: torch.Tensor):
    """Blend every image with a partner (``perm``) by λ; labels blend by the same λ."""
    mixed = images * lam + images[perm] * (1 - lam)
    return mixed, targets * lam + targets[perm] * (1 - lam)


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A box covering about (1 − λ) of the image, centred anywhere and clipped to the image:
    (top, left, bottom, right)."""
    cut = math.sqrt(1.0 - lam)
    h, w = int(round(height * cut)), int(round(width * cut))
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    top, bottom = max(cy - h // 2, 0), min(cy + (h - h // 2), height)
    left, right = max(cx - w // 2, 0), min(cx + (w - w // 2), width)
    return top, left, bottom, right


def cutmix(images: torch.Tensor, targets: torch.Tensor, box: tuple[int, int, int, int], perm: torch.Tensor):
    """Paste the partner's pixels inside ``box``; the partner's label weight is the box's share
    of the image area (after clipping), the image's own label keeps the rest."""
    top, left, bottom, right = box
    mixed = images.clone()
    mixed[:, :, top:bottom, left:right] = images[perm][:, :, top:bottom, left:right]
    area = (bottom - top) * (right - left) / (images.shape[2] * images.shape[3])
    return mixed, targets * (1 - area) + targets[perm] * area, area


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
    each batch (mixes images and labels, asks the teacher) and scores the logits against that."""

    def __init__(self, num_classes: int, label_smoothing: float = 0.0, batch_augment: str = "none",
                 alpha: float = 1.0, seed: int = 0, teacher: nn.Module | None = None, distill_alpha: float = 0.5,
                 temperature: float = 4.0, autocast: Callable[[], Any] = contextlib.nullcontext) -> None:
        if batch_augment not in BATCH_AUGMENTS:
            raise ValueError(f"unknown batch augmentation '{batch_augment}'")
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.batch_augment = batch_augment
        self.alpha = alpha
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.teacher = teacher.eval() if teacher is not None else None
        self.distill_alpha = distill_alpha
        self.temperature = temperature
        self.autocast = autocast

    def _perm(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.randperm(n, generator=self.generator).to(device)

    def prepare(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Images to train on and what the loss compares with: class probabilities ("soft") and,
        with a teacher, its logits on exactly these (possibly mixed) images."""
        targets = one_hot(labels, self.num_classes)
        n = images.shape[0]
        if self.batch_augment == "mixup":
            images, targets = mixup(images, targets, float(self.rng.beta(self.alpha, self.alpha)),
                                    self._perm(n, images.device))
        elif self.batch_augment == "cutmix":
            lam = float(self.rng.beta(self.alpha, self.alpha))
            box = cutmix_box(images.shape[2], images.shape[3], lam, self.rng)
            images, targets, _ = cutmix(images, targets, box, self._perm(n, images.device))
        elif self.batch_augment == "ricap":
            height, width = images.shape[2], images.shape[3]
            cross = (int(round(height * self.rng.beta(self.alpha, self.alpha))),
                     int(round(width * self.rng.beta(self.alpha, self.alpha))))
            perms = [self._perm(n, images.device) for _ in range(4)]
            images, targets, _ = ricap(images, targets, cross, perms, self.rng)
        found = {"soft": smooth(targets, self.label_smoothing)}
        if self.teacher is not None:
            with torch.no_grad(), self.autocast():
                found["teacher"] = self.teacher(images).float()
        return images, found

    def __call__(self, logits: torch.Tensor, targets: dict[str, torch.Tensor] | torch.Tensor) -> torch.Tensor:
        if not isinstance(targets, dict):  # plain labels (e.g. when scoring a validation split)
            targets = {"soft": smooth(one_hot(targets, self.num_classes), self.label_smoothing)}
        if "teacher" in targets:
            return distillation_loss(logits, targets["teacher"], targets["soft"], self.distill_alpha,
                                     self.temperature)
        return soft_cross_entropy(logits, targets["soft"])


# -- discriminative learning rates ----------------------------------------------------------------


def layerwise_groups(net: nn.Sequential, model: ModelValue, lr: float, head_mult: float = 1.0,
                     lr_decay: float = 1.0, block_lrs: Sequence[float] = ()) -> list[dict[str, Any]]:
    """Optimizer param groups with a learning rate per backbone block and one for the head.

    - default: every backbone block at ``lr``, the head (layers after the backbone) at ``lr·head_mult``
      (10× on a new fc layer is the ResNet-18 hot-dog recipe);
    - ``lr_decay`` < 1: the last trainable backbone block at ``lr``, each earlier one ``lr_decay``
      times the next (early blocks hold generic features that should move least);
    - ``block_lrs`` = [lr₁, …, lrₙ] (fastai's lr=[1e-5, 1e-4, 1e-2]): the last value is the head's,
      the others go, in order, to n − 1 consecutive chunks of the trainable backbone blocks.
    Frozen blocks are left out; so is any group that would hold no trainable parameter.
    """
    backbone = {b["name"] for b in summarize(model.spec)["blocks"] if b["kind"] == "backbone"}
    blocks: list[tuple[str, list[nn.Parameter]]] = []
    head: list[nn.Parameter] = []
    for name, block in net.named_children():
        trainable = [p for p in block.parameters() if p.requires_grad]
        if name in backbone:
            if trainable:
                blocks.append((name, trainable))
        else:
            head.extend(trainable)
    if block_lrs:
        head_lr = float(block_lrs[-1])
        body = list(block_lrs[:-1]) or [head_lr]
        chunks = np.array_split(np.arange(len(blocks)), len(body)) if blocks else []
        rates = [0.0] * len(blocks)
        for chunk, rate in zip(chunks, body):
            for i in chunk:
                rates[int(i)] = float(rate)
    else:
        head_lr = lr * head_mult
        rates = [lr * lr_decay ** (len(blocks) - 1 - i) for i in range(len(blocks))]
    groups: list[dict[str, Any]] = []
    if not block_lrs and lr_decay == 1.0:
        params = [p for _, ps in blocks for p in ps]
        if params:
            groups.append({"params": params, "lr": lr, "name": "backbone"})
    else:
        groups += [{"params": ps, "lr": rate, "name": name} for (name, ps), rate in zip(blocks, rates)]
    if head:
        groups.append({"params": head, "lr": head_lr, "name": "head"})
    return groups


# -- optimizer and schedules ----------------------------------------------------------------------


class AdaBound(torch.optim.Optimizer):
    """AdaBound (Luo et al., ICLR 2019): Adam whose per-element step size is clipped into
    [η_l(t), η_u(t)], bounds that tighten towards ``final_lr``, so training starts adaptive like
    Adam and ends like SGD:

        η_l(t) = final_lr·(1 − 1/(γt + 1)),  η_u(t) = final_lr·(1 + 1/(γt))
        step   = clip(lr·√(1−β₂ᵗ)/(1−β₁ᵗ) / (√v + ε), η_l, η_u) · m

    ``final_lr`` is scaled with each group's current LR over its initial one, so LR schedules and
    per-group LRs move the bounds too. Weight decay is L2 added to the gradient, as in Adam.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 final_lr: float = 0.1, gamma: float = 1e-3, eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        if lr <= 0 or final_lr <= 0 or not 0 < gamma < 1:
            raise ValueError("AdaBound needs lr > 0, final_lr > 0 and 0 < gamma < 1")
        defaults = dict(lr=lr, betas=betas, final_lr=final_lr, gamma=gamma, eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)
        for group in self.param_groups:
            group.setdefault("initial_lr", group["lr"])

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            base = group.get("initial_lr", group["lr"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if group["weight_decay"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float64)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = float(state["step"])
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                step_size = group["lr"] * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
                final = group["final_lr"] * group["lr"] / base
                lower = final * (1 - 1 / (group["gamma"] * t + 1))
                upper = final * (1 + 1 / (group["gamma"] * t))
                rate = (step_size / (v.sqrt() + group["eps"])).clamp_(lower, upper)
                p.sub_(rate * m)
        return loss


def sgdr_factor(step: int, steps_per_epoch: int, cycle_epochs: float, mult: float, floor: float = 0.0) -> float:
    """SGDR (Loshchilov & Hutter): cosine annealing from 1 to ``floor`` over a cycle, then a
    restart at 1; each cycle ``mult`` times longer than the last. ``step`` counts batches."""
    position = step / max(1, steps_per_epoch)
    length = float(cycle_epochs)
    while position >= length - 1e-12:
        position -= length
        length *= mult
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * position / length))


def make_optimizer(name: str, groups: list[dict[str, Any]], momentum: float, weight_decay: float,
                   final_lr: float = 0.1):
    """The trainer's optimizers, by the name its ``optimizer`` param takes."""
    if name == "sgd":
        return torch.optim.SGD(groups, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0)
    if name == "adam":
        return torch.optim.Adam(groups, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, weight_decay=weight_decay)
    if name == "adabound":
        return AdaBound(groups, final_lr=final_lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer '{name}'")


def make_schedule(name: str, optimizer, epochs: int, steps_per_epoch: int, step_size: int, gamma: float,
                  cycle_epochs: int = 1, cycle_mult: int = 2):
    """A per-batch LR schedule (None for a constant LR)."""
    total = max(1, epochs * steps_per_epoch)
    if name == "none":
        return None
    if name == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    if name == "step":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: gamma ** ((s // steps_per_epoch) // step_size))
    if name == "onecycle":
        peaks = [g["lr"] for g in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peaks, total_steps=total)
    if name == "sgdr":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: sgdr_factor(s, steps_per_epoch, cycle_epochs, cycle_mult))
    raise ValueError(f"unknown schedule '{name}'")


# -- LR range test ----------------------------------------------------------------------------------


def lr_sweep(start: float, end: float, steps: int) -> list[float]:
    """Learning rates rising exponentially from ``start`` to ``end`` in ``steps`` steps."""
    if steps < 2:
        return [start]
    return [start * (end / start) ** (i / (steps - 1)) for i in range(steps)]


def smoothed(losses: Sequence[float], beta: float) -> list[float]:
    """Bias-corrected exponential moving average: the raw per-batch loss is too noisy to pick a minimum."""
    out, avg = [], 0.0
    for i, loss in enumerate(losses, start=1):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** i) if beta else loss)
    return out


def suggest_lr(lrs: Sequence[float], losses: Sequence[float]) -> tuple[float, float]:
    """(suggestion, LR of the minimum loss). The suggestion is one order of magnitude below the
    minimum's LR: at the minimum the loss is already about to blow up."""
    best = int(np.argmin(np.asarray(losses)))
    return lrs[best] / 10, lrs[best]


# -- metrics ----------------------------------------------------------------------------------------


class TopK:
    """Counts top-k hits of a network's outputs through a forward hook, so an existing evaluation
    loop yields top-k accuracy without a second pass. Use as a context manager around the loop."""

    def __init__(self, net: nn.Module, k: int) -> None:
        self.net, self.k = net, k
        self.top: list[torch.Tensor] = []
        self._handle = None

    def __enter__(self) -> TopK:
        self._handle = self.net.register_forward_hook(self._record)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._handle is not None:
            self._handle.remove()

    def _record(self, module, args, output) -> None:
        k = min(self.k, output.shape[1])
        self.top.append(output.detach().float().topk(k, dim=1).indices.cpu())

    def accuracy(self, true: torch.Tensor) -> float:
        if not self.top:
            return math.nan
        return topk_hits(torch.cat(self.top), true)


def topk_hits(top: torch.Tensor, true: torch.Tensor) -> float:
    """Share of rows whose true label is among their top-k predicted classes."""
    return (top == true.view(-1, 1)).any(1).float().mean().item()


# -- pictures ---------------------------------------------------------------------------------------

PALETTE = ((33, 150, 243), (244, 67, 54), (76, 175, 80), (255, 152, 0), (156, 39, 176), (0, 150, 136))


def line_plot_png(series: dict[str, Sequence[tuple[float, float]]], title: str = "", log_x: bool = False,
                  marker_x: float | None = None, size: tuple[int, int] = (480, 300)) -> bytes:
    """A small line chart as PNG bytes, drawn with PIL (no plotting library needed): one line
    per series, axes with min/max labels, an optional vertical marker (e.g. a suggested LR)."""
    from PIL import Image, ImageDraw

    width, height = size
    left, right, top, bottom = 56, 12, 24, 30
    image = Image.new("RGB", size, "white")
    pen = ImageDraw.Draw(image)
    fx = (lambda x: math.log10(x)) if log_x else (lambda x: x)
    points = [(fx(x), y) for pts in series.values() for x, y in pts if math.isfinite(y) and (x > 0 or not log_x)]
    if not points:
        return _png(image)
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def at(x: float, y: float) -> tuple[float, float]:
        return (left + (fx(x) - x0) / (x1 - x0) * (width - left - right),
                height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom))

    pen.rectangle((left, top, width - right, height - bottom), outline=(160, 160, 160))
    pen.text((4, 4), title, fill="black")
    pen.text((4, top), f"{y1:.3g}", fill="black")
    pen.text((4, height - bottom - 10), f"{y0:.3g}", fill="black")
    label = (lambda v: f"1e{v:.1f}") if log_x else (lambda v: f"{v:.3g}")
    pen.text((left, height - bottom + 4), label(x0), fill="black")
    pen.text((width - right - 50, height - bottom + 4), label(x1), fill="black")
    if marker_x is not None and marker_x > 0:
        mx = at(marker_x, y0)[0]
        pen.line((mx, top, mx, height - bottom), fill=(120, 120, 120), width=1)
    for i, (name, pts) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        line = [at(x, y) for x, y in pts if math.isfinite(y) and (x > 0 or not log_x)]
        if len(line) > 1:
            pen.line(line, fill=colour, width=2)
        pen.text((width - right - 150, top + 4 + 12 * i), name, fill=colour)
    return _png(image)


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
