"""Settings of the GAN frameworks: `config.mmv_zoo.pix2pix` and `config.mmv_zoo.cyclegan`.

Each block is optional and only valid next to its framework (an entry of another framework that
has one is an error); when the framework's block is missing, its defaults are used. The rules
that span sections (task, data layout, discriminator vs patch size, channels) are in `check_gan`,
which the entry's root validator calls; each message starts with the field it concerns.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from .strict import Strict
from .training import OptimizerSettings

GAN_FRAMEWORKS = ("pix2pix", "cyclegan")
"""Frameworks with a settings block of their own, named after them."""
UNPAIRED_FRAMEWORKS = ("cyclegan",)
"""Frameworks that train on the `unpaired_folders` layout (and only on it)."""


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


def fill_gan_defaults(data: Any) -> Any:
    """Before validation: the framework's own block, empty (all defaults) when the entry has none."""
    if isinstance(data, dict) and data.get("framework") in GAN_FRAMEWORKS and data.get(data["framework"]) is None:
        data = {**data, data["framework"]: {}}
    return data


def check_gan(entry: Any) -> None:
    """Rules that span sections for the GAN frameworks and the unpaired layout; raises ValueError
    whose message starts with the field concerned."""
    mmv = entry.mmv
    fw = mmv.framework
    for other in GAN_FRAMEWORKS:
        if other != fw and getattr(mmv, other) is not None:
            raise ValueError(f"config.mmv_zoo.{other}: settings of framework {other}, but the framework is {fw!r} "
                             f"(remove the block or use framework: {other})")
    layout = mmv.data.layout.layout
    if layout == "unpaired_folders" and fw not in UNPAIRED_FRAMEWORKS:
        raise ValueError(f"config.mmv_zoo.data.layout: unpaired_folders (unrelated images, no pairs) trains "
                         f"{' or '.join(UNPAIRED_FRAMEWORKS)}; framework {fw} needs pairs: layout paired_folders "
                         "or csv")
    if fw in UNPAIRED_FRAMEWORKS and layout != "unpaired_folders":
        raise ValueError(f"config.mmv_zoo.data.layout: {fw} trains on two unrelated folders sampled independently: "
                         f"use layout unpaired_folders (source: FOLDER_A, target: FOLDER_B), not {layout}")
    if fw not in GAN_FRAMEWORKS:
        return
    if mmv.task != "regression":
        raise ValueError(f"config.mmv_zoo.task: {fw} generates images; use task: regression (a mask is generated "
                         "as an image of 0/1 values, e.g. with normalization kind foreground)")
    gan = getattr(mmv, fw)
    d = gan.discriminator
    dims = entry.spatial_dims
    if d.anisotropic_z and dims != 3:
        raise ValueError(f"config.mmv_zoo.{fw}.discriminator.anisotropic_z: needs 3 spatial axes, the entry has {dims}")
    out = d.output_size(mmv.data.patch)
    if min(out) < 1:
        raise ValueError(
            f"config.mmv_zoo.{fw}.discriminator: depth {d.depth} needs patches of at least "
            f"{3 * 2 ** d.depth} pixels per downsampled axis; data.patch {mmv.data.patch} gives a score map of "
            f"{out}: lower the depth, enlarge the patch" + (" or set anisotropic_z: true" if dims == 3 else "")
        )
    if fw == "cyclegan" and (gan.identity_weight or 0) > 0 and entry.in_channels != entry.out_channels:
        raise ValueError(
            f"config.mmv_zoo.cyclegan.identity_weight: the identity terms need the same channel count in both "
            f"domains (inputs {entry.in_channels}, outputs {entry.out_channels}); set it to 0"
        )
