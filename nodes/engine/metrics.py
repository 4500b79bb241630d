"""Classification metrics: top-k accuracy, and precision / recall / F-beta with the confusion matrix."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from nodes.engine.values import Metrics


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


def scores(pred: torch.Tensor, true: torch.Tensor, classes: tuple[str, ...], beta: float) -> Metrics:
    """Accuracy, macro precision / recall / F-beta, the confusion matrix and a per-class table."""
    k = len(classes)
    matrix = torch.bincount(true * k + pred, minlength=k * k).view(k, k)
    tp = matrix.diag().double()
    predicted, actual = matrix.sum(0).double(), matrix.sum(1).double()
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(actual > 0, tp / actual.clamp(min=1), torch.zeros_like(tp))
    b2 = beta * beta
    denom = b2 * precision + recall
    fbeta = torch.where(denom > 0, (1 + b2) * precision * recall / denom.clamp(min=1e-12), torch.zeros_like(tp))
    rows = [{"class": c, "precision": precision[i].item(), "recall": recall[i].item(), "f_beta": fbeta[i].item(),
             "support": int(actual[i].item())} for i, c in enumerate(classes)]
    values = {"accuracy": (tp.sum() / max(len(true), 1)).item(), "precision": precision.mean().item(),
              "recall": recall.mean().item(), "f_beta": fbeta.mean().item(), "samples": float(len(true))}
    return Metrics(values, {"confusion_matrix": {"classes": list(classes), "matrix": matrix.tolist()},
                            "per_class": rows, "beta": beta})
