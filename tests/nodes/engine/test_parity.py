"""What stays hand-written in the engine agrees with a reference implementation: AdaBound with
pytorch-optimizer's, the metrics with scikit-learn's, the L-BFGS linear classifier with
scikit-learn's LogisticRegression."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nodes.engine.linear import fit_linear
from nodes.engine.metrics import scores, topk_hits
from nodes.engine.optim import AdaBound

reference_optimizers = pytest.importorskip("pytorch_optimizer")
metrics = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adabound_matches_pytorch_optimizers(weight_decay):
    torch.manual_seed(0)
    start = [torch.randn(5, 3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)]
    ours_params = [torch.nn.Parameter(t.clone()) for t in start]
    theirs_params = [torch.nn.Parameter(t.clone()) for t in start]

    def groups(params):  # two groups at different rates, as discriminative learning rates make them
        return [{"params": [params[0]], "lr": 1e-2}, {"params": [params[1]], "lr": 1e-3}]

    ours = AdaBound(groups(ours_params), final_lr=0.1, gamma=1e-3, weight_decay=weight_decay)
    theirs = reference_optimizers.AdaBound(groups(theirs_params), final_lr=0.1, gamma=1e-3,
                                           weight_decay=weight_decay, weight_decouple=False, foreach=False)
    schedules = [torch.optim.lr_scheduler.StepLR(o, step_size=10, gamma=0.5) for o in (ours, theirs)]
    for step in range(40):
        grads = [torch.randn_like(t) * 10 ** (step % 3 - 1) for t in start]
        for params, optimizer, schedule in ((ours_params, ours, schedules[0]), (theirs_params, theirs, schedules[1])):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            optimizer.step()
            schedule.step()
        for a, b in zip(ours_params, theirs_params):
            assert torch.allclose(a, b, rtol=1e-7, atol=1e-8), step


def test_scores_match_scikit_learn():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 4, 300)
    pred = np.where(rng.random(300) < 0.6, true, rng.integers(0, 4, 300))
    pred[pred == 3] = 2  # a class never predicted: its precision is 0, as with zero_division=0
    classes = ("a", "b", "c", "d")
    for beta in (0.5, 1.0, 2.0):
        found = scores(torch.as_tensor(pred), torch.as_tensor(true), classes, beta)
        precision, recall, fbeta, support = metrics.precision_recall_fscore_support(
            true, pred, beta=beta, labels=range(4), zero_division=0)
        assert found.values["precision"] == pytest.approx(precision.mean())
        assert found.values["recall"] == pytest.approx(recall.mean())
        assert found.values["f_beta"] == pytest.approx(fbeta.mean())
        assert found.values["accuracy"] == pytest.approx(metrics.accuracy_score(true, pred))
        assert found.tables["confusion_matrix"]["matrix"] == metrics.confusion_matrix(true, pred, labels=range(4)).tolist()
        rows = found.tables["per_class"]
        assert [r["f_beta"] for r in rows] == pytest.approx(fbeta.tolist())
        assert [r["support"] for r in rows] == support.tolist()


@pytest.mark.parametrize("k", [1, 2, 3])
def test_top_k_accuracy_matches_scikit_learn(k):
    torch.manual_seed(1)
    logits = torch.randn(200, 5)
    true = torch.randint(0, 5, (200,))
    ours = topk_hits(logits.topk(k, dim=1).indices, true)
    assert ours == pytest.approx(metrics.top_k_accuracy_score(true.numpy(), logits.numpy(), k=k, labels=range(5)))


def test_the_lbfgs_linear_classifier_is_as_accurate_as_scikit_learns_logistic_regression():
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x, y = make_classification(n_samples=1500, n_features=40, n_informative=12, n_classes=4, n_clusters_per_class=2,
                               class_sep=0.8, random_state=0)
    x = x * np.linspace(0.1, 20, 40) + 3  # features on different scales, as CNN codes are
    train, test = slice(0, 1000), slice(1000, None)
    weight, bias = fit_linear(torch.as_tensor(x[train], dtype=torch.float32), torch.as_tensor(y[train]), 4,
                              "logistic_regression", c=1.0, max_iter=500)
    ours = ((torch.as_tensor(x[test], dtype=torch.float32) @ weight.T + bias).argmax(1).numpy() == y[test]).mean()
    scaler = StandardScaler().fit(x[train])
    reference = LogisticRegression(C=1.0, max_iter=2000).fit(scaler.transform(x[train]), y[train])
    theirs = reference.score(scaler.transform(x[test]), y[test])
    assert 0.5 < theirs  # a task with something to learn
    assert abs(ours - theirs) <= 0.01
