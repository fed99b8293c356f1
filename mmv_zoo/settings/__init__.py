"""The `config: mmv_zoo:` section of a zoo entry: strict pydantic models, no heavy imports."""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from .base import Strict
from .data import DataSettings
from .networks import NetworkSettings
from .training import LossSettings, TrainingSettings

__all__ = ["MmvZooSettings"]


class MmvZooSettings(Strict):
    """What BioImage.IO has no field for: how the entry is trained and run."""

    framework: str
    """Training framework: `fcn` (supervised image-to-image), or one a plugin registers under the
    `mmv_zoo.frameworks` entry-point group."""
    task: Literal["segmentation", "regression"]
    """`segmentation`: per-pixel classes (outputs are class probabilities); `regression`: intensities."""
    network: NetworkSettings
    loss: LossSettings
    data: DataSettings
    training: TrainingSettings = TrainingSettings()

    @field_validator("framework")
    @classmethod
    def _known_framework(cls, v: str) -> str:
        from ..registry import frameworks

        known = frameworks()
        if v not in known:
            raise ValueError(f"unknown framework {v!r}; valid: {sorted(known)}")
        return v
