"""Cost preview: how long a training or a scoring pass will take, and how much memory it needs,
before it runs.

The numbers come from a few batches of the real data through the real network, timed and thrown
away, combined with what the workspace's caches already hold. A training is priced from its plan
(``fit.plan_fit``, the one ``fit`` executes), which says for each split:

- whether the decode cache (``pipeline.decoded_entry``) holds it: without it the first epoch
  decodes every image (a random resized crop decodes every epoch);
- whether the frozen-prefix feature cache (``feature_cache.feature_key``) holds it: then every
  epoch trains only the trainable rest on the prefix's outputs ("feature cache: hit"); when the
  trainer would build them, the first epoch runs the prefix over the split once (per augmented
  copy) and the later epochs train on the cache;

and whether an epoch checkpoint follows every epoch.

Nothing of the caller's is changed: the network is a fresh copy built from the model value (its
weights are copied into it), the optimizer steps only that copy, the global random state is put
back afterwards, and no cache entry is written (the probe's images live in memory only).

Timed batches: one warm-up batch (first-call allocations, cuDNN autotuning), then up to
``PROBE_BATCHES`` timed ones, fewer when a measurement has used up ``TIME_BUDGET`` seconds.
Per-batch times scale with the number of images (a split of N images at batch size B costs N/B
batches); the prefix's cost is per image.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` over the profiled steps plus the data the
run keeps on the GPU; on the CPU, which has no allocator counter, an estimate: weights, gradients,
the optimizer's state (measured after the probe's steps), one batch's activations (summed from
forward hooks) and the cached data the run keeps in memory. ``memory_method`` says which.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nodes.engine.device import Device, resolve_device
from nodes.engine.feature_cache import FeatureSet, cache_cut, features_cached, prefix_digest, tail
from nodes.engine.fit import FitConfig, plan_fit
from nodes.engine.hooks import Stopped
from nodes.engine.images import load_rgb, make_transform
from nodes.engine.loop import evaluate, frozen_prefix, network, resolve_spec, set_mode, train_one_epoch
from nodes.engine.pipeline import decoded_cached, default_format
from nodes.engine.values import ImageSet, ModelValue

#: timed batches per measurement, after one warm-up batch
PROBE_BATCHES = 2
#: seconds one measurement may take before it stops timing more batches (one is always timed)
TIME_BUDGET = 20.0
#: cheap calls (a head on cached features) are repeated until this many seconds are timed, at most
#: MAX_CALLS times: one sub-millisecond sample says little on a busy machine
MIN_TIMED_SECONDS = 0.5
MAX_CALLS = 30

CUDA_METHOD = "CUDA max_memory_allocated over the profiled steps, plus the data kept on the GPU"
CPU_METHOD = ("estimate (no CPU allocator counter): weights + gradients + optimizer state + one batch's "
              "activations + cached data in memory")


@dataclass
class Estimate:
    """What a node will cost: seconds per epoch (the first may differ: it builds caches), epochs,
    total seconds, peak memory and where it runs."""

    device: str
    seconds: float
    epochs: int | None = None
    first_epoch_seconds: float | None = None
    epoch_seconds: float | None = None
    peak_memory_bytes: int = 0
    memory_method: str = ""
    feature_cache: str = ""
    notes: list[str] = field(default_factory=list)
    timed_batches: int = 0
    setup_seconds: float = 0.0  # part of the first epoch: building the network, hashing its prefix

    def to_json(self) -> dict[str, Any]:
        def r(value: float | None) -> float | None:
            return None if value is None else round(float(value), 3)

        return {"device": self.device, "seconds": r(self.seconds), "epochs": self.epochs,
                "first_epoch_seconds": r(self.first_epoch_seconds), "epoch_seconds": r(self.epoch_seconds),
                "peak_memory_bytes": int(self.peak_memory_bytes), "memory_method": self.memory_method,
                "feature_cache": self.feature_cache, "notes": list(self.notes), "timed_batches": self.timed_batches,
                "setup_seconds": r(self.setup_seconds)}


# -- measuring -----------------------------------------------------------------------------------


def _sync(device: Device) -> None:
    if device.is_cuda:
        torch.cuda.synchronize(device.torch)


def _timed(fn: Callable[[Any], Any], batches: list[Any], device: Device, should_stop: Callable[[], bool],
           budget: float = TIME_BUDGET) -> tuple[float, int]:
    """Seconds one call of ``fn`` takes (the mean of the timed calls after a warm-up call: a real
    run meets the same hiccups), and how many calls were timed. With a single batch, the warm-up
    batch is timed again; cheap calls go round the timed batches until MIN_TIMED_SECONDS."""
    fn(batches[0])
    _sync(device)
    timed = batches[1:1 + PROBE_BATCHES] or batches[:1]
    times: list[float] = []
    while True:
        if should_stop():
            raise Stopped("stopped while estimating")
        started = time.perf_counter()
        fn(timed[len(times) % len(timed)])
        _sync(device)
        times.append(time.perf_counter() - started)
        total = sum(times)
        if total > budget or (len(times) >= len(timed) and (total >= MIN_TIMED_SECONDS or len(times) >= MAX_CALLS)):
            break
    return statistics.fmean(times), len(times)


def _probe_images(data: ImageSet, split: str, count: int, train: bool,
                  should_stop: Callable[[], bool]) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The first ``count`` images of a split through the split's own transform, their labels, and
    the seconds per image of reading, decoding and transforming them (what decoding costs)."""
    transform = make_transform(data.format, data.augment, train=train)
    items = list(data.split(split))[:count]
    started = time.perf_counter()
    tensors = []
    for path, _ in items:
        if should_stop():
            raise Stopped("stopped while estimating")
        tensors.append(transform(load_rgb(path)))
    per_image = (time.perf_counter() - started) / max(1, len(items))
    return torch.stack(tensors), torch.tensor([label for _, label in items], dtype=torch.long), per_image


