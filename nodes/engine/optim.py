"""Optimizers and learning-rate schedules: discriminative (layer-wise) learning rates, AdaBound,
and the schedules the trainer offers."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from nodes.engine.models import summarize
from nodes.engine.values import ModelValue


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
    """A per-batch LR schedule from ``torch.optim.lr_scheduler`` (None for a constant LR); its
    ``state_dict`` goes into the epoch checkpoints.

    - cosine: cosine annealing to 0 over the whole run;
    - step: times ``gamma`` every ``step_size`` epochs;
    - onecycle: Smith's one-cycle policy peaking at each group's LR;
    - sgdr (Loshchilov & Hutter): cosine annealing with warm restarts, the first cycle
      ``cycle_epochs`` long and each next one ``cycle_mult`` times longer.
    """
    from torch.optim import lr_scheduler

    total = max(1, epochs * steps_per_epoch)
    steps_per_epoch = max(1, steps_per_epoch)
    if name == "none":
        return None
    if name == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if name == "step":
        return lr_scheduler.StepLR(optimizer, step_size=step_size * steps_per_epoch, gamma=gamma)
    if name == "onecycle":
        peaks = [g["lr"] for g in optimizer.param_groups]
        return lr_scheduler.OneCycleLR(optimizer, max_lr=peaks, total_steps=total)
    if name == "sgdr":
        return lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=cycle_epochs * steps_per_epoch,
                                                        T_mult=cycle_mult)
    raise ValueError(f"unknown schedule '{name}'")
