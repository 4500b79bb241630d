"""Training nodes: the trainer, fine-tune (choose which blocks of a trained model train next) and
the learning-rate finder. Each turns its params into an engine config and its run context into
hooks; the training itself is ``nodes.engine.fit``."""

from __future__ import annotations

import csv
import io
import textwrap
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from nodeflow.files import atomic_write_bytes, atomic_write_text
from nodeflow.limits import NO_LIMITS, JobLimits
from nodeflow.node import Node, NodeParams, ParamProblem, ParamWarning, Port, RunContext, ScriptContext, ScriptPart
from nodes.checks import (check_fit, data_facts, engine_errors, hooks, keep_outcome, model_facts,
                          output_activation_warning, output_node, png_preview, settings_named, value_facts)
from nodes.engine.launch import Launch, Machines, assists, machines
from nodes.engine.models import resolve_spec
from nodes.engine.plots import line_plot_png
from nodes.engine.scripting import DEVICE, FEATURE_CACHE_NOTE, IMPORTS, ScriptData, ScriptModel, call, functions
from nodes.engine.settings import FitConfig, LRRangeConfig, LRRangeSettings, TrainingSettings
from nodes.ports import IMAGES, METRICS, MODEL, TRAINED_MODEL, ImageSet, Metrics, ModelValue

#: where the editor's form shows the trainer's own params among the engine's settings: each of
#: these after the setting named, the params declared after it with it
_FORM_PLACES = {"loss": "batch_size", "devices": "augmented_copies"}


def _form_order(schema: dict[str, Any], settings: type[BaseModel]) -> None:
    """Put the params a node adds to ``settings`` where the form has always shown them (pydantic
    lists a subclass's fields after its base's)."""
    properties = schema["properties"]
    groups: dict[str, list[str]] = {}
    head = None
    for name in properties:
        if name not in settings.model_fields:
            head = name if name in _FORM_PLACES else head
            groups.setdefault(head, []).append(name)
    after = {_FORM_PLACES[head]: names for head, names in groups.items()}
    ordered = {}
    for name, prop in properties.items():
        if name in settings.model_fields:
            ordered[name] = prop
            ordered.update((own, properties[own]) for own in after.get(name, ()))
    properties.clear()
    properties.update(ordered)


