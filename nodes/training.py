"""Training nodes: the trainer, and fine-tune (choose which blocks of a trained model train next)."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field

from nodeflow.node import Node, NodeParams, ParamProblem, Port, RunContext
from nodes._checkpoint import CheckpointError, pending_checkpoints, restore_checkpoint
from nodes._distributed import current as current_group, launching
from nodes._features import prepare_training, technique_blockers
from nodes._pipeline import resolve_workers
from nodes._torch import free_memory, is_out_of_memory, resolve_device, seed_everything
from nodes._training import (NonFiniteLoss, apply_freezing, cpu_state, evaluate, frozen_prefix, network, resolve_spec,
                             set_mode, train_one_epoch)
from nodes import _techniques as tech
from nodes._values import IMAGES, MODEL, TRAINED_MODEL, ImageSet, ModelValue
from nodes.model import model_facts


def check_fit(model: dict[str, Any], data: dict[str, Any]) -> None:
    """Raise ParamProblem when the images a trainer gets cannot go into the model it gets; the
    message names the nodes to change (formatter, input layer, output layer)."""
    format_node = data.get("format_node") or "the image formatter"
    input_node = model.get("input_node") or "the input layer"
    if data.get("formatted") is False:
        source = data.get("dataset_node") or "the dataset"
        raise ParamProblem(f"the images from '{source}' have no fixed size; put an image formatter between "
                           f"'{source}' and this node", port="data", other_node=data.get("dataset_node"))
    if data.get("image_size") and model.get("input_shape"):
        made = [data["channels"], *data["image_size"]]
        wanted = list(model["input_shape"])
        if made != wanted:
            c, h, w = made
            c2, h2, w2 = wanted
            raise ParamProblem(
                f"image formatter '{format_node}' makes {c}×{h}×{w} images (channels×height×width) but input "
                f"layer '{input_node}' expects {c2}×{h2}×{w2}; set {format_node}.height/width/channels or "
                f"{input_node}.height/width/channels so they match", port="data", other_node=data.get("format_node"))
    out = model.get("output_shape")
    if out is not None and len(out) != 1:
        raise ParamProblem(f"the model's output has shape {out}; end it with flatten (or global pool) and a "
                           f"dense layer with units 'auto'", port="model")
    classes = data.get("classes")
    if out and out[0] != "auto" and classes and out[0] != len(classes):
        last = model["layers"][-1]["name"] if model.get("layers") else "the last layer"
        raise ParamProblem(f"the model ends in {out[0]} outputs ('{last}') but the data has {len(classes)} classes "
                           f"{classes}; set {last}.units to {len(classes)} or 'auto'", port="model")
    if model.get("classes") and classes and list(model["classes"]) != list(classes):
        raise ParamProblem(f"the model was trained on classes {model['classes']} but the data has {classes}",
                           port="data")


def value_facts(model: ModelValue) -> dict[str, Any]:
    """The facts ``check_fit`` compares, taken from a model value at run time."""
    facts = model_facts(model)
    facts["classes"] = list(model.classes) if model.trained else None
    return facts


def data_facts(data: ImageSet) -> dict[str, Any]:
    """The facts ``check_fit`` compares, taken from a dataset value at run time."""
    fmt = data.format
    facts: dict[str, Any] = {"classes": list(data.classes), "formatted": fmt is not None,
                             "dataset_node": data.sources.get("dataset"), "format_node": data.sources.get("format")}
    if fmt:
        facts.update(image_size=[fmt["height"], fmt["width"]], channels=fmt["channels"])
    return facts


class Trainer(Node):
    """Trains a model on the training split and scores it on the validation split after every
    epoch (train loss, validation loss and accuracy are logged as metrics)."""

    type = "train.trainer"
    title = "Trainer"
    category = "Training"
    inputs = (Port("model", MODEL, "An architecture, or a trained model to keep training"),
              Port("data", IMAGES, "Formatted images with train and validation splits"),
              Port("teacher", TRAINED_MODEL, "Optional: a trained model to distil from (knowledge distillation)",
                   optional=True))
    outputs = (Port("model", TRAINED_MODEL, "The trained model with its history"),)

    class Params(NodeParams):
        optimizer: Literal["sgd", "adam", "adamw", "rmsprop", "adabound"] = Field(
            "rmsprop", description="Optimisation algorithm (adabound: Adam that turns into SGD as its bounds tighten)")
        lr: float = Field(2e-5, gt=0, le=10, description="Learning rate")
        momentum: float = Field(0.9, ge=0, lt=1, description="Momentum (SGD only)")
        weight_decay: float = Field(0.0, ge=0, le=1, description="L2 weight decay")
        epochs: int = Field(30, ge=1, le=10_000, description="Passes over the training split")
        batch_size: int = Field(20, ge=1, le=4096, description="Images per step")
        loss: Literal["cross_entropy"] = Field("cross_entropy", description="Classification loss")
        label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing of the loss")
        schedule: Literal["none", "cosine", "step", "onecycle", "sgdr"] = Field(
            "none", description="Learning-rate schedule (sgdr: cosine annealing with warm restarts)")
        step_size: int = Field(10, ge=1, description="Epochs between LR drops (step schedule)")
        gamma: float = Field(0.1, gt=0, le=1, description="LR factor at each drop (step schedule)")
        head_lr_mult: float = Field(1.0, gt=0, le=1000, description=(
            "Learning-rate multiplier for the layers after the backbone (the new head)"))
        early_stopping: int = Field(0, ge=0, description=(
            "Stop after this many epochs without a lower validation loss and keep the best weights (0: off)"))
        seed: int = Field(0, ge=0, description="Seed of weight init, data order and dropout")
        mixed_precision: bool = Field(True, description="bf16/fp16 autocast on CUDA (ignored on CPU)")
        workers: int = Field(-1, ge=-1, le=64, description=(
            "Threads that decode images once, or worker processes when images are read every epoch "
            "(random resized crop); -1: every available core, 0: in the training process"))
        feature_cache: Literal["auto", "off"] = Field("auto", description=(
            "auto: compute the frozen leading blocks' outputs once and train the rest on them, when the "
            "training images are the same every epoch (re-used across runs; validation always)"))
        augmented_copies: int = Field(0, ge=0, le=100, description=(
            "With random augmentation: cache this many augmented copies of each image's frozen-block "
            "outputs and cycle through them by epoch (0: no cache while augmenting)"))
        devices: int = Field(1, ge=1, le=64, description=(
            "Processes to train in, one per GPU (or CPU processes): more than 1 runs DistributedDataParallel; "
            "batch_size stays the total over all devices"))
        strategy: Literal["auto", "ddp"] = Field("auto", description=(
            "How several devices train together: DistributedDataParallel (the only one, for now)"))
        compile: bool = Field(False, description="torch.compile the trained part (pays off on long GPU runs)")
        grad_clip: float = Field(0.0, ge=0, le=1e6, description=(
            "Clip the gradient norm to this value (0: off); helps when the loss blows up"))
        lr_decay: float = Field(1.0, gt=0, le=1, description=(
            "Layer-wise LR decay: the last trainable backbone block trains at lr, each earlier one this many "
            "times the next (1: all at lr)"))
        block_lrs: list[float] = Field(default_factory=list, max_length=32, description=(
            "Discriminative LRs, fastai style, e.g. 1e-5, 1e-4, 1e-2: the last is the head's, the others go to "
            "consecutive chunks of the trainable backbone blocks, early to late (empty: lr, head_lr_mult, lr_decay)"))
        batch_augment: Literal["none", "mixup", "cutmix", "ricap"] = Field("none", description=(
            "Mix images within each batch, labels weighted to match: mixup blends whole images, CutMix pastes "
            "a box, RICAP tiles four crops"))
        mix_alpha: float = Field(0.4, gt=0, le=10, description=(
            "Beta(α, α) of the mixing ratio (mixup, CutMix) or of the patch boundary (RICAP)"))
        distill_alpha: float = Field(0.5, ge=0, le=1, description=(
            "With a teacher wired: weight of the true labels' loss; the rest goes to the teacher's soft targets"))
        distill_temperature: float = Field(4.0, gt=0, le=100, description=(
            "With a teacher: softmax temperature of the soft targets (higher shares more of the teacher's "
            "knowledge about wrong classes)"))
        final_lr: float = Field(0.1, gt=0, le=10, description="AdaBound: the SGD learning rate its bounds converge to")
        sgdr_cycle: int = Field(1, ge=1, le=10_000, description="SGDR: epochs of the first cosine cycle")
        sgdr_mult: int = Field(2, ge=1, le=10, description="SGDR: each cycle is this many times longer than the last")

    @classmethod
    def infer(cls, params: Params, inputs, node_id: str | None = None):
        model, data = inputs.get("model") or {}, inputs.get("data") or {}
        check_fit(model, data)
        if "spec" not in model:
            return {}
        classes = data.get("classes")
        trained = {**model, "trained": True, "classes": classes}
        if classes and "layers" in model:  # the output layer's size is known now: count it in the layer list
            trained["layers"] = model_facts({**model, "spec": resolve_spec(model["spec"], len(classes))})["layers"]
        return {"model": trained}

    @launching
    def run(self, ctx: RunContext, params: Params, model: ModelValue, data: ImageSet,
            teacher: ModelValue | None = None) -> dict:
        try:
            return self._train(ctx, params, model, data, teacher)
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not is_out_of_memory(exc):
                raise
            free_memory()
            raise ParamProblem(f"ran out of memory ({str(exc).splitlines()[0][:160]}); try a smaller batch_size "
                               f"(now {params.batch_size}) or smaller images", param="batch_size") from None

    def _train(self, ctx: RunContext, params: Params, model: ModelValue, data: ImageSet,
               teacher: ModelValue | None = None) -> dict:
        check_fit(value_facts(model), data_facts(data))
        device = resolve_device(ctx.device, params.mixed_precision)
        generator = seed_everything(params.seed)
        num_classes = len(data.classes)
        net = network(model, num_classes)
        apply_freezing(net, model.frozen)
        net = device.prepare(net)
        prefix = frozen_prefix(net, model.frozen)
        groups = tech.layerwise_groups(net, model, params.lr, params.head_lr_mult, params.lr_decay, params.block_lrs)
        if not groups:
            raise ParamProblem("every layer of the model is frozen: nothing to train; unfreeze some blocks "
                               "(fine-tune node) or set the backbone's feature_extractor to false", port="model")
        trainable = sum(p.numel() for g in groups for p in g["params"])
        ctx.log(f"training {trainable:,} parameters on {device.torch} ({len(data.split('train'))} images, "
                f"{num_classes} classes)")
        ctx.log_metric("trainable_params", trainable)
        optimizer = tech.make_optimizer(params.optimizer, groups, params.momentum, params.weight_decay, params.final_lr)
        group = current_group()
        inputs = prepare_training(ctx, net, model, data, device, batch_size=group.per_rank(params.batch_size),
                                  generator=generator, mode=params.feature_cache, copies=params.augmented_copies,
                                  seed=params.seed, workers=resolve_workers(params.workers),
                                  blockers=technique_blockers(params, teacher), shard=group.shard(params.seed),
                                  main_first=group.main_first)
        train_loader, val_loader = inputs.train, inputs.validation
        body, prefix = group.wrap(inputs.body, inputs.prefix, device.torch, params.compile)
        save_on_main = group.main_only(pending_checkpoints().save)
        schedule = tech.make_schedule(params.schedule, optimizer, params.epochs, len(train_loader), params.step_size,
                                      params.gamma, params.sgdr_cycle, params.sgdr_mult)
        scaler = torch.amp.GradScaler(device.torch.type) if device.needs_scaler else None
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=params.label_smoothing)
        objective = technique_objective(params, data, teacher, device)
        history = list(model.history)
        best: tuple[float, dict[str, Any]] | None = None
        stale = 0
        step = 0
        total = params.epochs * len(train_loader)

        def on_batch(loss: float) -> None:
            nonlocal step
            step += 1
            ctx.log_metric("batch_loss", loss, step=step)
            ctx.progress(step, total)

        checkpoint = ctx.checkpoints / "last.safetensors"
        first = 1
        if checkpoint.is_file():
            try:
                meta = restore_checkpoint(checkpoint, model=net, optimizer=optimizer, scheduler=schedule,
                                          generator=generator)
            except CheckpointError as exc:
                ctx.log(f"starting afresh: {exc}")
            else:
                first, history, step = meta["epoch"] + 1, meta["history"], meta["extra"]["step"]
                ctx.log(f"resuming after epoch {meta['epoch']} from an interrupted attempt")
        for epoch in range(first, params.epochs + 1):
            set_mode(net, True, model.frozen, model.bn_frozen)
            inputs.set_epoch(epoch)
            try:
                train_loss, train_acc = train_one_epoch(body, train_loader, optimizer, objective or loss_fn, device,
                                                        prefix, scaler, schedule, on_batch, params.grad_clip,
                                                        prepare=objective.prepare if objective else None)
            except NonFiniteLoss as exc:
                lr = optimizer.param_groups[0]["lr"]
                clip = "a lower grad_clip" if params.grad_clip else "grad_clip (e.g. 1.0)"
                raise ParamProblem(f"{exc} of epoch {epoch} (learning rate {lr:g}); lower lr or set {clip}. "
                                   "Nothing after this node runs; the last finished epoch stays as a checkpoint",
                                   param="lr") from None
            val_loss, val_acc, _, val_true = evaluate(inputs.eval_body, val_loader, loss_fn, device)
            train_loss, train_acc, val_loss, val_acc = group.reduce((train_loss, train_acc, 1),
                                                                    (val_loss, val_acc, len(val_true)))
            record = {"epoch": len(history) + 1, "train_loss": train_loss, "train_accuracy": train_acc,
                      "val_loss": val_loss, "val_accuracy": val_acc, "lr": optimizer.param_groups[0]["lr"]}
            history.append(record)
            for name in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
                if not math.isnan(record[name]):
                    ctx.log_metric(name, record[name], step=epoch)
            ctx.log(f"epoch {epoch}/{params.epochs}: train loss {train_loss:.4f} acc {train_acc:.3f}, "
                    f"val loss {val_loss:.4f} acc {val_acc:.3f}")
            save_on_main(checkpoint, epoch=epoch, model=net, optimizer=optimizer, scheduler=schedule,
                            config=params.model_dump(mode="json"), history=history, generator=generator,
                            extra={"step": step})
            if params.early_stopping and not math.isnan(val_loss):
                if best is None or val_loss < best[0]:
                    best = (val_loss, cpu_state(net))
                    stale = 0
                else:
                    stale += 1
                    if stale >= params.early_stopping:
                        ctx.log(f"early stop after epoch {epoch}: no better validation loss for {stale} epochs")
                        break
        state = best[1] if best is not None else cpu_state(net)
        if best is not None:
            ctx.log(f"kept the weights with the lowest validation loss ({best[0]:.4f})")
        trained = ModelValue(spec=resolve_spec(model.spec, num_classes), frozen=model.frozen,
                             bn_frozen=model.bn_frozen, state=state, classes=data.classes, format=data.format,
                             history=tuple(history))
        return {"model": trained}


def technique_objective(params: Trainer.Params, data: ImageSet, teacher: ModelValue | None, device):
    """The loss for batch augmentation and distillation (None when neither is on: plain
    cross-entropy then). The teacher must take the student's images and know its classes."""
    if teacher is None and not tech.uses_random_batch_augment(params):
        return None
    net = None
    if teacher is not None:
        facts = value_facts(teacher)
        if list(teacher.classes) != list(data.classes):
            raise ParamProblem(f"the teacher was trained on classes {list(teacher.classes)} but the data has "
                               f"{list(data.classes)}", port="teacher")
        made = data_facts(data)
        if made.get("image_size") and list(facts["input_shape"]) != [made["channels"], *made["image_size"]]:
            raise ParamProblem(f"the teacher takes {facts['input_shape']} images but the data is formatted to "
                               f"{[made['channels'], *made['image_size']]}; give both the same input size",
                               port="teacher")
        net = device.prepare(network(teacher, len(data.classes)))
        for p in net.parameters():
            p.requires_grad_(False)
    return tech.Objective(len(data.classes), params.label_smoothing, params.batch_augment, params.mix_alpha,
                          params.seed, net, params.distill_alpha, params.distill_temperature, device.autocast)


