"""The learning-rate range test (fastai's lr_find): exponentially rising rates, a smoothed loss
and a suggestion."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from nodes.engine.device import seed_everything
from nodes.engine.fit import plan_fit, prepare_training
from nodes.engine.hooks import Hooks
from nodes.engine.loop import forward, set_mode, stop_points
from nodes.engine.settings import LRRangeConfig
from nodes.engine.values import ImageSet, ModelValue


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


@dataclass
class LRRange:
    """The rates tried, the raw and smoothed loss at each, and the suggestion (None when fewer
    than two steps had a finite loss)."""

    lrs: list[float]
    raw: list[float]
    smooth: list[float]
    suggested: float | None = None
    min_loss_lr: float | None = None


def lr_range_test(model: ModelValue, data: ImageSet, config: LRRangeConfig, hooks: Hooks) -> LRRange:
    """Train on mini-batches of the training split while raising the LR exponentially, until the
    smoothed loss exceeds ``diverge`` times its minimum. Batches come from the trainer's data path
    (decoded once; the frozen prefix's cached features when there is one), in the trainer's order."""
    generator = seed_everything(config.seed)
    plan = plan_fit(model, data, config.fit_config(), hooks.workspace, validation=False)
    net, device = plan.net, plan.device
    for group in plan.groups:
        group["mult"] = group["lr"]
    optimizer = plan.optimizer()
    loss_fn = torch.nn.CrossEntropyLoss()
    lrs = lr_sweep(config.start_lr, config.end_lr, config.steps)
    result = LRRange([], [], [])
    best = math.inf
    with stop_points(net, hooks.should_stop):
        inputs = prepare_training(hooks, plan, model, data, generator=generator, workers=config.workers)
        iterator = iter(inputs.train)
        set_mode(net, True, model.frozen, model.bn_frozen)
        for i, lr in enumerate(lrs):
            hooks.check_stop()
            try:
                images, labels = next(iterator)
            except StopIteration:
                iterator = iter(inputs.train)
                images, labels = next(iterator)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["mult"]
            images, labels = device.batch(images), labels.to(device.torch)
            loss = loss_fn(forward(inputs.body, images, inputs.prefix).float(), labels)
            value = loss.item()
            if not math.isfinite(value):
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            result.lrs.append(lr)
            result.raw.append(value)
            result.smooth = smoothed(result.raw, config.smoothing)
            hooks.metric("lr_finder_loss", result.smooth[-1], step=i, lr=lr)
            hooks.progress(i + 1, len(lrs))
            best = min(best, result.smooth[-1])
            if i >= 3 and result.smooth[-1] > config.diverge * best:
                hooks.log(f"loss blew up at lr {lr:.3g}: stopped after {i + 1} steps")
                break
    if len(result.lrs) >= 2:
        result.suggested, result.min_loss_lr = suggest_lr(result.lrs, result.smooth)
    return result
