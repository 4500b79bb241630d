"""``fit``: train a model on a dataset, top to bottom, in the manner of torchvision's reference
``train.py``: plan (:func:`plan_fit`: device, network, freezing, what trains, where each split's
batches come from and what the caches already hold), set up (optimizer, inputs, schedule, loss),
resume from the last epoch checkpoint if one is there, then per epoch ``train_one_epoch``,
``evaluate``, record, checkpoint and maybe stop early (or at a target accuracy).

The cost preview (``nodes.engine.estimate``) prices the same :class:`FitPlan` that ``fit``
executes, so the two cannot disagree about what a training does.

It takes a plain :class:`FitConfig` and :class:`~nodes.engine.hooks.Hooks`; the trainer node
turns its params into the one and its run context into the other.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nodes.engine import standalone
from nodes.engine.augment import Objective, uses_random_batch_augment
from nodes.engine.checkpoint import CheckpointError, pending_checkpoints, restore_checkpoint
from nodes.engine.device import Device, resolve_device, seed_everything
from nodes.engine.distributed import current as current_group
from nodes.engine.feature_cache import (Decision, FeatureSet, decide, features_cached, features_for, prefix_digest,
                                        tail, technique_blockers)
from nodes.engine.hooks import Hooks
from nodes.engine.loop import (NonFiniteLoss, apply_freezing, cpu_state, evaluate, frozen_prefix, network, resolve_spec,
                               set_mode, stop_points, train_one_epoch)
from nodes.engine.optim import layerwise_groups, make_optimizer, make_schedule
from nodes.engine.pipeline import Batches, Shard, decodable, decoded_cached, image_batches, random_reason
from nodes.engine.settings import FitConfig
from nodes.engine.values import ImageSet, ModelValue

#: the per-epoch metrics of a training: its curves
EPOCH_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


@dataclass
class FitResult:
    model: ModelValue
    history: list[dict[str, Any]]
    best_val_loss: float | None = None
    trainable_params: int = 0
    feature_cache: dict[str, Any] = field(default_factory=dict)


class NothingToTrain(ValueError):
    """Every layer of the model is frozen."""


class TeacherMismatch(ValueError):
    """The distillation teacher cannot teach this student on this data."""


@dataclass(frozen=True)
class SplitPlan:
    """How one split's images reach the network every epoch, and what the first epoch builds
    before that: the frozen prefix's outputs computed once (``features``; ``copies`` augmented
    copies per image), or the images themselves, from the decode cache (``decoded``) or decoded
    from their files every epoch (a random resized crop needs the whole image). ``train``: read
    with the training transform (its augmentation)."""

    name: str
    images: int
    train: bool
    features: bool
    features_cached: bool
    copies: int
    decoded: bool
    decoded_cached: bool

    @property
    def decoded_first(self) -> int:
        """Images decoded in the first epoch only: into the decode cache, or once per feature copy
        when the features are built from the files."""
        if self.features and self.features_cached:
            return 0
        if not self.decoded:
            return self.images * self.copies if self.features else 0
        return 0 if self.decoded_cached else self.images

    @property
    def decoded_each_epoch(self) -> int:
        return self.images if not self.features and not self.decoded else 0

    @property
    def prefix_first(self) -> int:
        """Images (times copies) the frozen prefix runs over once, in the first epoch."""
        return self.images * self.copies if self.features and not self.features_cached else 0


@dataclass
class FitPlan:
    """What ``fit`` will do, decided before it does any of it: where it runs, the network (built,
    frozen, on the device) and the optimizer's groups of what trains, the feature cache's decision
    (and the hash of the blocks it stands in for), how each split is read, the batch size of this
    process and whether an epoch checkpoint follows every epoch."""

    config: FitConfig
    device: Device
    net: nn.Sequential
    groups: list[dict[str, Any]]
    cache: Decision
    digest: str
    train: SplitPlan
    validation: SplitPlan | None
    batch_size: int
    checkpoints: bool

    @property
    def trainable(self) -> int:
        return sum(p.numel() for g in self.groups for p in g["params"])

    def optimizer(self) -> torch.optim.Optimizer:
        config = self.config
        return make_optimizer(config.optimizer, self.groups, config.momentum, config.weight_decay, config.final_lr)


def plan_fit(model: ModelValue, data: ImageSet, config: FitConfig, workspace: Path, teacher: ModelValue | None = None,
             checkpoints: bool = False, validation: bool = True) -> FitPlan:
    """Decide what ``fit(model, data, config)`` does, asking the workspace what its caches hold
    (nothing is computed or written). ``validation``: score the validation split every epoch.
    Builds the network from the global random state: seed it first. Raises NothingToTrain."""
    device = resolve_device(config.device, config.mixed_precision)
    net = network(model, len(data.classes))
    apply_freezing(net, model.frozen)
    net = device.prepare(net)
    groups = layerwise_groups(net, model, config.lr, config.head_lr_mult, config.lr_decay, config.block_lrs)
    if not groups:
        raise NothingToTrain("every layer of the model is frozen: nothing to train")
    cache = decide(net, model, data, config.feature_cache, config.augmented_copies,
                   technique_blockers(config.batch_augment, teacher))
    digest = prefix_digest(net, cache.cut) if cache.cut else ""
    shape = list(model.spec["input_shape"])

    def split(name: str, features: bool, train: bool, copies: int = 1) -> SplitPlan:
        return SplitPlan(name, len(data.split(name)), train, features,
                         features and features_cached(digest, data, name, shape, device, workspace, train, copies,
                                                      config.seed),
                         copies, decodable(data, train), decoded_cached(data, name, train, workspace))

    augmented = random_reason(data) is not None
    if cache.train:  # the features of augmented images: K copies, each read with the training transform
        train = split("train", True, augmented, max(config.augmented_copies, 1) if augmented else 1)
    else:
        train = split("train", False, True)
    scored = split("validation", cache.evaluation, False) if validation and data.split("validation") else None
    return FitPlan(config, device, net, groups, cache, digest, train, scored,
                   current_group().per_rank(config.batch_size), checkpoints)


# -- the inputs the plan says -----------------------------------------------------------------------


class _Empty:
    """An empty split: evaluation reports NaN as it does for an empty loader."""

    def __iter__(self):
        return iter(())

    def __len__(self) -> int:
        return 0

    def set_epoch(self, epoch: int) -> None:
        pass


@dataclass
class TrainInputs:
    """What the trainer's loop runs: ``body`` on ``train`` batches (``prefix`` leading blocks under
    no_grad), ``eval_body`` on ``validation`` batches."""

    train: Any
    validation: Any
    body: nn.Module
    eval_body: nn.Module
    prefix: int
    info: dict[str, Any]

    def set_epoch(self, epoch: int) -> None:
        for batches in (self.train, self.validation):
            if hasattr(batches, "set_epoch"):
                batches.set_epoch(epoch)


def prepare_training(hooks: Hooks, plan: FitPlan, model: ModelValue, data: ImageSet, *, generator: torch.Generator,
                     workers: int = 0, shard: Shard | None = None,
                     main_first: Callable[[Callable[[], Any]], Any] = lambda build: build()) -> TrainInputs:
    """The trainer's inputs as its plan says: cached prefix features where the freeze boundary and
    the data allow, decoded-image batches otherwise; say which and why in a log line and a preview."""
    net, device, decision, batch_size = plan.net, plan.device, plan.cache, plan.batch_size
    prefix = frozen_prefix(net, model.frozen)
    eval_shard = Shard(shard.rank, shard.world, shard.seed) if shard else None
    shape = model.spec["input_shape"]

    def features(split: SplitPlan) -> FeatureSet:
        return main_first(lambda: features_for(
            net, decision.cut, plan.digest, data, split.name, shape, device, hooks.workspace, batch_size,
            augmented=split.train, copies=split.copies, seed=plan.config.seed, workers=workers, log=hooks.log,
            should_stop=hooks.should_stop))

    info: dict[str, Any] = {"enabled": decision.train, "reason": decision.reason, "blocks": decision.blocks}
    if plan.train.features:
        train_set = features(plan.train)
        train = Batches(len(train_set), train_set.fetch, batch_size, True, generator, shard, on_epoch=train_set.set_epoch)
        body, body_prefix = tail(net, decision.cut), 0
        info.update(train=train_set.hit, copies=train_set.copies, feature_shape=list(train_set.features.shape[2:]),
                    bytes=int(np.prod(train_set.features.shape)) * 2)
    else:
        train = main_first(lambda: image_batches(data, "train", batch_size, True, device.torch, hooks.workspace,
                                                 generator, workers, shard, hooks.log, should_stop=hooks.should_stop))
        body, body_prefix = net, prefix
    if plan.validation is None:
        validation, eval_body = _Empty(), net
    elif plan.validation.features:
        val_set = features(plan.validation)
        validation = Batches(len(val_set), val_set.fetch, batch_size, False, None, eval_shard)
        eval_body = tail(net, decision.cut)
        info["validation"] = val_set.hit
    else:
        validation = main_first(lambda: image_batches(data, "validation", batch_size, False, device.torch,
                                                      hooks.workspace, None, workers, eval_shard, hooks.log,
                                                      should_stop=hooks.should_stop))
        eval_body = net
    if plan.train.features:
        size = info["bytes"] / 2**20
        hooks.log(f"feature cache on: {', '.join(decision.blocks)} run once ({info['train']}), "
                  f"{info['copies']}× {len(train_set)} × {info['feature_shape']} fp16 ({size:.1f} MiB); "
                  f"epochs train {', '.join(n for n, _ in list(net.named_children())[decision.cut:])}")
    else:
        hooks.log(f"feature cache off for training: {decision.reason}")
    hooks.preview("feature_cache", info)
    return TrainInputs(train, validation, body, eval_body, body_prefix, info)


# -- the training ------------------------------------------------------------------------------------


def fit(model: ModelValue, data: ImageSet, config: FitConfig, hooks: Hooks,
        teacher: ModelValue | None = None) -> FitResult:
    """Train ``model`` on ``data``'s training split, scoring the validation split after every
    epoch; returns the trained model (best weights when early stopping) and its history.

    Raises ``NothingToTrain``, ``TeacherMismatch``, ``loop.NonFiniteLoss`` (the last finished
    epoch stays as a checkpoint) and ``hooks.Stopped`` when ``hooks.should_stop`` turns true.
    """
    generator = seed_everything(config.seed)
    plan = plan_fit(model, data, config, hooks.workspace, teacher, checkpoints=hooks.checkpoints is not None)
    net, device = plan.net, plan.device
    hooks.log(f"training {plan.trainable:,} parameters on {device.torch} ({plan.train.images} images, "
              f"{len(data.classes)} classes)")
    hooks.metric("trainable_params", plan.trainable)
    optimizer = plan.optimizer()
    group = current_group()
    stops = stop_points(net, hooks.should_stop) if not config.compile else contextlib.nullcontext()
    with stops:
        inputs = prepare_training(hooks, plan, model, data, generator=generator, workers=config.workers,
                                  shard=group.shard(config.seed), main_first=group.main_first)
        body, prefix = group.wrap(inputs.body, inputs.prefix, device.torch, config.compile)
        schedule = make_schedule(config.schedule, optimizer, config.epochs, len(inputs.train), config.step_size,
                                 config.gamma, config.sgdr_cycle, config.sgdr_mult)
        scaler = torch.amp.GradScaler(device.torch.type) if device.needs_scaler else None
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        objective = _objective(config, data, teacher, device, generator)
        history = list(model.history)
        best: tuple[float, dict[str, Any]] | None = None
        stale = 0
        step = 0
        completed = 0  # epochs done, for the progress ("epoch 12/40")
        total = config.epochs * len(inputs.train)

        def on_batch(loss: float) -> None:
            nonlocal step
            step += 1
            hooks.metric("batch_loss", loss, step=step)
            hooks.progress(step, total, epoch=completed, epochs=config.epochs)

        save = group.main_only(pending_checkpoints().save)
        checkpoint = hooks.checkpoints / "last.safetensors" if plan.checkpoints else None
        first = 1
        if checkpoint is not None and checkpoint.is_file():
            try:
                meta = restore_checkpoint(checkpoint, model=net, optimizer=optimizer, scheduler=schedule,
                                          generator=generator, frozen=model.frozen)
            except CheckpointError as exc:
                hooks.log(f"starting afresh: {exc}")
            else:
                completed, history, step = meta["epoch"], meta["history"], meta["extra"]["step"]
                first = completed + 1
                hooks.log(f"resuming after epoch {completed} from an interrupted attempt")
                # this training's epochs so far (the history may begin with an earlier training's): the
                # curves of the resumed run start at epoch 1, not where it resumes
                for epoch, record in enumerate(history[len(history) - completed:], start=1):
                    _tell_epoch(hooks, record, epoch)
                hooks.progress(step, total, epoch=completed, epochs=config.epochs)
        for epoch in range(first, config.epochs + 1):
            set_mode(net, True, model.frozen, model.bn_frozen)
            inputs.set_epoch(epoch)
            try:
                train_loss, train_acc = train_one_epoch(body, inputs.train, optimizer, objective or loss_fn, device,
                                                        prefix, scaler, schedule, on_batch, config.grad_clip,
                                                        prepare=objective.prepare if objective else None,
                                                        should_stop=hooks.should_stop)
            except NonFiniteLoss as exc:
                exc.epoch, exc.lr = epoch, optimizer.param_groups[0]["lr"]
                raise
            val_loss, val_acc, _, val_true, _ = evaluate(inputs.eval_body, inputs.validation, loss_fn, device,
                                                      should_stop=hooks.should_stop)
            train_loss, train_acc, val_loss, val_acc = group.reduce((train_loss, train_acc, 1),
                                                                    (val_loss, val_acc, len(val_true)))
            record = {"epoch": len(history) + 1, "train_loss": train_loss, "train_accuracy": train_acc,
                      "val_loss": val_loss, "val_accuracy": val_acc, "lr": optimizer.param_groups[0]["lr"]}
            history.append(record)
            _tell_epoch(hooks, record, epoch)
            hooks.log(f"epoch {epoch}/{config.epochs}: train loss {train_loss:.4f} acc {train_acc:.3f}, "
                      f"val loss {val_loss:.4f} acc {val_acc:.3f}")
            if checkpoint is not None:
                save(checkpoint, epoch=epoch, model=net, optimizer=optimizer, scheduler=schedule,
                     config=config.record(), history=history, generator=generator, extra={"step": step},
                     frozen=model.frozen)
            completed = epoch
            hooks.progress(step, total, epoch=completed, epochs=config.epochs)
            if config.stop_at_accuracy and val_acc >= config.stop_at_accuracy:
                hooks.log(f"reached validation accuracy {val_acc:.3f} (target {config.stop_at_accuracy:g}) "
                          f"after epoch {epoch}")
                best = None  # the weights that reached it, even under early stopping
                break
            if config.early_stopping:
                best, stale = standalone.keep_best(best, stale, val_loss, net)  # the exported script's
                if stale >= config.early_stopping:
                    hooks.log(f"early stop after epoch {epoch}: no better validation loss for {stale} epochs")
                    break
    state = best[1] if best is not None else cpu_state(net)
    if best is not None:
        hooks.log(f"kept the weights with the lowest validation loss ({best[0]:.4f})")
    trained = ModelValue(spec=resolve_spec(model.spec, len(data.classes)), frozen=model.frozen,
                         bn_frozen=model.bn_frozen, state=state, classes=data.classes, format=data.format,
                         history=tuple(history))
    return FitResult(trained, history, best[0] if best else None, plan.trainable, inputs.info)


def _tell_epoch(hooks: Hooks, record: dict[str, Any], epoch: int) -> None:
    """An epoch's metrics as points of the curves (NaN, e.g. no validation images, is no point)."""
    for name in EPOCH_METRICS:
        if not math.isnan(record[name]):
            hooks.metric(name, record[name], step=epoch)


