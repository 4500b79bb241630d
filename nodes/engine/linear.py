"""Linear classifiers on features (CNN codes): logistic regression or a linear SVM, fitted by
full-batch L-BFGS, with scikit-learn's meaning of C."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fit_linear(x: torch.Tensor, y: torch.Tensor, num_classes: int, method: str, c: float, max_iter: int,
               standardize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """A linear classifier on features, (weight K×D, bias K), fitted by full-batch L-BFGS.

    logistic_regression minimises mean cross-entropy, linear_svm the one-vs-rest squared hinge
    (LinearSVC's default loss); both plus ‖W‖²/(2·C·n), i.e. scikit-learn's C. Standardisation is
    folded back into the weights, so the layer takes raw features.
    """
    x = x.double()
    n, d = x.shape
    mean = x.mean(0) if standardize else torch.zeros(d, dtype=x.dtype)
    std = x.std(0, unbiased=False).clamp_min(1e-6) if standardize else torch.ones(d, dtype=x.dtype)
    z = (x - mean) / std
    weight = torch.zeros(num_classes, d, dtype=x.dtype, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=x.dtype, requires_grad=True)
    signs = F.one_hot(y, num_classes).double() * 2 - 1
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=max_iter, history_size=20,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure():
        optimizer.zero_grad()
        logits = z @ weight.T + bias
        if method == "linear_svm":
            data_loss = (1 - signs * logits).clamp_min(0).pow(2).sum(1).mean()
        else:
            data_loss = F.cross_entropy(logits, y)
        loss = data_loss + weight.pow(2).sum() / (2 * c * n)
        loss.backward()
        return loss

    optimizer.step(closure)
    w = (weight.detach() / std).float()
    b = (bias.detach() - (weight.detach() / std) @ mean).float()
    return w, b
