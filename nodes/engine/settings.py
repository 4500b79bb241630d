"""The settings of a training and of the learning-rate range test, each declared once, with its
bounds and the help the editor shows: the trainer's and the learning-rate finder's ``Params``
extend these models (adding only what is theirs: the launch, the loss), and the engine's configs
extend them with what a node resolves when it runs (the device, the worker count).

The models here are lenient (a tuple fills a list, an integer a float); a node's ``Params`` adds
the node API's strict JSON types on top."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: the optimisers ``optim.make_optimizer`` builds
OptimizerName = Literal["sgd", "adam", "adamw", "rmsprop", "adabound"]
Momentum = Annotated[float, Field(ge=0, lt=1, description="Momentum (SGD only)")]
WeightDecay = Annotated[float, Field(ge=0, le=1, description="L2 weight decay")]
BatchSize = Annotated[int, Field(ge=1, le=4096, description="Images per step")]


class TrainingSettings(BaseModel):
    """What one training does (``fit``): not where or on how many processes it runs."""

    model_config = ConfigDict(extra="forbid")

    optimizer: OptimizerName = Field(
        "rmsprop", description="Optimisation algorithm (adabound: Adam that turns into SGD as its bounds tighten)")
    lr: float = Field(2e-5, gt=0, le=10, description="Learning rate")
    momentum: Momentum = 0.9
    weight_decay: WeightDecay = 0.0
    epochs: int = Field(30, ge=1, le=10_000, description="Passes over the training split")
    batch_size: BatchSize = 20
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing of the loss")
    schedule: Literal["none", "cosine", "step", "onecycle", "sgdr"] = Field(
        "none", description="Learning-rate schedule (sgdr: cosine annealing with warm restarts)")
    step_size: int = Field(10, ge=1, description="Epochs between LR drops (step schedule)")
    gamma: float = Field(0.1, gt=0, le=1, description="LR factor at each drop (step schedule)")
    head_lr_mult: float = Field(1.0, gt=0, le=1000, description=(
        "Learning-rate multiplier for the layers after the backbone (the new head)"))
    early_stopping: int = Field(0, ge=0, description=(
        "Stop after this many epochs without a lower validation loss and keep the best weights (0: off)"))
    stop_at_accuracy: float = Field(0.0, ge=0, le=1, description=(
        "Stop after the first epoch whose validation accuracy reaches this (0: off); the time to a target "
        "accuracy, as DAWNBench measures it"))
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


class FitConfig(TrainingSettings):
    """Everything ``fit`` needs to know: the training settings, the device to run on and the
    number of decoding workers as resolved for this machine (0: in the training process)."""

    model_config = ConfigDict(frozen=True)

    workers: int = Field(0, ge=0, description="Decoding threads or worker processes (0: none)")
    device: str = "auto"

    def record(self) -> dict[str, Any]:
        """The config as JSON, kept in checkpoints and job files to say what they came from."""
        return self.model_dump(mode="json")

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> FitConfig:
        """The config that :meth:`record` wrote."""
        return cls.model_validate(record)


class LRRangeSettings(BaseModel):
    """What one learning-rate range test (``lr_range.lr_range_test``) does."""

    model_config = ConfigDict(extra="forbid")

    start_lr: float = Field(1e-7, gt=0, le=1, description="First learning rate tried")
    end_lr: float = Field(10.0, gt=0, le=1000, description="Last learning rate tried (if the loss has not blown up)")
    steps: int = Field(100, ge=5, le=10_000, description="Mini-batches in the sweep")
    diverge: float = Field(4.0, gt=1, le=100, description=(
        "Stop when the smoothed loss exceeds this many times its minimum"))
    smoothing: float = Field(0.9, ge=0, lt=1, description="Exponential smoothing of the loss (0: none)")
    optimizer: OptimizerName = Field("adam", description="Optimiser to sweep (use the trainer's)")
    momentum: Momentum = 0.9
    weight_decay: WeightDecay = 0.0
    head_lr_mult: float = Field(1.0, gt=0, le=1000, description="Head LR multiplier, as in the trainer")
    batch_size: BatchSize = 20
    seed: int = Field(0, ge=0, description="Seed of weight init and data order")


class LRRangeConfig(LRRangeSettings):
    """The range test's settings with the device and the decoding workers of this machine."""

    model_config = ConfigDict(frozen=True)

    device: str = "auto"
    workers: int = Field(0, ge=0, description="Decoding threads or worker processes (0: none)")

    def fit_config(self) -> FitConfig:
        """The training the test is made of, for ``plan_fit``: a base learning rate of 1 that the
        sweep scales, in full precision."""
        return FitConfig(batch_size=self.batch_size, optimizer=self.optimizer, lr=1.0, momentum=self.momentum,
                         weight_decay=self.weight_decay, head_lr_mult=self.head_lr_mult, seed=self.seed,
                         device=self.device, mixed_precision=False, workers=self.workers)
