"""Network settings: one model per `kind`, a discriminated union over all of them.

Each model knows the input sizes its network accepts (`size_rule`) so that training patches,
tiled prediction and the exported package's `size: {min, step}` agree. Building a network
happens in `mmv_zoo.nets.factory`; nothing here imports torch.
"""

from __future__ import annotations

import importlib
import inspect
import math
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from ..nets.sizes import PerAxis, per_axis
from .strict import Strict


class SizeRule(Strict):
    """Valid input sizes along one spatial axis: `min + k * step`; step 0 means fixed size."""

    min: int
    step: int

    def fit(self, size: int) -> int:
        """Smallest valid size that is >= `size`."""
        if size <= self.min or self.step == 0:
            return self.min
        return self.min + math.ceil((size - self.min) / self.step) * self.step

    def fit_down(self, size: int) -> int:
        """Largest valid size that is <= `size` (at least `min`)."""
        if size <= self.min or self.step == 0:
            return self.min
        return self.min + ((size - self.min) // self.step) * self.step


class _NetworkBase(Strict):
    spatial_dims: Literal[2, 3] | None = None
    """2 or 3; when omitted it is taken from the entry's input space axes."""

    def downsampling(self, spatial_dims: int) -> list[int]:
        """Total downsampling factor per spatial axis (input sizes must be multiples of it)."""
        raise NotImplementedError

    def size_rule(self, spatial_dims: int) -> list[SizeRule]:
        return [SizeRule(min=f, step=f) for f in self.downsampling(spatial_dims)]

    def check_dims(self, spatial_dims: int) -> None:
        """Raise ValueError when the settings do not fit `spatial_dims`."""
        self.downsampling(spatial_dims)


def _prod_strides(strides: list[PerAxis], spatial_dims: int) -> list[int]:
    total = [1] * spatial_dims
    for i, s in enumerate(strides):
        try:
            values = per_axis(s, spatial_dims)
        except ValueError as e:
            raise ValueError(f"strides[{i}] {e}") from None
        total = [t * v for t, v in zip(total, values, strict=True)]
    return total


class _LevelNetwork(_NetworkBase):
    channels: list[int] = [16, 32, 64, 128]
    """Feature channels per level, top to bottom."""
    strides: list[PerAxis] | None = None
    """Downsampling per level (len(channels) - 1 values); a list per level for anisotropic 3D, e.g. [1, 2, 2]."""
    dropout: float = 0.0

    def resolved_strides(self) -> list[PerAxis]:
        return self.strides if self.strides is not None else [2] * (len(self.channels) - 1)

    @model_validator(mode="after")
    def _levels(self) -> _LevelNetwork:
        if len(self.resolved_strides()) != len(self.channels) - 1:
            raise ValueError(f"strides needs len(channels) - 1 = {len(self.channels) - 1} values")
        return self

    def downsampling(self, spatial_dims: int) -> list[int]:
        return _prod_strides(self.resolved_strides(), spatial_dims)


def _instance_norm_rule(rules: list[SizeRule], norm: str) -> list[SizeRule]:
    """Instance norm needs more than one voxel at the bottom level: twice the downsampling at least."""
    if "instance" not in str(norm).lower():
        return rules
    return [SizeRule(min=max(2 * r.step, r.min), step=r.step) for r in rules]


class UNetSettings(_LevelNetwork):
    """MONAI's residual UNet (`monai.networks.nets.UNet`)."""

    kind: Literal["unet"]
    num_res_units: int = 2
    norm: str = "batch"

    def size_rule(self, spatial_dims: int) -> list[SizeRule]:
        return _instance_norm_rule(super().size_rule(spatial_dims), self.norm)


class AttentionUNetSettings(_LevelNetwork):
    """MONAI's AttentionUnet (attention gates on the skip connections)."""

    kind: Literal["attention_unet"]


class BasicUNetSettings(_NetworkBase):
    """MONAI's BasicUNet (four downsamplings by 2)."""

    kind: Literal["basic_unet"]
    features: list[int] = Field(default=[32, 32, 64, 128, 256, 32], min_length=6, max_length=6)
    norm: str = "instance"
    dropout: float = 0.0

    def downsampling(self, spatial_dims: int) -> list[int]:
        return [16] * spatial_dims

    def size_rule(self, spatial_dims: int) -> list[SizeRule]:
        return _instance_norm_rule(super().size_rule(spatial_dims), self.norm)


class DynUNetSettings(_NetworkBase):
    """MONAI's DynUNet: nnU-Net-style, anisotropic kernels and strides per level."""

    kind: Literal["dyn_unet"]
    kernel_size: list[PerAxis] = [3, 3, 3, 3]
    """Kernel size per level; e.g. [[1, 3, 3], [3, 3, 3], ...] for anisotropic 3D."""
    strides: list[PerAxis] = [1, 2, 2, 2]
    """Stride per level; the first is usually 1."""
    filters: list[int] | None = None
    norm_name: str = "instance"
    res_block: bool = False

    @model_validator(mode="after")
    def _levels(self) -> DynUNetSettings:
        if len(self.kernel_size) != len(self.strides):
            raise ValueError("kernel_size and strides need the same number of levels")
        if self.filters is not None and len(self.filters) != len(self.strides):
            raise ValueError("filters needs one value per level")
        return self

    def downsampling(self, spatial_dims: int) -> list[int]:
        for i, k in enumerate(self.kernel_size):
            try:
                per_axis(k, spatial_dims)
            except ValueError as e:
                raise ValueError(f"kernel_size[{i}] {e}") from None
        return _prod_strides(self.strides, spatial_dims)

    def size_rule(self, spatial_dims: int) -> list[SizeRule]:
        return _instance_norm_rule(super().size_rule(spatial_dims), self.norm_name)


class SwinUNETRSettings(_NetworkBase):
    """MONAI's SwinUNETR (shifted-window transformer encoder)."""

    kind: Literal["swin_unetr"]
    feature_size: int = 24
    depths: list[int] = [2, 2, 2, 2]
    num_heads: list[int] = [3, 6, 12, 24]
    window_size: int = 7

    def downsampling(self, spatial_dims: int) -> list[int]:
        return [32] * spatial_dims


class UNETRSettings(_NetworkBase):
    """MONAI's UNETR (ViT encoder): accepts exactly `img_size`, so prediction tiles at that size."""

    kind: Literal["unetr"]
    img_size: list[int]
    """The one input size the network accepts (usually the training patch)."""
    feature_size: int = 16
    hidden_size: int = 768
    mlp_dim: int = 3072
    num_heads: int = 12

    def downsampling(self, spatial_dims: int) -> list[int]:
        size = per_axis(self.img_size, spatial_dims)
        if any(s % 16 for s in size):
            raise ValueError(f"img_size {size} must be multiples of 16 (the ViT patch)")
        return [16] * spatial_dims

    def size_rule(self, spatial_dims: int) -> list[SizeRule]:
        return [SizeRule(min=s, step=0) for s in per_axis(self.img_size, spatial_dims)]


class FNetSettings(_NetworkBase):
    """fnet (Ounkomol et al. 2018), mmv_zoo's own pure-torch U-Net: exports without any dependency."""

    kind: Literal["fnet"]
    depth: int = Field(default=4, ge=1, le=6)
    """Number of downsamplings."""
    mult_chan: int = Field(default=32, ge=1)
    """Feature channels of the first level; doubled at each level."""
    anisotropic_z: bool = False
    """3D only: never downsample z (for stacks with few, thick slices)."""

    def downsampling(self, spatial_dims: int) -> list[int]:
        if self.anisotropic_z and spatial_dims != 3:
            raise ValueError("anisotropic_z needs 3 spatial axes")
        f = [2**self.depth] * spatial_dims
        if self.anisotropic_z:
            f[0] = 1
        return f


class CAREUNetSettings(_NetworkBase):
    """The U-Net of CARE and Noise2Void (mmv_zoo's own pure-torch implementation): two convolutions with
    batch norm and ReLU per level, `depth` downsamplings by 2. N2V2 (Höck et al. 2022) uses it with
    `blurpool: true` and `top_skip: false`."""

    kind: Literal["care_unet"]
    depth: int = Field(default=2, ge=1, le=5)
    """Number of downsamplings by 2."""
    channels: int = Field(default=32, ge=1)
    """Feature channels of the first level; doubled at each level."""
    batch_norm: bool = True
    blurpool: bool = False
    """Max-blur pooling (anti-aliased downsampling, N2V2) instead of max pooling."""
    top_skip: bool = True
    """The skip connection of the top level (N2V2 leaves it out)."""

    def downsampling(self, spatial_dims: int) -> list[int]:
        return [2**self.depth] * spatial_dims


class BranchedERFNetSettings(_NetworkBase):
    """BranchedERFNet (ERFNet, Romera et al. 2018, with one decoder per output group, as in EmbedSeg,
    Lalit et al. 2021): factorized, dilated residual convolutions, three downsamplings by 2; one
    decoder for all but the last output channel (offsets and sigma), one for the last (seediness).
    mmv_zoo's own pure-torch implementation, 2D and 3D."""

    kind: Literal["branched_erfnet"]
    channels: list[int] = Field(default=[16, 64, 128], min_length=3, max_length=3)
    """Feature channels after each of the three downsamplings."""
    dropout: float = Field(default=0.3, ge=0, lt=1)
    """Dropout of the deepest blocks (a tenth of it in the middle ones), as in ERFNet."""
    anisotropic_z: bool = False
    """3D only: never downsample z (for stacks with few, thick slices)."""

    def downsampling(self, spatial_dims: int) -> list[int]:
        if self.anisotropic_z and spatial_dims != 3:
            raise ValueError("anisotropic_z needs 3 spatial axes")
        return [1 if self.anisotropic_z and a == 0 else 8 for a in range(spatial_dims)]


class PythonNetworkSettings(_NetworkBase):
    """Any `torch.nn.Module` from an installed package, built by import path and keyword arguments."""

    kind: Literal["python"]
    target: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    """Import path `package.module:Callable`."""
    kwargs: dict[str, Any] = {}
    """Keyword arguments for the callable (channels and spatial_dims are added as below)."""
    in_channels_arg: str | None = "in_channels"
    out_channels_arg: str | None = "out_channels"
    spatial_dims_arg: str | None = "spatial_dims"
    divisor: int = 16
    """Input sizes must be multiples of this (the network's total downsampling)."""

    @model_validator(mode="after")
    def _importable(self) -> PythonNetworkSettings:
        module_name, attr = self.target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise ValueError(f"target {self.target!r}: cannot import {module_name!r} ({e})") from None
        fn = getattr(module, attr, None)
        if fn is None or not callable(fn):
            raise ValueError(f"target {self.target!r}: {module_name!r} has no callable {attr!r}")
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            return self
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            names = [*self.kwargs, self.in_channels_arg, self.out_channels_arg, self.spatial_dims_arg]
            unknown = [n for n in names if n is not None and n not in params]
            if unknown:
                raise ValueError(
                    f"target {self.target!r} takes no argument(s) {unknown}; it takes {sorted(params)}"
                )
        return self

    def downsampling(self, spatial_dims: int) -> list[int]:
        return [self.divisor] * spatial_dims


NetworkSettings = Annotated[
    UNetSettings
    | AttentionUNetSettings
    | BasicUNetSettings
    | DynUNetSettings
    | SwinUNETRSettings
    | UNETRSettings
    | FNetSettings
    | CAREUNetSettings
    | BranchedERFNetSettings
    | PythonNetworkSettings,
    Field(discriminator="kind"),
]

