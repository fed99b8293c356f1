"""What validation knows of the framework (torch-free, so `mmv-zoo validate` stays fast): its own
settings block `config.mmv_zoo.noisy_fcn`, and the tasks, losses and layouts it takes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mmv_zoo.settings.framework import Accepts, FrameworkSpec
from mmv_zoo.settings.strict import Strict


class NoisyFCNSettings(Strict):
    """The `noisy_fcn` block."""

    noise: float = Field(default=0.1, ge=0)
    """Standard deviation of the Gaussian noise added to each training batch (normalized units)."""
    noisy_validation: bool = False
    """Add the noise to validation batches too."""


class NoisyFCNAccepts(Accepts):
    task: Literal["segmentation", "regression"]
    loss: Literal["cross_entropy", "dice", "dice_ce", "mse", "l1"]
    layout: Literal["paired_folders", "csv"]


NOISY_FCN = FrameworkSpec(
    kind="noisy_fcn",
    model="mmv_zoo_noisy.framework:NoisyFCN",
    accepts=NoisyFCNAccepts,
    settings=NoisyFCNSettings,
    description="FCN training on inputs with added Gaussian noise (a plugin).",
)
