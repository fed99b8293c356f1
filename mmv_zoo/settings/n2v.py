"""Settings of the self-supervised denoising framework `n2v` (Noise2Void, Krull et al. 2019; N2V2, Höck
et al. 2022; structN2V, Broaddus et al. 2020): the `config.mmv_zoo.n2v` block, its rules that span
sections and the framework's spec. Nothing here imports torch.

Blind-spot training: in every training patch a small fraction of pixels (one per cell of a regular
grid, at a random place in the cell) is replaced, by a random other pixel of its neighbourhood (N2V)
or by the neighbourhood's median (N2V2); the network sees the patch with those replacements and the
loss compares its output at the replaced pixels with their original values, so it learns to predict
a pixel from its surroundings, which for pixel-wise independent noise is the clean signal.
structN2V also replaces a line of pixels along one axis through each of them, for noise correlated
along that axis (stripes).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from .framework import Accepts, FrameworkSpec
from .strict import Strict

AXES = ("z", "y", "x")


class StructMask(Strict):
    """structN2V: a line through each masked pixel is replaced too (noise correlated along `axis`)."""

    axis: Literal["z", "y", "x"] = "x"
    """The axis the noise is correlated along: `x` for horizontal stripes, `y` for vertical ones."""
    span: int = Field(default=5, ge=3)
    """Length of the line (odd, centred on the masked pixel): pixels up to span // 2 away along `axis`
    get random values from the patch's range."""

    @field_validator("span")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"{v} must be odd (the line is centred on the masked pixel)")
        return v


class N2VSettings(Strict):
    """The `n2v` block: how pixels are masked and replaced."""

    masked_fraction: float = Field(default=0.002, gt=0, lt=1)
    """Share of the pixels of a patch that are masked (one per grid cell of 1 / fraction pixels)."""
    neighbourhood: int = Field(default=5, ge=3)
    """Side of the (hyper)cube around a masked pixel its replacement comes from (odd)."""
    replacement: Literal["neighbour", "median"] = "neighbour"
    """`neighbour`: a random other pixel of the neighbourhood, never the pixel itself (N2V);
    `median`: the median of the neighbourhood without the pixel (N2V2, with network
    `{kind: care_unet, blurpool: true, top_skip: false}`)."""
    struct_mask: StructMask | None = None
    """structN2V: also mask a line along one axis through every masked pixel."""
    independent_channels: bool = True
    """Several channels: denoise each on its own with one shared network (true) or all together with a
    network that sees every channel (false)."""

    @field_validator("neighbourhood")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"{v} must be odd (the neighbourhood is centred on the masked pixel)")
        return v

    def grid_step(self, spatial_dims: int) -> float:
        """Side of the grid cells (pixels) holding one masked pixel each."""
        return (1.0 / self.masked_fraction) ** (1.0 / spatial_dims)


def n2v_rules(entry: Any) -> None:
    """Rules of n2v that span sections; ValueError starting with the field concerned."""
    mmv = entry.mmv
    s = mmv.framework_settings
    dims = entry.spatial_dims
    patch = mmv.data.patch
    axes = list(AXES[3 - dims:])
    if entry.in_channels != entry.out_channels:
        raise ValueError(f"outputs[0].axes: a denoiser outputs the channels it takes; inputs[0] has "
                         f"{entry.in_channels}, outputs[0] {entry.out_channels}")
    small = [(a, p) for a, p in zip(axes, patch, strict=True) if p < s.neighbourhood]
    if small:
        raise ValueError(f"config.mmv_zoo.data.patch: {patch} is smaller than the n2v.neighbourhood "
                         f"{s.neighbourhood} along {', '.join(a for a, _ in small)}")
    if s.struct_mask is not None:
        sm = s.struct_mask
        if sm.axis not in axes:
            raise ValueError(f"config.mmv_zoo.n2v.struct_mask.axis: {sm.axis}, but the entry's axes are {axes}")
        if sm.span > patch[axes.index(sm.axis)]:
            raise ValueError(f"config.mmv_zoo.n2v.struct_mask.span: {sm.span} is longer than the patch "
                             f"({patch[axes.index(sm.axis)]} along {sm.axis}, data.patch)")
    if mmv.data.sampling.foreground_fraction:
        raise ValueError("config.mmv_zoo.data.sampling.foreground_fraction: n2v has no targets to find a "
                         "foreground in; use 0")


class N2VAccepts(Accepts):
    task: Literal["regression"]
    loss: Literal["mse", "l1"]
    layout: Literal["source_folder"]


N2V = FrameworkSpec(
    kind="n2v",
    model="mmv_zoo.frameworks.n2v:N2V",
    accepts=N2VAccepts,
    settings=N2VSettings,
    default_loss="mse",
    rules=n2v_rules,
    hints=(("layout", "self-supervised denoising needs only the noisy images: layout source_folder "
                      "(source: FOLDER), no target folder"),),
    description="Self-supervised denoising from noisy images alone: Noise2Void, N2V2 and structN2V, 2D and 3D.",
)