def _objective(config: FitConfig, data: ImageSet, teacher: ModelValue | None, device: Device,
               generator: torch.Generator) -> Objective | None:
    """The loss for batch augmentation and distillation (None when neither is on: plain
    cross-entropy then). Mixing draws from the trainer's seeded generator, which checkpoints
    keep, so a resumed run mixes as the uninterrupted one would have."""
    if teacher is None and not uses_random_batch_augment(config.batch_augment):
        return None
    net = None
    if teacher is not None:
        if list(teacher.classes) != list(data.classes):
            raise TeacherMismatch(f"the teacher was trained on classes {list(teacher.classes)} but the data has "
                                  f"{list(data.classes)}")
        made = [data.format["channels"], data.format["height"], data.format["width"]] if data.format else None
        if made and list(teacher.spec["input_shape"]) != made:
            raise TeacherMismatch(f"the teacher takes {list(teacher.spec['input_shape'])} images but the data is "
                                  f"formatted to {made}; give both the same input size")
        net = device.prepare(network(teacher, len(data.classes)))
        for p in net.parameters():
            p.requires_grad_(False)
    return Objective(len(data.classes), config.label_smoothing, config.batch_augment, config.mix_alpha,
                     config.seed, net, config.distill_alpha, config.distill_temperature, device.autocast,
                     generator=generator)

