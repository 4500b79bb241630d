"""Forward passes over a split without training: CNN codes, predictions. Both go through the
trainer's data path (decode once, then the frozen prefix's cached features when there is a frozen
prefix), so a second pass over the same images with the same frozen blocks neither decodes nor
runs those blocks again."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from nodes.engine.device import Device, resolve_device
from nodes.engine.feature_cache import prepare_evaluation
from nodes.engine.hooks import Hooks
from nodes.engine.loop import cpu_state, network, resolve_spec, stop_points
from nodes.engine.models import summarize
from nodes.engine.values import Codes, ImageSet, ModelValue


def outputs(net: torch.nn.Sequential, model: ModelValue, data: ImageSet, split: str, device: Device, hooks: Hooks,
            batch_size: int, workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(outputs, labels) of ``net`` over a split, batch by batch, in inference mode; stops within a
    block when ``hooks.should_stop`` turns true."""
    net.eval()
    with stop_points(net, hooks.should_stop):
        module, batches = prepare_evaluation(hooks, net, model, data, split, device, batch_size, workers=workers)
        with torch.inference_mode():
            for images, labels in batches:
                hooks.check_stop()
                with device.autocast():
                    out = module(device.batch(images))
                yield out.float(), labels


def extractor_spec(spec: dict[str, Any], pool: str) -> dict[str, Any]:
    """The spec with feature maps reduced to one vector per image (global pool or flatten)."""
    out = summarize(spec)["output_shape"]
    if len(out) == 1:
        return spec
    layer = ({"kind": "flatten", "name": "codes_flatten"} if pool == "flatten"
             else {"kind": "global_pool", "name": "codes_pool", "mode": pool})
    return {**spec, "layers": [*spec["layers"], layer]}


def extract_codes(model: ModelValue, data: ImageSet, pool: str, batch_size: int, hooks: Hooks,
                  device_name: str = "auto", workers: int = 0) -> Codes:
    """The features of every image of each split, and the extractor (with its weights, every
    block frozen) that a classifier on them can be stacked on."""
    device = resolve_device(device_name)
    spec = extractor_spec(resolve_spec(model.spec, len(data.classes)), pool)
    extractor = model.with_(spec=spec)
    net = device.prepare(network(extractor, len(data.classes))).eval()
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    total = sum(len(data.split(s)) for s in data.splits)
    done = 0
    for split in data.splits:
        if not data.split(split):
            continue
        xs, ys = [], []
        for out, labels in outputs(net, extractor, data, split, device, hooks, batch_size, workers):
            xs.append(out.flatten(1).cpu())
            ys.append(labels.cpu())
            done += len(labels)
            hooks.progress(done, total)
        splits[split] = (torch.cat(xs), torch.cat(ys).long())
    names = [b["name"] for b in summarize(spec)["blocks"]]
    frozen_extractor = extractor.with_(state=cpu_state(net), frozen=tuple(names), classes=data.classes,
                                       format=data.format, history=())
    return Codes(frozen_extractor, data.classes, splits)


def predict(model: ModelValue, paths: list[str], batch_size: int, hooks: Hooks, device_name: str = "auto",
            workers: int = 0) -> torch.Tensor:
    """Class probabilities (rows in ``paths`` order) of a trained model for image files."""
    device = resolve_device(device_name)
    net = device.prepare(network(model, len(model.classes))).eval()
    data = ImageSet(classes=model.classes, splits={"predict": tuple((p, 0) for p in paths)}, format=model.format)
    probs = []
    for out, _ in outputs(net, model, data, "predict", device, hooks, batch_size, workers):
        probs.append(out.softmax(1).cpu())
        hooks.progress(sum(len(p) for p in probs), len(paths))
    return torch.cat(probs) if probs else torch.empty(0, len(model.classes))


@dataclass(frozen=True)
class Outcome:
    """A trained model on every image of a split, in the split's file order: each file's true class,
    predicted class and the probability of the predicted class; the mean loss; the top-k accuracy
    when it was asked for."""

    files: tuple[str, ...]
    true: torch.Tensor
    predicted: torch.Tensor
    confidence: torch.Tensor
    loss: float
    top_k_accuracy: float | None = None


def outcome(model: ModelValue, data: ImageSet, split: str, batch_size: int, hooks: Hooks, device_name: str = "auto",
            workers: int = 0, top_k: int = 1) -> Outcome:
    """One scored pass of a trained model over a split (through the shared caches), image by image."""
    from nodes.engine.loop import evaluate
    from nodes.engine.metrics import TopK

    device = resolve_device(device_name)
    net = device.prepare(network(model, len(model.classes)))
    with stop_points(net, hooks.should_stop):
        module, batches = prepare_evaluation(hooks, net, model, data, split, device, batch_size, workers=workers)
        with TopK(module, top_k) as top:
            loss, _, pred, true, confidence = evaluate(module, batches, torch.nn.CrossEntropyLoss(), device,
                                                       should_stop=hooks.should_stop)
    files = tuple(path for path, _ in data.split(split))
    return Outcome(files, true, pred, confidence, loss, top.accuracy(true) if 1 < top_k < len(model.classes) else None)


def score(model: ModelValue, data: ImageSet, split: str, batch_size: int, beta: float, top_k: int, hooks: Hooks,
          device_name: str = "auto", workers: int = 0) -> tuple[Any, Outcome]:
    """(metrics, per-image outcome) of a trained model on a split: accuracy, macro precision /
    recall / F-beta, the confusion matrix, and top-k accuracy when there are more than k classes."""
    from nodes.engine.metrics import scores

    found = outcome(model, data, split, batch_size, hooks, device_name, workers, top_k)
    metrics = scores(found.predicted, found.true, model.classes, beta)
    if found.top_k_accuracy is not None:
        metrics.values[f"top{top_k}_accuracy"] = found.top_k_accuracy
    return metrics, found
