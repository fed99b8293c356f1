"""The `config: mmv_zoo:` section of a zoo entry: strict pydantic models, no heavy imports."""

from __future__ import annotations

from typing import Literal

from .base import Strict
from .data import DataSettings
from .networks import NetworkSettings
from .training import LossSettings, TrainingSettings

__all__ = ["MmvZooSettings"]


class MmvZooSettings(Strict):
    """What BioImage.IO has no field for: how the entry is trained and run."""

    framework: Literal["fcn"]
    """Training framework: `fcn` (supervised image-to-image)."""
    task: Literal["segmentation", "regression"]
    """`segmentation`: per-pixel classes (outputs are class probabilities); `regression`: intensities."""
    network: NetworkSettings
    loss: LossSettings
    data: DataSettings
    training: TrainingSettings = TrainingSettings()
