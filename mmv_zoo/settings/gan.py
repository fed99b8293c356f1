"""Settings of the GAN frameworks: the `config.mmv_zoo.pix2pix` and `config.mmv_zoo.cyclegan` blocks,
their rules that span sections, and the two frameworks' specs.

Each block is validated only next to its framework (another framework's block in an entry is an
error); when the framework's block is missing, its defaults are used. What the GANs take from the
other sections (task regression, l1 or mse, paired or unpaired layouts) is declared in their
`Accepts` types; the rules here cover the rest (discriminator vs patch size, identity terms vs
channels). Each message starts with the field it concerns.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from .framework import Accepts, FrameworkSpec
from .strict import Strict
from .training import OptimizerSettings


class PatchGANSettings(Strict):
    """PatchGAN discriminator (Isola et al. 2017): a fully convolutional real/fake classifier of
    overlapping patches; 2D or 3D like the entry."""

    kind: Literal["patchgan"] = "patchgan"
    channels: int = Field(default=64, ge=1)
    """Feature channels of the first layer; doubled at each level, at most 8x."""
    depth: int = Field(default=3, ge=1, le=6)
    """Number of stride-2 convolutions (the patch a score sees grows with it: 70 px for depth 3)."""
    norm: Literal["instance", "batch", "none"] = "instance"
    """Normalization after each convolution but the first and the last."""
    anisotropic_z: bool = False
    """3D only: never downsample z (kernel 3 along z), for stacks with few slices."""

    def output_size(self, patch: list[int]) -> list[int]:
        """Score-map size for an input of size `patch` ([y, x] or [z, y, x]); < 1 means too small."""
        out = []
        for axis, n in enumerate(patch):
            if self.anisotropic_z and len(patch) == 3 and axis == 0:
                out.append(n)  # kernel 3, stride 1, padding 1 keeps z
                continue
            for _ in range(self.depth):
                n = (n + 2 - 4) // 2 + 1 if n >= 2 else 0
            out.append(n - 2)  # two kernel-4, stride-1 convolutions
        return out


AdversarialKind = Literal["vanilla", "lsgan", "hinge"]


class _GANSettings(Strict):
    discriminator: PatchGANSettings = PatchGANSettings()
    adversarial: AdversarialKind = "lsgan"
    """Adversarial loss: `vanilla` (binary cross-entropy on logits), `lsgan` (least squares) or `hinge`."""
    adversarial_weight: float = Field(default=1.0, ge=0)
    """Weight of the generator's adversarial term."""
    discriminator_optimizer: OptimizerSettings | None = None
    """Optimizer of the discriminator(s); default: the same settings as `training.optimizer` (the
    generators')."""
    sample_every: int = Field(default=5, ge=1)
    """Write a PNG grid of validation samples (input | output | target) into the run folder's
    `samples/` every this many epochs (and after the last)."""
    samples: int = Field(default=4, ge=1, le=16)
    """Rows of that grid (validation patches shown)."""


class Pix2PixSettings(_GANSettings):
    """pix2pix (Isola et al. 2017): the entry's network is the generator, trained against a PatchGAN
    discriminator plus the entry's `loss` (l1 or mse) as a weighted reconstruction term."""

    conditional: bool = True
    """The discriminator sees the input next to the real or generated output (pix2pix); false: the
    output alone."""
    reconstruction_weight: float = Field(default=100.0, ge=0)
    """Weight of the reconstruction term (`config.mmv_zoo.loss`) in the generator's loss."""
    init_from: str | None = None
    """A trained run (folder or .ckpt) whose network starts the generator, e.g. an fcn run of the same
    network (the paper's best labelfree recipe). Relative paths are taken from the working folder;
    the run is checked (same network, channels and dimensions) before training starts."""


