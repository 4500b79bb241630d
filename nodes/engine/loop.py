"""The training loop pieces: build a network from a model value, freezing and train/eval mode,
one epoch (``train_one_epoch``), a scored pass over a split (``evaluate``), and stop points.

Plain functions in the manner of torchvision's reference script, so ``fit``, the LR finder and
evaluation share them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from nodes.engine import standalone
from nodes.engine.device import Device
from nodes.engine.hooks import Stopped
from nodes.engine.models import build, resolve_spec
from nodes.engine.values import ModelValue


def network(model: ModelValue, num_classes: int) -> nn.Sequential:
    """A fresh module for ``model``: its trained weights when it has them (new layers added after
    training keep their fresh init), else the backbone's weights file or random init."""
    spec = resolve_spec(model.spec, num_classes)
    net = build(spec, load_weights=model.state is None)
    if model.state is not None:
        missing, unexpected = net.load_state_dict(model.state, strict=False)
        if unexpected:
            raise ValueError(f"the model's weights do not fit its layers (unexpected: {unexpected[:5]})")
        known = {key.split(".", 1)[0] for key in model.state}
        stale = [key for key in missing if key.split(".", 1)[0] in known]
        if stale:
            raise ValueError(f"the model's weights lack tensors of trained layers: {stale[:5]}")
    return net


cpu_state = standalone.cpu_state  # the exported script's own: one weights copy for both


apply_freezing = standalone.freeze  # the exported script's own: one freezing for both


def frozen_prefix(net: nn.Sequential, frozen: tuple[str, ...]) -> int:
    """How many leading blocks are frozen: their forward pass needs no graph for backprop."""
    count = 0
    for name, _ in net.named_children():
        if name not in frozen:
            break
        count += 1
    return count


def set_mode(net: nn.Sequential, train: bool, frozen: tuple[str, ...], bn_frozen: bool) -> None:
    """Training mode, except frozen blocks (and, if asked, every batch-norm) which stay in eval mode,
    so their batch-norm statistics and dropout behave as at inference (the exported script's
    ``train_mode``)."""
    if train:
        standalone.train_mode(net, frozen, bn_frozen)
    else:
        net.train(False)


def forward(net: nn.Sequential, images: torch.Tensor, prefix: int) -> torch.Tensor:
    blocks = list(net.children())
    if prefix:
        with torch.no_grad():
            for block in blocks[:prefix]:
                images = block(images)
    for block in blocks[prefix:]:
        images = block(images)
    return images


@contextlib.contextmanager
def stop_points(net: nn.Module, should_stop: Callable[[], bool]) -> Iterator[None]:
    """Poll ``should_stop`` before every layer's forward (every module without children), so a
    stop takes effect within one layer of a long forward pass (training, evaluation, feature-cache
    building alike), not only at the next batch. A poll is one Python call per layer: nothing next
    to a convolution."""

    def check(module: nn.Module, args: Any) -> None:
        if should_stop():
            raise Stopped("stopped on request")

    layers = [module for module in net.modules() if next(module.children(), None) is None]
    handles = [layer.register_forward_pre_hook(check) for layer in layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class NonFiniteLoss(ArithmeticError):
    """The loss became NaN or infinite; training cannot recover from there."""

    def __init__(self, value: float, batch: int) -> None:
        super().__init__(f"the training loss became {value} at batch {batch}")
        self.value = value
        self.batch = batch
        self.epoch: int | None = None  # set by fit, with the learning rate then
        self.lr: float | None = None


def train_one_epoch(net: nn.Sequential, loader, optimizer, loss_fn, device: Device, prefix: int, scaler,
                    schedule, on_batch: Callable[[float], None], grad_clip: float = 0.0,
                    prepare: Callable | None = None,
                    should_stop: Callable[[], bool] = lambda: False) -> tuple[float, float]:
    """One pass over the training data; returns mean loss and accuracy. Raises NonFiniteLoss as
    soon as a batch's loss is NaN or infinite, before the optimizer applies it. ``prepare(images,
    labels) -> (images, targets)`` lets batch augmentation / distillation (``nodes.engine.augment``)
    change a batch and what ``loss_fn`` compares with; accuracy is still against the labels.
    ``should_stop`` is polled before each batch and between its forward and backward pass."""
    total_loss, correct, seen = 0.0, 0, 0
    for batch, (images, labels) in enumerate(loader, start=1):
        if should_stop():
            raise Stopped("stopped on request")
        images, labels = device.batch(images), labels.to(device.torch)
        images, targets = prepare(images, labels) if prepare is not None else (images, labels)
        with device.autocast():
            logits = forward(net, images, prefix)
            loss = loss_fn(logits.float(), targets)
        if not torch.isfinite(loss):
            raise NonFiniteLoss(loss.item(), batch)
        if should_stop():
            raise Stopped("stopped on request")
        standalone.optimizer_step(loss, optimizer, schedule, scaler, grad_clip)  # the exported script's step
        total_loss += loss.item() * len(labels)
        correct += (logits.argmax(1) == labels).sum().item()
        seen += len(labels)
        on_batch(loss.item())
    return total_loss / max(seen, 1), correct / max(seen, 1)


@torch.inference_mode()
def evaluate(net: nn.Sequential, loader, loss_fn, device: Device, should_stop: Callable[[], bool] = lambda: False
             ) -> tuple[float, float, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean loss, accuracy, and the predicted and true labels of a whole split, with the
    probability of each predicted class (its confidence)."""
    net.eval()
    total_loss, preds, truth, confidences = 0.0, [], [], []
    for images, labels in loader:
        if should_stop():
            raise Stopped("stopped on request")
        images, labels = device.batch(images), labels.to(device.torch)
        with device.autocast():
            logits = net(images)
        total_loss += loss_fn(logits.float(), labels).item() * len(labels)
        confidence, pred = logits.float().softmax(1).max(1)
        preds.append(pred.cpu())
        confidences.append(confidence.cpu())
        truth.append(labels.cpu())
    if not preds:
        empty = torch.empty(0, dtype=torch.long)
        return math.nan, math.nan, empty, empty, torch.empty(0)
    pred, true = torch.cat(preds), torch.cat(truth)
    return total_loss / len(true), (pred == true).float().mean().item(), pred, true, torch.cat(confidences)
