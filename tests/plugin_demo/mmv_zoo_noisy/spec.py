"""What validation knows of the framework (torch-free, so `mmv-zoo validate` stays fast): its own
settings block `config.mmv_zoo.noisy_fcn`, and the tasks, losses and layouts it takes (fcn's)."""

from __future__ import annotations

from pydantic import Field

from mmv_zoo.settings.framework import FCNAccepts, FrameworkSpec
from mmv_zoo.settings.strict import Strict


class NoisyFCNSettings(Strict):
    """The `noisy_fcn` block."""

    noise: float = Field(default=0.1, ge=0)
    """Standard deviation of the Gaussian noise added to each training batch (normalized units)."""
    noisy_validation: bool = False
    """Add the noise to validation batches too."""


NOISY_FCN = FrameworkSpec(
    kind="noisy_fcn",
    model="mmv_zoo_noisy.framework:NoisyFCN",
    accepts=FCNAccepts,  # the tasks, losses and layouts of fcn, which it extends
    settings=NoisyFCNSettings,
    description="FCN training on inputs with added Gaussian noise (a plugin).",
)