class Trainer(Node):
    """Trains a model on the training split and scores it on the validation split after every
    epoch (train loss, validation loss and accuracy are logged as metrics)."""

    type = "train.trainer"
    title = "Trainer"
    category = "Training"
    resources = {"GPU": 1}  # on a Dask cluster: one training per GPU
    inputs = (Port("model", MODEL, "An architecture, or a trained model to keep training"),
              Port("data", IMAGES, "Formatted images with train and validation splits"),
              Port("teacher", TRAINED_MODEL, "Optional: a trained model to distil from (knowledge distillation)",
                   optional=True))
    outputs = (Port("model", TRAINED_MODEL, "The trained model with its history"),)

    class Params(TrainingSettings, NodeParams):
        # the engine's training settings (nodes.engine.settings), and how many processes and machines
        # run the training (no docstring: it would become the form's description)

        model_config = ConfigDict(json_schema_extra=lambda schema: _form_order(schema, TrainingSettings))

        loss: Literal["cross_entropy"] = Field("cross_entropy", description="Classification loss")
        devices: int = Field(1, ge=1, le=64, description=(
            "Processes to train in, one per GPU (or CPU processes): more than 1 runs DistributedDataParallel; "
            "batch_size stays the total over all devices"))
        strategy: Literal["auto", "ddp"] = Field("auto", description=(
            "How several devices train together: DistributedDataParallel (the only one, for now)"))
        # launch settings, exclude=True: not in model_dump, so not in the cache key; every machine of a
        # multi-node training computes the same key (and meets in the same rendezvous)
        num_nodes: int = Field(1, ge=1, le=1024, exclude=True, description=(
            "Machines to train on together, each running the same graph with devices processes (1: this one; "
            "left at 1, NODEFLOW_NUM_NODES or an srun step over several machines sets it)"))
        node_rank: int = Field(0, ge=0, le=1023, exclude=True, description=(
            "This machine's number, 0 to num_nodes - 1 (left at 0, NODEFLOW_NODE_RANK or SLURM sets it)"))
        rdzv_endpoint: str = Field("", max_length=300, exclude=True, description=(
            "host:port where the machines meet (torchrun's c10d rendezvous), reachable from all of them; "
            "empty: NODEFLOW_RDZV_ENDPOINT or, under srun, the job's first host"))

    @classmethod
    def infer(cls, params: Params, inputs, node_id: str | None = None):
        model, data = inputs.get("model") or {}, inputs.get("data") or {}
        check_fit(model, data)
        cls.machines(params)  # node_rank within num_nodes, an endpoint when there are several machines
        if "spec" not in model:
            return {}
        classes = data.get("classes")
        trained = {**model, "trained": True, "classes": classes}
        if classes and "layers" in model:  # the output layer's size is known now: count it in the layer list
            trained["layers"] = model_facts({**model, "spec": resolve_spec(model["spec"], len(classes))})["layers"]
        return {"model": trained}

    @classmethod
    def warnings(cls, params: Params, inputs, node_id: str | None = None, workspace=None) -> list[ParamWarning]:
        """A dense layer that feeds this trainer directly is the output layer: an activation there
        bends the class scores."""
        model = inputs.get("model") or {}
        layers = (model.get("spec") or {}).get("layers") or []
        if not layers or layers[-1].get("kind") != "dense" or layers[-1].get("activation", "none") == "none":
            return []
        last = output_node(model)
        warning = output_activation_warning(layers[-1]["activation"], f"it feeds '{node_id}' directly", last)
        return [warning if last else ParamWarning(warning.message, port="model")]

    @classmethod
    def recorded_elsewhere(cls, params: Params) -> bool:
        return assists(cls.launch(params))

    @staticmethod
    def fit_config(params: Params, device: str) -> FitConfig:
        """The engine's training config from this node's params (launch-only params left out)."""
        from nodes.engine.pipeline import resolve_workers

        return FitConfig(**{**params.model_dump(include=set(TrainingSettings.model_fields)),
                            "workers": resolve_workers(params.workers), "device": device})

    @classmethod
    def script(cls, ctx: ScriptContext, params: Params, model: ScriptModel, data: ScriptData,
               teacher: ScriptModel | None = None) -> ScriptPart:
        """The training as ``fit`` runs it: seed; build the model (or copy a trained one's weights);
        freeze; optimizer over what trains; loaders; schedule; then per epoch train_one_epoch and
        evaluate on the validation split."""
        _no_script_form(params, teacher)
        c, node = ctx.const, ctx.node_id
        last = model.nodes[-1] if model.nodes else node
        build = model.build or "build_" + "".join(ch if ch.isalnum() else "_" for ch in last)
        lines = [f"torch.manual_seed({c('seed')})"]
        if model.trained is None:
            lines.append(f"model = {build}(len({data.classes})).to(device)")
        else:
            lines += [f"model = {build}(len({data.classes}), pretrained=False)  # {model.trained}'s weights replace these",
                      f"model.load_state_dict({model.trained}.state_dict())",
                      "model = model.to(device)"]
        groups = f"param_groups(model, {model.backbone}, {c('lr')}" + (
            f", {c('head_lr_mult')})" if params.head_lr_mult != 1 else ")")
        decay = f"weight_decay={c('weight_decay')}" if params.weight_decay else ""
        optimizer = {
            "sgd": lambda: f"torch.optim.SGD({groups}, momentum={c('momentum')}, nesterov={c('momentum')} > 0"
                           + (f", {decay})" if decay else ")"),
            "adam": lambda: f"torch.optim.Adam({groups}{', ' + decay if decay else ''})",
            "adamw": lambda: f"torch.optim.AdamW({groups}{', ' + decay if decay else ''})",
            "rmsprop": lambda: f"torch.optim.RMSprop({groups}{', ' + decay if decay else ''})",
        }[params.optimizer]()
        workers = f"workers={c('workers')}"
        keep = ["keep_workers=True"] if data.reads_files_every_epoch else []
        smoothing = [f"label_smoothing={c('label_smoothing')}"] if params.label_smoothing else []
        lines += [f"freeze(model, {model.frozen})",
                  f"optimizer = {optimizer}",
                  call("train_loader = loader", [f'{data.splits}["train"]', data.train_transform, c("batch_size"),
                                                 "shuffle=True", f"seed={c('seed')}", workers, *keep]),
                  call("val_loader = loader", [f'{data.splits}.get("validation", [])', data.eval_transform,
                                               c("batch_size"), workers]),
                  f"scheduler = {_schedule(params, c)}",
                  call("criterion = nn.CrossEntropyLoss", smoothing),
                  f"dtype = autocast_dtype(device, {c('mixed_precision')})",
                  'scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None',
                  "trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)",
                  f'print(f"{node}: training {{trainable:,}} parameters on {{device}}")']
        options = ["model", "criterion", "optimizer", "train_loader", "device", f"frozen={model.frozen}"]
        if model.bn_frozen != "False":
            options.append(f"freeze_batchnorm={model.bn_frozen}")
        options += ["scheduler=scheduler", "scaler=scaler"]
        if params.grad_clip:
            options.append(f"grad_clip={c('grad_clip')}")
        options.append("dtype=dtype")
        epochs = c("epochs")
        if params.early_stopping:
            lines.append("best, stale = None, 0")
        lines += [f"for epoch in range(1, {epochs} + 1):",
                  *("    " + line for line in call("train_loss, train_accuracy = train_one_epoch", options, 8)
                    .splitlines()),
                  "    val_loss, val_accuracy = evaluate(model, criterion, val_loader, device, dtype)",
                  *("    " + line for line in call("print", [f'f"{node} epoch {{epoch}}/{{{epochs}}}:"',
                                                          'f"train loss {train_loss:.4f} acc {train_accuracy:.3f},"',
                                                          'f"val loss {val_loss:.4f} acc {val_accuracy:.3f}"'], 8)
                    .splitlines())]
        if params.stop_at_accuracy:  # as fit does: checked before early stopping's bookkeeping
            lines += [f"    if val_accuracy >= {c('stop_at_accuracy')}:",
                      f'        print(f"{node}: reached the target accuracy after epoch {{epoch}}")',
                      *(["        best = None  # keep the weights that reached it"] if params.early_stopping else []),
                      "        break"]
        if params.early_stopping:  # keep the weights of the lowest validation loss, as fit does
            lines += ["    best, stale = keep_best(best, stale, val_loss, model)",
                      f"    if stale >= {c('early_stopping')}:",
                      f'        print(f"{node}: early stop after epoch {{epoch}}")',
                      "        break",
                      "if best is not None:",
                      "    model.load_state_dict(best[1])"]
        trained = ctx.name("model")
        lines += [call(f'results["{node}"] = dict', ["trainable_params=trainable", "train_loss=train_loss",
                                                      "train_accuracy=train_accuracy", "val_loss=val_loss",
                                                      "val_accuracy=val_accuracy"]),
                  f"{trained} = model"]
        sources = functions("freeze", "param_groups", "loader", "ImageFiles", "autocast_dtype", "train_mode",
                            "optimizer_step", "train_one_epoch", "evaluate",
                            *(("cpu_state", "keep_best") if params.early_stopping else ()))
        if model.build is None:
            sources = (_build_function(build, model), *sources)
        return ScriptPart(code="\n".join(lines), setup=(DEVICE,), functions=sources,
                          imports=IMPORTS,
                          notes=_notes(params, ctx, data), outputs={"model": replace(model, build=build, trained=trained)})

    @classmethod
    def measures(cls, params: Params) -> dict[str, str]:
        return {"train_loss": "train", "train_accuracy": "train", "train_images": "train",
                "val_loss": "validation", "val_accuracy": "validation", "validation_images": "validation"}

    @staticmethod
    def launch(params: Params, key: str = "", limits: JobLimits = NO_LIMITS) -> Launch:
        """Where the engine runs the training: the launch params, the cache key its machines share
        (the engine keys the rendezvous id with a secret), and the hosts a shared server lets it meet at."""
        return Launch(params.devices, params.num_nodes, params.node_rank, params.rdzv_endpoint, key,
                      limits.rendezvous_hosts)

    @classmethod
    def machines(cls, params: Params, environ: Mapping[str, str] | None = None,
                 limits: JobLimits = NO_LIMITS) -> Machines:
        """The machines the training runs on (params, else NODEFLOW_* or SLURM in ``environ``);
        a ParamProblem naming the param when they cannot work, or meet where ``limits`` forbid."""
        with settings_named():
            return machines(cls.launch(params, limits=limits), environ)

    @staticmethod
    def within_limits(ctx: RunContext, params: Params) -> None:
        """Refuse, before anything is loaded, a batch or a number of devices over the server's limits."""
        ctx.limits.check_batch(params.batch_size)
        ctx.limits.check_devices(params.devices)

    @classmethod
    def predictor(cls, outputs: dict, device: str = "cpu"):
        """The trained model kept loaded to classify pictures one at a time (the Try it tab)."""
        from nodes.engine.trying import Predictor

        return Predictor(outputs["model"], device)

    def run(self, ctx: RunContext, params: Params, model: ModelValue, data: ImageSet,
            teacher: ModelValue | None = None) -> dict:
        from nodes.engine.distributed import current as current_group

        self.within_limits(ctx, params)
        ctx.log_metric("train_images", len(data.split("train")))
        outputs = self.train(ctx, params, model, data, teacher)
        if outputs and not current_group().active:  # a torchrun rank leaves this to the process that records
            self.keep_outcomes(ctx, params, outputs["model"], data)
        return outputs

    @staticmethod
    def keep_outcomes(ctx: RunContext, params: Params, trained: ModelValue, data: ImageSet) -> None:
        """The trained model's per-image outcome on the validation and the test split, kept beside
        its result so runs compare image by image. Test is scored and kept, never logged as a
        metric: choosing by it would spend the held-out split."""
        from nodes.engine.inference import outcome
        from nodes.engine.pipeline import resolve_workers

        quiet = replace(hooks(ctx), preview=lambda kind, payload: None)  # the card keeps the training's previews
        for split in ("validation", "test"):
            if data.split(split):
                with engine_errors(ctx, params.batch_size):
                    found = outcome(trained, data, split, params.batch_size, quiet, ctx.device,
                                    resolve_workers(params.workers))
                keep_outcome(ctx, split, found, trained.classes)

    def train(self, ctx: RunContext, params: Params, model: ModelValue, data: ImageSet,
              teacher: ModelValue | None = None) -> dict:
        """The training itself: here, or under torchrun with several devices or machines (see
        :func:`nodes.engine.multinode.fit_launched`)."""
        from nodes.engine.fit import NothingToTrain, TeacherMismatch
        from nodes.engine.loop import NonFiniteLoss
        from nodes.engine.multinode import fit_launched

        check_fit(value_facts(model), data_facts(data))
        self.machines(params, limits=ctx.limits)  # refused before anything is written, started or connected
        config = self.fit_config(params, ctx.device)
        with engine_errors(ctx, params.batch_size):
            try:
                result = fit_launched(model, data, config, hooks(ctx, checkpoints=True), teacher,
                                      self.launch(params, ctx.key, ctx.limits))
            except NothingToTrain as exc:
                raise ParamProblem(f"{exc}; unfreeze some blocks (fine-tune node) or set the backbone's "
                                   "feature_extractor to false", port="model") from None
            except TeacherMismatch as exc:
                raise ParamProblem(str(exc), port="teacher") from None
            except NonFiniteLoss as exc:
                clip = "a lower grad_clip" if params.grad_clip else "grad_clip (e.g. 1.0)"
                raise ParamProblem(f"{exc} of epoch {exc.epoch} (learning rate {exc.lr:g}); lower lr or set {clip}. Nothing after "
                                   "this node runs; the last finished epoch stays as a checkpoint",
                                   param="lr") from None
        return {} if result is None else {"model": result.model}  # None: another machine records it

    def estimate(self, ctx: RunContext, params: Params, model: ModelValue, data: ImageSet,
                 teacher: ModelValue | None = None) -> dict:
        """A few profiled batches of the real data (see ``nodes.engine.estimate``); the stand-in is
        the model as training leaves it in cost: same layers, sized for these classes."""
        from nodes.engine.estimate import estimate_fit
        from nodes.engine.fit import NothingToTrain

        self.within_limits(ctx, params)
        check_fit(value_facts(model), data_facts(data))
        self.machines(params, limits=ctx.limits)  # a launch the server refuses is refused when the run is priced
        config = self.fit_config(params, ctx.device)
        with engine_errors(ctx, params.batch_size):
            try:
                found = estimate_fit(model, data, config, ctx.workspace, teacher, should_stop=lambda: ctx.interrupted,
                                     checkpoints=True)
            except NothingToTrain as exc:
                raise ParamProblem(f"{exc}; unfreeze some blocks (fine-tune node) or set the backbone's "
                                   "feature_extractor to false", port="model") from None
        result = found.to_json()
        if params.devices > 1:
            result["notes"].append(f"measured on one device; {params.devices} devices share each epoch's batches")
        trained = model.with_(spec=resolve_spec(model.spec, len(data.classes)), classes=data.classes,
                              format=data.format)
        return {**result, "stand_in": {"model": trained}}