class FineTune(Node):
    """Chooses which blocks of a model train next: unfreeze blocks by name (e.g. block5 of VGG16,
    layer4 of ResNet) or, with no names, the last N frozen ones. Returns a new model; its input is never changed."""

    type = "train.finetune"
    title = "Fine-tune (unfreeze)"
    category = "Training"
    inputs = (Port("model", MODEL, "Usually a trained model"),)
    outputs = (Port("model", MODEL, "The same weights with the chosen blocks trainable"),)

    class Params(NodeParams):
        # the editor's layer picker, and the param it reads when no layer is named
        unfreeze: list[str] = Field(default_factory=list,
                                    json_schema_extra={"x-widget": "layers", "x-last-n": "last_n"}, description=(
            "Blocks or layers to make trainable, by name (see the model's layer list), e.g. block5 or layer4"))
        last_n: int = Field(1, ge=0, le=1000, description=(
            "When 'unfreeze' is empty: unfreeze the last N frozen blocks (block5 of VGG16, layer4 of ResNet)"))
        freeze_batchnorm: bool = Field(True, description=(
            "Keep batch-norm statistics fixed while fine-tuning (usual with small batches)"))

    @classmethod
    def _apply(cls, params: Params, layers: list[dict[str, Any]], frozen: list[str]) -> list[str]:
        names = [layer["name"] for layer in layers]
        unknown = [n for n in params.unfreeze if n not in names]
        if unknown:
            raise ParamProblem(f"the model has no layer {', '.join(repr(n) for n in unknown)}; its layers are "
                               f"{', '.join(names)}", param="unfreeze")
        chosen = set(params.unfreeze)
        if not chosen and params.last_n:
            chosen.update([n for n in names if n in frozen][-params.last_n:])
        return [n for n in frozen if n not in chosen]

    @classmethod
    def infer(cls, params: Params, inputs, node_id: str | None = None):
        model = inputs.get("model") or {}
        if "layers" not in model:
            return {}
        frozen = cls._apply(params, model["layers"], list(model.get("frozen", [])))
        layers = [{**layer, "trainable": layer["name"] not in frozen} for layer in model["layers"]]
        return {"model": {**model, "frozen": frozen, "layers": layers}}

    def run(self, ctx: RunContext, params: Params, model: ModelValue) -> dict:
        layers = model_facts(model, "unfreeze")["layers"]
        frozen = self._apply(params, layers, list(model.frozen))
        now_trainable = [layer["name"] for layer in layers if layer["name"] in model.frozen and layer["name"] not in frozen]
        ctx.log(f"unfrozen: {', '.join(now_trainable) or 'nothing'}; still frozen: {', '.join(frozen) or 'nothing'}")
        ctx.log_metric("trainable_params", sum(b["params"] or 0 for b in layers if b["name"] not in frozen))
        return {"model": model.with_(frozen=tuple(frozen), bn_frozen=params.freeze_batchnorm)}
