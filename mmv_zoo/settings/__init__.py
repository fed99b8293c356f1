"""The `config: mmv_zoo:` section of a zoo entry: strict pydantic models, no heavy imports."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from .base import Strict
from .data import DataSettings
from .networks import NetworkSettings
from .training import LossSettings, TrainingSettings

__all__ = ["MmvZooSettings"]


class PretrainedSettings(Strict):
    """Pretrained weights: a BioImage.IO model package this entry was trained into."""

    source: str
    """The package: a path relative to the entry folder, an https URL, or a Zenodo DOI (10.5281/zenodo.N)."""
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    """sha256 of the package file; when missing, the first pull records it (trust on first use)."""
    file: str | None = None
    """For a DOI with several files: the file name of the package in the record."""
    metrics: dict[str, float] = {}
    """Validation metrics of the published run, e.g. {val_loss: 0.09, holdout_f1: 0.972}."""
    trained_on: str | None = None
    """What the weights were trained on (data, epochs, hardware)."""


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
    pretrained: PretrainedSettings | None = None
    """Pretrained weights, so `mmv-zoo predict ENTRY IMAGE` works without training."""

    @field_validator("framework")
    @classmethod
    def _known_framework(cls, v: str) -> str:
        from ..registry import frameworks

        known = frameworks()
        if v not in known:
            raise ValueError(f"unknown framework {v!r}; valid: {sorted(known)}")
        return v
