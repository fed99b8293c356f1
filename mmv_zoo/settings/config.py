"""The `config: mmv_zoo:` section of a zoo entry: strict pydantic models, no heavy imports.

Every key is a field of `MmvZooSettings` except one: the settings block of the entry's framework,
named after it (`pix2pix:`, `embedseg:`, a plugin's own), validated against the model its
`FrameworkSpec` declares. Another framework's block, or any other key, is an error naming it."""

from __future__ import annotations

from functools import reduce
from operator import or_
from typing import Annotated, Any, Literal, get_args

from pydantic import ConfigDict, Field, field_validator, model_validator

from ..registry import framework_kinds
from .data import DataSettings
from .embedseg import EmbedSegLoss
from .framework import check_block, framework_spec
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

    model_config = ConfigDict(extra="allow")  # the framework's own block; every other key is refused below

    framework: str
    """Training framework: `fcn` (supervised image-to-image), `pix2pix` (paired, adversarial),
    `cyclegan` (unpaired, adversarial), `embedseg` (instances), or one a plugin registers under the
    `mmv_zoo.frameworks` entry-point group. Its own settings, if it has any, go in a block named after
    it (e.g. `pix2pix:`; defaults when missing)."""
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
    recipe: DataRecipe | None = None
    """Where the entry's public training data lives and how `mmv-zoo data pull ENTRY --out DIR`
    downloads and arranges it into `data.layout`."""
    paper: PaperResult | None = None
    """The metric the MMV_Im2Im paper reports for this experiment."""

    @model_validator(mode="before")
    @classmethod
    def _default_loss(cls, data: Any) -> Any:
        """A framework with a loss of its own (embedseg) gets it when the entry names none."""
        if isinstance(data, dict) and data.get("loss") is None and isinstance(data.get("framework"), str):
            try:
                default = framework_spec(data["framework"]).default_loss
            except (KeyError, TypeError):
                return data  # the framework field reports it
            if default is not None:
                data = {**data, "loss": {"kind": default}}
        return data

    @field_validator("framework")
    @classmethod
    def _known_framework(cls, v: str) -> str:
        known = framework_kinds()
        if v not in known:
            raise ValueError(f"unknown framework {v!r}; valid: {known}")
        try:
            framework_spec(v)
        except Exception as e:  # noqa: BLE001 - a plugin that fails to import or names no spec
            raise ValueError(f"framework {v!r} cannot be loaded ({type(e).__name__}: {str(e)[:200]})") from None
        return v

    @model_validator(mode="after")
    def _framework_block(self) -> MmvZooSettings:
        """The framework's own block validated against its settings model (all defaults when missing);
        other keys outside the fields are errors naming them."""
        extra = self.__pydantic_extra__ if self.__pydantic_extra__ is not None else {}
        spec = framework_spec(self.framework)
        kinds = framework_kinds()
        for key in list(extra):
            if key == self.framework and spec.settings is not None:
                continue
            if key in kinds:
                if extra[key] is None:  # `--set cyclegan=null`: no block
                    del extra[key]
                    continue
                own = "takes no settings block" if key == self.framework else f"is {self.framework!r}"
                raise ValueError(f"config.mmv_zoo.{key}: settings of framework {key}, but the framework {own} "
                                 f"(remove the block{'' if key == self.framework else f' or use framework: {key}'})")
            block = f", or `{self.framework}` (the framework's block)" if spec.settings is not None else ""
            raise ValueError(f"config.mmv_zoo.{key}: unknown key (valid keys: {', '.join(type(self).model_fields)}"
                             f"{block})")
        if spec.settings is not None:
            extra[self.framework] = check_block(spec, extra.get(self.framework))
        return self

    @property
    def framework_settings(self) -> Any:
        """The framework's own settings block (its spec's settings model), or None if it has none."""
        return (self.__pydantic_extra__ or {}).get(self.framework)

    def __getattr__(self, name: str) -> Any:
        """`mmv.<kind>` for any framework kind: its block when it is the entry's framework, else None."""
        try:
            return super().__getattr__(name)  # type: ignore[misc]
        except AttributeError:
            if not name.startswith("_") and name in framework_kinds():
                return None
            raise