def _no_script_form(params: Trainer.Params, teacher: ScriptModel | None) -> None:
    """Trainer settings the script does not write (it would train otherwise than the graph)."""
    if teacher is not None:
        raise ParamProblem("distillation from a teacher has no script form", port="teacher")
    for name, wanted in (("optimizer", None), ("batch_augment", "none"), ("devices", 1), ("block_lrs", []),
                         ("lr_decay", 1.0)):
        value = getattr(params, name)
        if (name == "optimizer" and value == "adabound") or (wanted is not None and value != wanted):
            raise ParamProblem(f"{value!r} has no script form (the script would train otherwise than the graph)",
                               param=name)


def _schedule(params: Trainer.Params, c) -> str:
    """``make_schedule`` (``nodes.engine.optim``) as code: a step per batch, over the whole run."""
    steps = "len(train_loader)"
    scheduler = "torch.optim.lr_scheduler"
    return {
        "none": lambda: "None",
        "cosine": lambda: f"{scheduler}.CosineAnnealingLR(optimizer, T_max={c('epochs')} * {steps})",
        "step": lambda: f"{scheduler}.StepLR(optimizer, step_size={c('step_size')} * {steps}, gamma={c('gamma')})",
        "onecycle": lambda: (f'{scheduler}.OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups],\n'
                             f"                                                 total_steps={c('epochs')} * {steps})"),
        "sgdr": lambda: (f"{scheduler}.CosineAnnealingWarmRestarts(optimizer, T_0={c('sgdr_cycle')} * {steps},\n"
                         f"                                                                 T_mult={c('sgdr_mult')})"),
    }[params.schedule]()


