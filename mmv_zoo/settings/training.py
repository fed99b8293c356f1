"""Loss, optimizer, scheduler and trainer settings."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from .strict import Strict

SEGMENTATION_LOSSES = ("cross_entropy", "dice", "dice_ce")
REGRESSION_LOSSES = ("mse", "l1")


class MSELoss(Strict):
    """Mean squared error (regression)."""

    kind: Literal["mse"]


class L1Loss(Strict):
    """Mean absolute error (regression)."""

    kind: Literal["l1"]


class CrossEntropyLoss(Strict):
    """Multi-class cross-entropy on the class logits (segmentation)."""

    kind: Literal["cross_entropy"]
    class_weights: list[float] | None = None
    """One weight per output class, e.g. to up-weight a rare class."""


class DiceLoss(Strict):
    """Soft Dice over the softmax probabilities (segmentation)."""

    kind: Literal["dice"]
    include_background: bool = True


class DiceCELoss(Strict):
    """Soft Dice plus cross-entropy (segmentation)."""

    kind: Literal["dice_ce"]
    lambda_dice: float = Field(default=1.0, ge=0)
    lambda_ce: float = Field(default=1.0, ge=0)
    include_background: bool = True


LossSettings = Annotated[
    MSELoss | L1Loss | CrossEntropyLoss | DiceLoss | DiceCELoss, Field(discriminator="kind")
]


class AdamOptimizer(Strict):
    kind: Literal["adam"]
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)


class AdamWOptimizer(Strict):
    kind: Literal["adamw"]
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-2, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)


class SGDOptimizer(Strict):
    kind: Literal["sgd"]
    lr: float = Field(default=1e-2, gt=0)
    momentum: float = Field(default=0.9, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)
    nesterov: bool = False


OptimizerSettings = Annotated[
    AdamOptimizer | AdamWOptimizer | SGDOptimizer, Field(discriminator="kind")
]


class NoScheduler(Strict):
    kind: Literal["none"]


class CosineScheduler(Strict):
    """Cosine annealing over all training epochs."""

    kind: Literal["cosine"]
    min_lr: float = Field(default=0.0, ge=0)


class StepScheduler(Strict):
    """Multiply the learning rate by `gamma` every `step_size` epochs."""

    kind: Literal["step"]
    step_size: int = Field(default=10, ge=1)
    gamma: float = Field(default=0.1, gt=0)


class PlateauScheduler(Strict):
    """Reduce the learning rate when the validation loss stops improving."""

    kind: Literal["plateau"]
    factor: float = Field(default=0.5, gt=0, lt=1)
    patience: int = Field(default=5, ge=0)


SchedulerSettings = Annotated[
    NoScheduler | CosineScheduler | StepScheduler | PlateauScheduler, Field(discriminator="kind")
]


class CheckpointSettings(Strict):
    """Which checkpoints a run keeps: `best.ckpt` by `training.checkpoint_monitor`, and `last.ckpt`,
    rewritten often so that a killed run loses little (`mmv-zoo train --resume RUN` continues it)."""

    save_top_k: int = Field(default=1, ge=-1)
    """How many best checkpoints to keep (`best.ckpt`, `best-v1.ckpt`, ...; -1: all, 0: none)."""
    every_n_epochs: int = Field(default=1, ge=1)
    """Consider a best checkpoint every this many epochs (after validation)."""
    last_every_n_steps: int = Field(default=50, ge=1)
    """Rewrite `last.ckpt` every this many optimizer steps (and at every epoch end, on Ctrl-C or SIGTERM)."""


class EarlyStoppingSettings(Strict):
    """Stop when the monitored validation quantity has not improved for `patience` validations."""

    monitor: Literal["val_loss", "val_metric"] = "val_loss"
    """`val_loss` must fall, `val_metric` (Dice or Pearson r) must rise."""
    patience: int = Field(default=10, ge=1)
    """Validations without improvement before training stops."""
    min_delta: float = Field(default=0.0, ge=0)
    """Smallest change that counts as an improvement."""


class SWASettings(Strict):
    """Stochastic weight averaging (Lightning's StochasticWeightAveraging): the weights of the last
    epochs are averaged; batch-norm statistics are recomputed on the training data at the end."""

    swa_lrs: float = Field(gt=0)
    """Learning rate during the averaging phase."""
    swa_epoch_start: int | float = Field(default=0.8, gt=0)
    """Epoch where averaging starts: an epoch number (int, 1-based) or a fraction of max_epochs (0..1)."""
    annealing_epochs: int = Field(default=10, ge=1)
    """Epochs over which the learning rate moves to `swa_lrs`."""
    annealing_strategy: Literal["cos", "linear"] = "cos"

    @field_validator("swa_epoch_start")
    @classmethod
    def _fraction_or_epoch(cls, v: int | float) -> int | float:
        if isinstance(v, float) and v >= 1:
            raise ValueError(f"{v}: a fraction of max_epochs must be below 1 (or give a whole epoch number)")
        return v


class EMASettings(Strict):
    """An exponential moving average of the weights (Lightning's EMAWeightAveraging), updated after
    every optimizer step: validation, the checkpoints, predict and export use the averaged weights;
    training goes on from the raw ones. Smooths the step-to-step swings of a noisy loss (blind-spot
    training's) at no extra cost per step."""

    decay: float = Field(default=0.99, gt=0, lt=1)
    """Weight of the average at each update (0.99: about the last 100 steps). It warms up as
    min(decay, (1 + n) / (10 + n)) after n updates, so a short run is not held at its initial weights."""


STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "ddp_notebook", "fsdp")
LOGGERS = ("csv", "tensorboard", "mlflow")


class TrainingSettings(Strict):
    """How the Lightning Trainer runs."""

    max_epochs: int = Field(default=50, ge=1)
    max_time: float | None = Field(default=None, gt=0)
    """Stop after this many minutes of training (checked after each step), whatever the epoch count."""
    max_steps: int = Field(default=-1, ge=-1)
    """Stop after this many optimizer steps (-1: no limit); GAN frameworks take two per batch
    (discriminator and generator)."""
    batch_size: int = Field(default=8, ge=1)
    patches_per_image: int = Field(default=8, ge=1)
    """Random patches drawn from each training image per epoch."""
    val_patches_per_image: int | None = Field(default=None, ge=1)
    """Fixed patches of each validation image, scored after every epoch (default: half of
    `patches_per_image`, at least 2)."""

    @property
    def val_patches(self) -> int:
        """Patches per validation image."""
        return self.val_patches_per_image or max(2, self.patches_per_image // 2)
    num_workers: int = Field(default=0, ge=0)
    """Data-loader worker processes (0: load in the main process)."""
    optimizer: OptimizerSettings = AdamWOptimizer(kind="adamw")
    scheduler: SchedulerSettings = NoScheduler(kind="none")
    precision: Literal["32", "16-mixed", "bf16-mixed", "64"] = "32"
    """`16-mixed` (GPU) and `bf16-mixed` (GPU or CPU): mixed precision; `32`: full precision."""
    accelerator: Literal["auto", "cpu", "gpu", "mps"] = "auto"
    """`auto` takes a GPU when there is one."""
    devices: int | Literal["auto"] = Field(default=1)
    """Devices per node: GPUs, or CPU processes (DDP over gloo); `auto`: every GPU, else 1 CPU process."""
    num_nodes: int = Field(default=1, ge=1)
    """Machines (e.g. SLURM nodes, `srun` starting one task per device); see the README."""
    strategy: Literal[STRATEGIES] = "auto"  # type: ignore[valid-type]
    """Lightning's distribution strategy: `auto` (DDP when there is more than one device), `ddp`,
    `ddp_spawn`, `ddp_find_unused_parameters_true`, `ddp_notebook` or `fsdp`."""
    accumulate_grad_batches: int = Field(default=1, ge=1)
    """Sum the gradients of this many batches before each optimizer step (a larger effective batch)."""
    gradient_clip_val: float | None = Field(default=None, gt=0)
    """Clip gradients to this norm (or value, see gradient_clip_algorithm); none when unset."""
    gradient_clip_algorithm: Literal["norm", "value"] = "norm"
    seed: int = 0
    deterministic: bool = False
    """Use deterministic algorithms only (reproducible to the bit on the same machine, slower)."""
    check_val_every_n_epoch: int = Field(default=1, ge=1)
    checkpoint_monitor: Literal["val_loss", "val_metric", "last"] = "val_loss"
    """The quantity that picks the best checkpoint (`best.ckpt`, what predict and export use); `last`:
    the weights at the end of the latest epoch (for a validation too noisy to pick by, e.g. n2v's)."""
    checkpoint: CheckpointSettings = CheckpointSettings()
    early_stopping: EarlyStoppingSettings | None = None
    """Stop early when validation stops improving (off when unset)."""
    swa: SWASettings | None = None
    """Stochastic weight averaging (off when unset)."""
    ema: EMASettings | None = None
    """A moving average of the weights, used for validation, checkpoints and prediction (off when unset)."""
    loggers: list[Literal[LOGGERS]] = ["csv"]  # type: ignore[valid-type]
    """`csv` (always: metrics.csv and the loss curve come from it), plus `tensorboard` (extra
    `tensorboard`) and `mlflow` (extra `mlflow`; MLFLOW_TRACKING_URI, default ./mlruns)."""

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_as_text(cls, v: object) -> object:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("devices")
    @classmethod
    def _positive_devices(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError(f"{v}: at least 1 device (or auto)")
        return v

    @field_validator("loggers")
    @classmethod
    def _csv_logger(cls, v: list[str]) -> list[str]:
        if "csv" not in v:
            raise ValueError("must include csv (metrics.csv and the loss curve come from it); add tensorboard "
                             "or mlflow next to it")
        return list(dict.fromkeys(v))

    @model_validator(mode="after")
    def _validation_runs(self) -> TrainingSettings:
        if self.check_val_every_n_epoch > self.max_epochs:
            raise ValueError(f"check_val_every_n_epoch ({self.check_val_every_n_epoch}) is more than max_epochs "
                             f"({self.max_epochs}): validation would never run")
        if self.scheduler.kind == "plateau" and self.check_val_every_n_epoch != 1:
            raise ValueError("scheduler plateau follows val_loss every epoch: it needs check_val_every_n_epoch: 1")
        if self.swa is not None and isinstance(self.swa.swa_epoch_start, int) \
                and self.swa.swa_epoch_start > self.max_epochs:
            raise ValueError(f"swa.swa_epoch_start ({self.swa.swa_epoch_start}) is after max_epochs "
                             f"({self.max_epochs}): averaging would never start")
        if self.swa is not None and self.ema is not None:
            raise ValueError("ema: choose one weight average, swa or ema (both are set)")
        return self
