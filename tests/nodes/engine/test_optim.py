"""Optimizers and schedules do what defines them: LR groups per block, SGDR restarts, AdaBound's
update rule and its SGD end."""

from __future__ import annotations

import math

import pytest
import torch

from nodes.engine import optim
from nodes.engine.loop import apply_freezing, network
from nodes.engine.values import ModelValue

RESNET = {"input_shape": [3, 32, 32], "layers": [
    {"kind": "backbone", "name": "backbone", "arch": "resnet18", "weights": "none"},
    {"kind": "global_pool", "name": "pool", "mode": "avg"},
    {"kind": "dense", "name": "fc", "units": "auto", "activation": "none", "dropout": 0.0}]}


def test_param_groups_get_head_multiplier_layer_decay_and_fastai_style_lrs():
    model = ModelValue(spec=RESNET, frozen=("stem", "layer1"))
    net = network(model, 2)
    apply_freezing(net, model.frozen)

    def rates(groups):
        return {g["name"]: g["lr"] for g in groups}

    plain = optim.layerwise_groups(net, model, 1e-3, head_mult=10)
    assert rates(plain) == {"backbone": 1e-3, "head": pytest.approx(1e-2)}
    assert sum(p.numel() for p in plain[1]["params"]) == 512 * 2 + 2
    decayed = optim.layerwise_groups(net, model, 1e-3, head_mult=10, lr_decay=0.5)
    assert rates(decayed) == pytest.approx({"layer2": 2.5e-4, "layer3": 5e-4, "layer4": 1e-3, "head": 1e-2})
    fastai = optim.layerwise_groups(net, model, 1.0, block_lrs=[1e-5, 1e-4, 1e-2])
    assert rates(fastai) == {"layer2": 1e-5, "layer3": 1e-5, "layer4": 1e-4, "head": 1e-2}
    optimizer = optim.make_optimizer("sgd", fastai, 0.9, 0.0)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-5, 1e-5, 1e-4, 1e-2]
    frozen = {id(p) for name in ("stem", "layer1") for p in getattr(net, name).parameters()}
    assert not frozen & {id(p) for g in optimizer.param_groups for p in g["params"]}


def test_sgdr_restarts_the_lr_after_each_cycle_and_cycles_grow():
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    schedule = optim.make_schedule("sgdr", optimizer, epochs=7, steps_per_epoch=4, step_size=1, gamma=0.1,
                                  cycle_epochs=1, cycle_mult=2)
    lrs = []
    for _ in range(28):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    restarts = [s for s in range(1, 28) if lrs[s] > lrs[s - 1]]
    assert restarts == [4, 12]  # cycles of 1, 2 and 4 epochs (4 batches each)
    assert all(lrs[s] == pytest.approx(0.1) for s in (0, 4, 12))
    assert lrs[8] == pytest.approx(0.05) and lrs[3] < 0.02  # cosine: halfway is half, the end is near 0
    for name in ("cosine", "step", "onecycle"):
        assert optim.make_schedule(name, torch.optim.SGD([weight], lr=0.1), 2, 4, 1, 0.5) is not None


def test_adabound_follows_its_update_rule():
    lr, final_lr, gamma, b1, b2, eps = 0.01, 0.1, 1e-3, 0.9, 0.999, 1e-8
    weight = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    optimizer = optim.AdaBound([weight], lr=lr, final_lr=final_lr, gamma=gamma, betas=(b1, b2), eps=eps)
    w, m, v = [1.0, -2.0, 0.5], [0.0] * 3, [0.0] * 3
    grads = [[0.3, -1e-4, 2.0], [0.1, 5e-5, -1.0], [-0.2, 1e-6, 0.5]]
    for t, grad in enumerate(grads, start=1):
        weight.grad = torch.tensor(grad, dtype=torch.float64)
        optimizer.step()
        lower, upper = final_lr * (1 - 1 / (gamma * t + 1)), final_lr * (1 + 1 / (gamma * t))
        for i, g in enumerate(grad):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            step = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) / (math.sqrt(v[i]) + eps)
            w[i] -= min(max(step, lower), upper) * m[i]
        assert weight.tolist() == pytest.approx(w, rel=1e-12)
    # the tiny gradient's Adam step (≈ lr/|g|·|g|) is far above the upper bound at first: the clip binds
    assert lr / (math.sqrt(1 - b2) * 1e-4) > final_lr * (1 + 1 / gamma)


def test_adabound_ends_up_as_sgd_with_the_final_lr():
    weight = torch.nn.Parameter(torch.tensor([1.0]))
    optimizer = optim.AdaBound([weight], lr=1.0, final_lr=0.05, gamma=0.5)
    for _ in range(2000):
        weight.grad = torch.tensor([1.0])
        optimizer.step()
    before = weight.item()
    weight.grad = torch.tensor([1.0])
    optimizer.step()
    assert before - weight.item() == pytest.approx(0.05, rel=2e-3)