def _build_function(name: str, model: ScriptModel) -> str:
    """The function that builds a model as the graph wires it: its layers as named blocks."""
    pretrained = any("pretrained" in line for line in model.layers)
    doc = (f"The model {' -> '.join(model.nodes)}: its layers as named blocks (the names fine-tuning picks)."
           + (" pretrained=False leaves the backbone's weights random, for a trained model's weights to replace."
              if pretrained else ""))
    lines = [f"def {name}(num_classes{', pretrained=True' if pretrained else ''}):",
             *textwrap.wrap(f'"""{doc}"""', 100, initial_indent="    ", subsequent_indent="    "),
             "    blocks = OrderedDict()", *(f"    {line}" for line in model.layers), "    return nn.Sequential(blocks)"]
    return "\n".join(lines) + "\n"


def _notes(params: Trainer.Params, ctx: ScriptContext, data: ScriptData) -> tuple[str, ...]:
    """Where the script's numbers may differ from the graph's run, and why."""
    notes = []
    layers = (ctx.facts.get("model") or {}).get("layers") or []
    if params.feature_cache == "auto" and layers and not layers[0].get("trainable", True) and not data.augment \
            and not data.crop:
        notes.append(FEATURE_CACHE_NOTE)
    if (data.augment or (data.format or {}).get("crop") == "random") and not data.reads_files_every_epoch:
        notes.append("the graph's run flips and crops decoded images batch by batch, this script each image in its "
                     "loader: the same kind of random draws, not the same draws")
    if params.compile:
        notes.append("torch.compile is left out (it changes speed, not what is learnt)")
    return tuple(notes)


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

    @classmethod
    def script(cls, ctx: ScriptContext, params: Params, model: ScriptModel) -> ScriptPart:
        """The node's rule: the named blocks, else the last ``last_n`` frozen ones, train from here on."""
        frozen, unfreeze = ctx.name("frozen"), ctx.name("unfreeze")
        code = (f"{unfreeze} = {ctx.const('unfreeze')} or {model.frozen}[max(len({model.frozen}) - "
                f"{ctx.const('last_n')}, 0):]\n"
                f"{frozen} = [name for name in {model.frozen} if name not in {unfreeze}]\n"
                f'print("{ctx.node_id}: unfrozen", {unfreeze}, "still frozen", {frozen})')
        return ScriptPart(code=code, imports=IMPORTS,
                          outputs={"model": replace(model, frozen=frozen, bn_frozen=ctx.const("freeze_batchnorm"))})

    def run(self, ctx: RunContext, params: Params, model: ModelValue) -> dict:
        layers = model_facts(model, "unfreeze")["layers"]
        frozen = self._apply(params, layers, list(model.frozen))
        now_trainable = [layer["name"] for layer in layers if layer["name"] in model.frozen and layer["name"] not in frozen]
        ctx.log(f"unfrozen: {', '.join(now_trainable) or 'nothing'}; still frozen: {', '.join(frozen) or 'nothing'}")
        ctx.log_metric("trainable_params", sum(b["params"] or 0 for b in layers if b["name"] not in frozen))
        return {"model": model.with_(frozen=tuple(frozen), bn_frozen=params.freeze_batchnorm)}