def _chunks(images: torch.Tensor, labels: torch.Tensor, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(images[i:i + size], labels[i:i + size]) for i in range(0, len(images), size)]


class _Activations:
    """Sums the bytes of every leaf module's output during one forward pass: what backward keeps."""

    def __init__(self, net: nn.Module) -> None:
        self.bytes = 0
        self.largest = 0
        leaves = [m for m in net.modules() if next(m.children(), None) is None]
        self.handles = [m.register_forward_hook(self._hook) for m in leaves]

    def _hook(self, module: nn.Module, args: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            size = out.numel() * out.element_size()
            self.bytes += size
            self.largest = max(self.largest, size)

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def _param_bytes(net: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() * p.element_size() for p in net.parameters() if p.requires_grad or not trainable_only)


def _optimizer_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(v.numel() * v.element_size() for state in optimizer.state.values() for v in state.values()
               if isinstance(v, torch.Tensor))


def _shape_bytes(data: ImageSet, split: str) -> int:
    """uint8 bytes the decode cache keeps for a split (the formatted size; a lower bound when the
    crop happens per epoch)."""
    fmt = default_format(data.format)
    return len(data.split(split)) * 3 * fmt["height"] * fmt["width"]


@dataclass
class _Profile:
    """Per-image and per-batch seconds of the pieces a training or scoring pass is made of."""

    batch: int  # images per probe batch
    decode: float  # seconds per image: read, decode, transform
    prefix: float  # seconds per image through the cached prefix (0 without one)
    step: float  # seconds per training step of the part that trains (on features with a prefix)
    evaluate: float  # seconds per inference batch of the part after the prefix
    feature_bytes: int  # bytes per image of the prefix's outputs, fp16
    activation_bytes: int
    optimizer_bytes: int
    cuda_peak: int
    timed: int
    optimizer: Any = None


def _profile(net: nn.Sequential, cut: int, model: ModelValue, data: ImageSet, device: Device, batch_size: int,
             should_stop: Callable[[], bool], train: bool, optimizer: torch.optim.Optimizer | None = None,
             teacher: nn.Module | None = None) -> _Profile:
    """Time the prefix per image (at the batch size the cache is built with), a training step of
    what trains (when an ``optimizer`` of ``net`` is given) and an inference batch of what follows the
    prefix, through the loop's own ``train_one_epoch`` and ``evaluate`` on batches fetched as the
    loop fetches them (from a feature set of the prefix's fp16 outputs when there is a prefix), on
    the first images of the training split (or of the first split with images when scoring)."""
    split = "train" if train else next(s for s in data.splits if data.split(s))
    count = min(len(data.split(split)), max(batch_size, 32) * (1 + PROBE_BATCHES))
    images, labels, decode = _probe_images(data, split, count, train, should_stop)
    blocks = list(net.children())
    prefix_blocks, body = blocks[:cut], tail(net, cut) if cut else net
    timed = 0
    if device.is_cuda:
        torch.cuda.reset_peak_memory_stats(device.torch)
    prefix_seconds, feature_bytes = 0.0, 0
    if cut:
        for block in prefix_blocks:
            block.eval()
        chunks = _chunks(images, labels, max(batch_size, 32))  # as feature_cache builds its entries
        outputs: dict[int, torch.Tensor] = {}

        @torch.inference_mode()
        def run_prefix(chunk):
            out = device.batch(chunk[0])
            with device.autocast():
                for block in prefix_blocks:
                    out = block(out)
            outputs[id(chunk)] = out.to("cpu", torch.float16)

        per_chunk, n = _timed(run_prefix, chunks, device, should_stop)
        timed += n
        prefix_seconds = per_chunk / len(chunks[min(1, len(chunks) - 1)][0])
        done = [c for c in chunks if id(c) in outputs]
        rows = torch.cat([outputs[id(c)] for c in done])
        feature_set = FeatureSet(rows.unsqueeze(0), torch.cat([c[1] for c in done]), device.torch, "probe")
        feature_bytes = int(np.prod(rows.shape[1:])) * 2
        loaders: list[Callable[[], list]] = [
            (lambda index=torch.arange(i, min(i + batch_size, len(rows))): [feature_set.fetch(index)])
            for i in range(0, len(rows), batch_size)]
    else:
        loaders = [(lambda batch=batch: [batch]) for batch in _chunks(images, labels, batch_size)]
    batch = min(batch_size, count)
    step_seconds, optimizer_bytes, activation_bytes = 0.0, 0, 0
    loss_fn = nn.CrossEntropyLoss()
    if optimizer is not None:
        scaler = torch.amp.GradScaler(device.torch.type) if device.needs_scaler else None
        no_grad = 0 if cut else frozen_prefix(net, model.frozen)
        set_mode(net, True, model.frozen, model.bn_frozen)
        activations = _Activations(body)

        def step(loader):
            train_one_epoch(body, loader(), optimizer, loss_fn, device, no_grad, scaler, None, lambda loss: None)
            activations.close()  # the first pass is the one counted

        try:
            step_seconds, n = _timed(step, loaders, device, should_stop)
        finally:
            activations.close()
        timed += n
        optimizer_bytes = _optimizer_bytes(optimizer)
        activation_bytes = activations.bytes
        if teacher is not None:  # distillation: the teacher sees every training batch's images

            @torch.inference_mode()
            def teach(chunk):
                with device.autocast():
                    teacher(device.batch(chunk[0]))

            teacher_seconds, n = _timed(teach, _chunks(images, labels, batch_size), device, should_stop)
            step_seconds += teacher_seconds
            timed += n

    def infer(loader):
        evaluate(body, loader(), loss_fn, device)

    eval_seconds, n = _timed(infer, loaders, device, should_stop)
    timed += n
    peak = torch.cuda.max_memory_allocated(device.torch) if device.is_cuda else 0
    return _Profile(batch, decode, prefix_seconds, step_seconds, eval_seconds, feature_bytes, activation_bytes,
                    optimizer_bytes, peak, timed, optimizer)


def _device_name(device: Device) -> str:
    if device.is_cuda:
        return f"{device.torch} ({torch.cuda.get_device_name(device.torch)})"
    return str(device.torch)


def _memory(device: Device, net: nn.Module, profile: _Profile, data_bytes: int) -> tuple[int, str]:
    if device.is_cuda:  # the profiled peak, plus the cached data the run keeps on the device
        return profile.cuda_peak + data_bytes, CUDA_METHOD
    weights = _param_bytes(net)
    grads = _param_bytes(net, trainable_only=True) if profile.optimizer_bytes or profile.step else 0
    return weights + grads + profile.optimizer_bytes + profile.activation_bytes + data_bytes, CPU_METHOD


# -- training --------------------------------------------------------------------------------------


def estimate_fit(model: ModelValue, data: ImageSet, config: FitConfig, workspace: Path,
                 teacher: ModelValue | None = None, should_stop: Callable[[], bool] = lambda: False,
                 steps: int | None = None, checkpoints: bool = False) -> Estimate:
    """The cost of ``fit(model, data, config)``: its plan (``plan_fit``) priced with profiled
    batches: seconds of the first and of the later epochs, the total over ``config.epochs``, peak
    memory and device. ``checkpoints``: the run writes an epoch checkpoint after every epoch (the
    trainer node's does); one is written to a temporary folder, timed and deleted. ``steps`` instead
    estimates that many training steps without validation (the learning-rate finder)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return _estimate_fit(model, data, config, Path(workspace), teacher, should_stop, steps, checkpoints)


def _checkpoint_seconds(net: nn.Module, optimizer: Any, frozen: tuple[str, ...]) -> float:
    """Seconds to write one epoch checkpoint of this network (its ``frozen`` blocks left out, as
    fit leaves them out) and optimizer, to a temporary folder."""
    import tempfile

    from nodes.engine.checkpoint import save_checkpoint

    with tempfile.TemporaryDirectory(prefix="nodeflow-estimate-") as folder:
        started = time.perf_counter()
        save_checkpoint(Path(folder) / "last.safetensors", epoch=1, model=net, optimizer=optimizer, scheduler=None,
                        config={}, history=[], generator=None, extra={}, frozen=frozen)
        return time.perf_counter() - started


def _estimate_fit(model: ModelValue, data: ImageSet, config: FitConfig, workspace: Path, teacher: ModelValue | None,
                  should_stop: Callable[[], bool], steps: int | None, checkpoints: bool) -> Estimate:
    started = time.perf_counter()
    plan = plan_fit(model, data, config, workspace, teacher, checkpoints=checkpoints and steps is None,
                    validation=steps is None)
    setup = time.perf_counter() - started  # the trainer plans too: builds the network, hashes its prefix
    device, train, scored = plan.device, plan.train, plan.validation
    teacher_net = device.prepare(network(teacher, len(data.classes))).eval() if teacher is not None else None
    profile = _profile(plan.net, plan.cache.cut, model, data, device, config.batch_size, should_stop, train=True,
                       optimizer=plan.optimizer(), teacher=teacher_net)
    batch = profile.batch
    prefix_per_batch = profile.prefix * batch
    # what one batch costs in each path: on cached features, or through the prefix (no grad) and the rest
    step = profile.step if train.features else profile.step + prefix_per_batch
    notes: list[str] = []
    # the first epoch builds what the plan finds missing: decoded images, the prefix's outputs
    splits = [s for s in (train, scored) if s is not None]
    first = setup + sum(s.decoded_first * profile.decode + s.prefix_first * profile.prefix for s in splits)
    per_epoch = train.images / batch * step + train.decoded_each_epoch * profile.decode
    if train.decoded_each_epoch:
        notes.append("images are decoded every epoch (random resized crop)")
    if scored is not None:
        scoring = profile.evaluate if scored.features else profile.evaluate + prefix_per_batch
        per_epoch += scored.images / batch * scoring
    if train.features:
        cache_state = "hit" if train.features_cached else "built in the first epoch"
    else:
        cache_state = f"off: {plan.cache.reason}" if plan.cache.cut or plan.cache.reason else ""
    if plan.checkpoints:
        saving = _checkpoint_seconds(plan.net, profile.optimizer, model.frozen)
        per_epoch += saving
        notes.append(f"an epoch checkpoint takes {saving:.2f} s to write")
    data_bytes = sum(s.images * s.copies * profile.feature_bytes if s.features else _shape_bytes(data, s.name)
                     for s in splits)
    peak, method = _memory(device, plan.net, profile, data_bytes)
    if steps is not None:  # the learning-rate finder: ``steps`` batches, no epochs
        return Estimate(_device_name(device), first + steps * step, None, None, None, peak, method, cache_state,
                        notes, profile.timed, setup)
    first += per_epoch
    epochs = config.epochs
    if config.early_stopping:
        notes.append(f"at most {epochs} epochs (early stopping may end it sooner)")
    if config.stop_at_accuracy:
        notes.append(f"at most {epochs} epochs (reaching validation accuracy {config.stop_at_accuracy:g} ends it sooner)")
    seconds = first + (epochs - 1) * per_epoch
    return Estimate(_device_name(device), seconds, epochs, first, per_epoch, peak, method, cache_state,
                    notes, profile.timed, setup)


# -- scoring passes (evaluate, CNN codes, error analysis, doctor) ----------------------------------


def estimate_pass(model: ModelValue, data: ImageSet, splits: list[str], batch_size: int, workspace: Path,
                  device_name: str = "auto", backward_images: int = 0,
                  should_stop: Callable[[], bool] = lambda: False) -> Estimate:
    """The cost of one inference pass of ``model`` over ``splits`` through the shared data path
    (decode cache, frozen-prefix feature cache), plus ``backward_images`` single-image forward and
    backward passes through the whole network (Grad-CAM), counted as three forward passes each."""
    with torch.random.fork_rng(devices=[]):
        return _estimate_pass(model, data, splits, batch_size, Path(workspace), device_name, backward_images,
                              should_stop)


def _estimate_pass(model: ModelValue, data: ImageSet, splits: list[str], batch_size: int, workspace: Path,
                   device_name: str, backward_images: int, should_stop: Callable[[], bool]) -> Estimate:
    device = resolve_device(device_name)
    classes = len(model.classes) or len(data.classes)
    net = device.prepare(network(model, classes)).eval()
    cut = cache_cut(net, model.frozen)
    digest = prefix_digest(net, cut) if cut else ""
    shape = list(resolve_spec(model.spec, classes)["input_shape"])
    splits = [s for s in splits if data.split(s)]
    if not splits:
        return Estimate(_device_name(device), 0.0, notes=["no images to score"])
    profile = _profile(net, cut, model, data.with_(splits={s: data.split(s) for s in splits}), device, batch_size,
                       should_stop, train=False)
    batch = profile.batch
    seconds, hits = 0.0, []
    for split in splits:
        n = len(data.split(split))
        hit = bool(cut) and features_cached(digest, data, split, shape, device, workspace)
        hits.append(hit)
        if not hit and not decoded_cached(data, split, False, workspace):
            seconds += n * profile.decode
        if cut and not hit:
            seconds += n * profile.prefix
        seconds += n / batch * profile.evaluate
    notes = []
    if backward_images:
        seconds += backward_images * 3 * (profile.prefix + profile.evaluate / batch + profile.decode)
        notes.append(f"{backward_images} Grad-CAM passes counted as 3 forward passes each")
    cache_state = ("hit" if all(hits) else "built in this pass" if not any(hits) else "partly cached") if cut else ""
    data_bytes = sum(len(data.split(s)) for s in splits) * profile.feature_bytes if cut else \
        sum(_shape_bytes(data, s) for s in splits)
    peak, method = _memory(device, net, profile, data_bytes)
    return Estimate(_device_name(device), seconds, None, None, None, peak, method, cache_state, notes, profile.timed)