class CycleGANSettings(_GANSettings):
    """CycleGAN (Zhu et al. 2017): generators a2b (the entry's network, inputs -> outputs) and b2a
    (the same network settings, outputs -> inputs), one discriminator per domain, trained on
    unpaired images with the entry's `loss` (l1 or mse) as cycle-consistency and identity terms."""

    cycle_weight: float = Field(default=10.0, ge=0)
    """Weight of the cycle-consistency terms a -> b -> a and b -> a -> b."""
    identity_weight: float | None = Field(default=None, ge=0)
    """Weight of the identity terms (b2a(a) = a, a2b(b) = b), relative to cycle_weight. Default 0.5
    when both domains have the same channel count, else 0 (identity needs equal counts)."""
    pool_size: int = Field(default=50, ge=0)
    """Generated images kept in a pool the discriminators also see (Shrivastava et al.); 0: none."""

    def identity(self, in_channels: int, out_channels: int) -> float:
        if self.identity_weight is not None:
            return self.identity_weight
        return 0.5 if in_channels == out_channels else 0.0


def _check_discriminator(entry: Any, fw: str) -> None:
    gan = entry.mmv.framework_settings
    d = gan.discriminator
    dims = entry.spatial_dims
    if d.anisotropic_z and dims != 3:
        raise ValueError(f"config.mmv_zoo.{fw}.discriminator.anisotropic_z: needs 3 spatial axes, the entry has {dims}")
    out = d.output_size(entry.mmv.data.patch)
    if min(out) < 1:
        raise ValueError(
            f"config.mmv_zoo.{fw}.discriminator: depth {d.depth} needs patches of at least "
            f"{3 * 2 ** d.depth} pixels per downsampled axis; data.patch {entry.mmv.data.patch} gives a score map of "
            f"{out}: lower the depth, enlarge the patch" + (" or set anisotropic_z: true" if dims == 3 else "")
        )


def pix2pix_rules(entry: Any) -> None:
    """Rules of pix2pix that span sections; ValueError starting with the field concerned."""
    _check_discriminator(entry, "pix2pix")


def cyclegan_rules(entry: Any) -> None:
    """Rules of CycleGAN that span sections; ValueError starting with the field concerned."""
    _check_discriminator(entry, "cyclegan")
    gan = entry.mmv.framework_settings
    if (gan.identity_weight or 0) > 0 and entry.in_channels != entry.out_channels:
        raise ValueError(
            f"config.mmv_zoo.cyclegan.identity_weight: the identity terms need the same channel count in both "
            f"domains (inputs {entry.in_channels}, outputs {entry.out_channels}); set it to 0"
        )


GENERATES = ("task", "a GAN generates images: a mask is generated as an image of 0/1 values, e.g. with "
                     "normalization kind foreground")


class Pix2PixAccepts(Accepts):
    task: Literal["regression"]
    loss: Literal["l1", "mse"]
    layout: Literal["paired_folders", "csv"]


class CycleGANAccepts(Accepts):
    task: Literal["regression"]
    loss: Literal["l1", "mse"]
    layout: Literal["unpaired_folders"]


PIX2PIX = FrameworkSpec(
    kind="pix2pix",
    model="mmv_zoo.frameworks.pix2pix:Pix2Pix",
    accepts=Pix2PixAccepts,
    settings=Pix2PixSettings,
    manual_optimization=True,
    rules=pix2pix_rules,
    hints=(GENERATES,),
    description="Paired image-to-image translation against a PatchGAN discriminator (Isola et al. 2017).",
)

CYCLEGAN = FrameworkSpec(
    kind="cyclegan",
    model="mmv_zoo.frameworks.cyclegan:CycleGAN",
    accepts=CycleGANAccepts,
    settings=CycleGANSettings,
    data_module="mmv_zoo.data.unpaired:UnpairedDataModule",
    manual_optimization=True,
    directions=("a2b", "b2a"),
    rules=cyclegan_rules,
    hints=(GENERATES, ("layout", "two unrelated folders sampled independently: source: FOLDER_A, target: FOLDER_B")),
    description="Unpaired image-to-image translation with two generators and cycle consistency (Zhu et al. 2017).",
)
