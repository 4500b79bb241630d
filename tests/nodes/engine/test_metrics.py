"""Top-k accuracy and the L-BFGS linear classifier on features."""

from __future__ import annotations

import pytest
import torch

from nodes.engine import metrics
from nodes.engine.linear import fit_linear


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