class LRFinder(Node):
    """Learning-rate range test (fastai's lr_find): trains on mini-batches while raising the LR
    exponentially, until the loss blows up. Suggests an LR one order of magnitude below the one
    with the lowest (smoothed) loss; set it as the trainer's lr. The curve is drawn in the editor
    and written as lr_finder.csv / lr_finder.png beside the node's cached outputs."""

    type = "train.lr_finder"
    title = "Learning-rate finder"
    category = "Training"
    inputs = (Port("model", MODEL, "The model you are about to train"),
              Port("data", IMAGES, "Formatted images (the training split is used)"))
    outputs = (Port("result", METRICS, "suggested_lr, min_loss_lr and the loss-vs-LR curve"),)

    class Params(LRRangeSettings, NodeParams):
        pass  # the engine's range-test settings (nodes.engine.settings)

    @classmethod
    def infer(cls, params: Params, inputs, node_id: str | None = None):
        if params.end_lr <= params.start_lr:
            raise ParamProblem("end_lr must be larger than start_lr", param="end_lr")
        check_fit(inputs.get("model") or {}, inputs.get("data") or {})
        return {}

    def run(self, ctx: RunContext, params: Params, model: ModelValue, data: ImageSet) -> dict:
        from nodes.engine.fit import NothingToTrain
        from nodes.engine.lr_range import lr_range_test

        if params.end_lr <= params.start_lr:
            raise ParamProblem("end_lr must be larger than start_lr", param="end_lr")
        ctx.limits.check_batch(params.batch_size)
        check_fit(value_facts(model), data_facts(data))
        config = LRRangeConfig(**params.model_dump(), device=ctx.device)
        with engine_errors(ctx, params.batch_size):
            try:
                found = lr_range_test(model, data, config, hooks(ctx))
            except NothingToTrain as exc:
                raise ParamProblem(str(exc), port="model") from None
        if found.suggested is None:
            raise ParamProblem(f"the loss was not finite from the start (lr {params.start_lr:g}); lower start_lr",
                               param="start_lr")
        suggested, at_min = found.suggested, found.min_loss_lr
        ctx.log(f"lowest loss at lr {at_min:.3g}; suggested lr {suggested:.3g} (one order of magnitude lower)")
        ctx.log_metric("suggested_lr", suggested)
        ctx.log_metric("min_loss_lr", at_min)
        self._write_files(ctx, found.lrs, found.raw, found.smooth, suggested)
        curve = {"lr": found.lrs, "loss": found.raw, "smoothed": found.smooth}
        return {"result": Metrics({"suggested_lr": suggested, "min_loss_lr": at_min, "min_loss": min(found.smooth),
                                   "steps": float(len(found.lrs))}, {"curve": curve})}

    def estimate(self, ctx: RunContext, params: Params, model: ModelValue, data: ImageSet) -> dict:
        """``steps`` profiled training steps (at most: the sweep stops when the loss blows up)."""
        from nodes.engine.estimate import estimate_fit
        from nodes.engine.fit import NothingToTrain

        ctx.limits.check_batch(params.batch_size)
        check_fit(value_facts(model), data_facts(data))
        config = LRRangeConfig(**params.model_dump(), device=ctx.device)
        with engine_errors(ctx, params.batch_size):
            try:
                found = estimate_fit(model, data, config.fit_config(), ctx.workspace, steps=params.steps,
                                     should_stop=lambda: ctx.interrupted)
            except NothingToTrain as exc:
                raise ParamProblem(str(exc), port="model") from None
        result = found.to_json()
        result["notes"].append(f"at most {params.steps} steps (it stops when the loss blows up)")
        return result

    @staticmethod
    def _write_files(ctx: RunContext, lrs: list[float], raw: list[float], smooth: list[float], suggested: float) -> None:
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(["lr", "loss", "smoothed_loss"])
        writer.writerows(zip(lrs, raw, smooth))
        atomic_write_text(ctx.scratch / "lr_finder.csv", text.getvalue())
        png = line_plot_png({"smoothed loss": list(zip(lrs, smooth))}, "loss vs learning rate (log)",
                                 log_x=True, marker_x=suggested)
        atomic_write_bytes(ctx.scratch / "lr_finder.png", png)
        ctx.preview("lr_finder_plot", png_preview(png, f"suggested lr {suggested:.2g}"))
