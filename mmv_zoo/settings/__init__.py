"""The `config: mmv_zoo:` section of a zoo entry: strict pydantic models, no heavy imports."""

from __future__ import annotations

from functools import reduce
from operator import or_
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, field_validator, model_validator

from .data import DataSettings
from .embedseg import EmbedSegLoss, EmbedSegSettings, fill_embedseg_defaults
from .gan import CycleGANSettings, Pix2PixSettings, fill_gan_defaults
from .networks import NetworkSettings
from .recipe import DataRecipe, PaperResult
from .strict import Strict
from .training import LossSettings, TrainingSettings

__all__ = ["MmvZooSettings"]

AnyLoss = Annotated[reduce(or_, (*get_args(get_args(LossSettings)[0]), EmbedSegLoss)), Field(discriminator="kind")]
"""Every loss kind: the supervised ones (`training.LossSettings`) and the instance loss of embedseg."""


class PretrainedSettings(Strict):
    """Pretrained weights: a BioImage.IO model package this entry was trained into, or a checkpoint of
    the MMV_Im2Im toolbox (e.g. a file inside the archive the paper deposited on Zenodo)."""

    source: str
    """The file: a path relative to the entry folder, an https URL, or a Zenodo DOI (10.5281/zenodo.N).
    With `member` it is an archive (.zip, .tar[.gz]) holding the weights."""
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    """sha256 of the downloaded file (the archive when `member` is set); when missing, the first pull
    records it (trust on first use) and later pulls require it."""
    file: str | None = None
    """For a DOI with several files: the file name in the record, e.g. models.zip."""
    member: str | None = None
    """Path of the weights inside the archive `source`, e.g. models/denoising/planaria.ckpt: only that
    file is extracted (into the cache, next to the archive)."""
    format: Literal["bioimageio", "mmv_im2im_checkpoint"] = "bioimageio"
    """`bioimageio`: a BioImage.IO model package (.zip); `mmv_im2im_checkpoint`: a PyTorch Lightning
    checkpoint of the MMV_Im2Im toolbox (network under `net.`), loaded with weights_only=True into the
    network this entry declares, which must match it key for key."""
    metrics: dict[str, float] = {}
    """Validation metrics of the published run, e.g. {val_loss: 0.09, holdout_f1: 0.972}."""
    trained_on: str | None = None
    """What the weights were trained on (data, epochs, hardware)."""

    @field_validator("member")
    @classmethod
    def _relative_member(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = v.split("/")
        if (not v or v.startswith("/") or "\\" in v or ":" in parts[0] or v.endswith("/")
                or any(p in ("", ".", "..") for p in parts)):
            raise ValueError(f"{v!r} must be a relative path of a file inside the archive, with / between "
                             "folders and no '.', '..' or empty parts (e.g. models/denoising/planaria.ckpt)")
        return v


class MmvZooSettings(Strict):
    """What BioImage.IO has no field for: how the entry is trained and run."""

    framework: str
    """Training framework: `fcn` (supervised image-to-image), `pix2pix` (paired, adversarial),
    `cyclegan` (unpaired, adversarial), or one a plugin registers under the `mmv_zoo.frameworks`
    entry-point group."""
    task: Literal["segmentation", "regression", "instance"]
    """`segmentation`: per-pixel classes (outputs are class probabilities); `regression`: intensities;
    `instance`: objects with their own ids (framework embedseg: outputs are spatial embeddings,
    prediction writes label images)."""
    network: NetworkSettings
    loss: AnyLoss
    data: DataSettings
    training: TrainingSettings = TrainingSettings()
    pretrained: PretrainedSettings | None = None
    """Pretrained weights, so `mmv-zoo predict ENTRY IMAGE` works without training."""
    pix2pix: Pix2PixSettings | None = None
    """Framework pix2pix only: discriminator, adversarial loss, loss weights, `init_from`."""
    cyclegan: CycleGANSettings | None = None
    """Framework cyclegan only: discriminators, adversarial loss, cycle and identity weights, image pool."""
    recipe: DataRecipe | None = None
    """Where the entry's public training data lives and how `mmv-zoo data pull ENTRY --out DIR`
    downloads and arranges it into `data.layout`."""
    paper: PaperResult | None = None
    """The metric the MMV_Im2Im paper reports for this experiment."""
    embedseg: EmbedSegSettings | None = None
    """Framework embedseg only: clustering (seed threshold, minimum size), sigma channels, loss weights,
    centre kind and patch sampling."""

    @model_validator(mode="before")
    @classmethod
    def _gan_block(cls, data: Any) -> Any:
        return fill_embedseg_defaults(fill_gan_defaults(data))

    @field_validator("framework")
    @classmethod
    def _known_framework(cls, v: str) -> str:
        from ..registry import frameworks

        known = frameworks()
        if v not in known:
            raise ValueError(f"unknown framework {v!r}; valid: {sorted(known)}")
        return v
