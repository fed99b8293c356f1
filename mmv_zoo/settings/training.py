"""Loss, optimizer, scheduler and trainer settings."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from .base import Strict

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
    num_workers: int = Field(default=0, ge=0)
    """Data-loader worker processes (0: load in the main process)."""
    optimizer: OptimizerSettings = AdamWOptimizer(kind="adamw")
    scheduler: SchedulerSettings = NoScheduler(kind="none")
    precision: Literal["32", "16-mixed", "bf16-mixed", "64"] = "32"
    accelerator: Literal["auto", "cpu", "gpu", "mps"] = "auto"
    """`auto` takes a GPU when there is one."""
    devices: int | Literal["auto"] = 1
    seed: int = 0
    check_val_every_n_epoch: int = Field(default=1, ge=1)
    checkpoint_monitor: Literal["val_loss", "val_metric"] = "val_loss"
    """The quantity that picks the best checkpoint."""

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_as_text(cls, v: object) -> object:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @model_validator(mode="after")
    def _validation_runs(self) -> TrainingSettings:
        if self.check_val_every_n_epoch > self.max_epochs:
            raise ValueError(f"check_val_every_n_epoch ({self.check_val_every_n_epoch}) is more than max_epochs "
                             f"({self.max_epochs}): validation would never run")
        if self.scheduler.kind == "plateau" and self.check_val_every_n_epoch != 1:
            raise ValueError("scheduler plateau follows val_loss every epoch: it needs check_val_every_n_epoch: 1")
        return self
