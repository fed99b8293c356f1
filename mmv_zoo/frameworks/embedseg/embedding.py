"""The spatial embedding: network outputs activated into offsets, sigma and seediness, and the
coordinate grid they are added to.

Coordinates follow EmbedSeg: one x pixel is 1/UNIT, so the tanh offsets (-1..1) reach UNIT pixels;
other axes are scaled by their physical pixel size relative to x (anisotropic voxels: a z step of
0.29 um next to 0.108 um in x is 2.7 x steps), so sigma and the clustering work in physical space.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

UNIT = 1024
"""x pixels per coordinate unit (EmbedSeg: 2048 pixels over 2 units)."""
SIGMA_SCALE = 10.0
"""The clustering bandwidth of a sigma value s is exp(SIGMA_SCALE * s) (EmbedSeg's convention)."""
SIGMA_OFFSET = 1.0
"""Added to the sigma channels: EmbedSeg's initial sigma (bias 1), a bandwidth of about 6 pixels."""


def entry_spacing(entry: Any) -> list[float]:
    """Coordinate step per space axis (z, y, x order) from the entry's input axes' `scale`."""
    return axes_spacing([a.scale for a in entry.inputs[0].space_axes])


def axes_spacing(scales: Sequence[float]) -> list[float]:
    """Coordinate step per space axis from the axes' physical scales (z, y, x order)."""
    return [float(s) / float(scales[-1]) / UNIT for s in scales]


def coordinate_grid(shape: list[int], spacing: list[float], device: torch.device | None = None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(D, *shape) coordinates: along axis a, index * spacing[a]. TorchScript-compilable (the label
    packages run it inside their model)."""
    axes = [torch.arange(shape[a], device=device, dtype=dtype) * spacing[a] for a in range(len(shape))]
    return torch.stack(torch.meshgrid(axes, indexing="ij"))


class EmbeddingModel(nn.Module):
    """A backbone with D + n_sigma + 1 outputs, then a 1x1 convolution (`head`), activated: tanh
    offsets (D channels), sigma (n_sigma channels, + SIGMA_OFFSET) and sigmoid seediness (1 channel).
    What training, prediction and the exported package run.

    The head starts with zero offset and sigma rows (and passes the seediness through), so that any
    backbone starts where EmbedSeg's initialization starts BranchedERFNet: no offsets, sigma 1 (a
    bandwidth of a few pixels). Without it a backbone's random initial sigma can make every
    instance's Gaussian vanish, a minimum training does not leave."""

    def __init__(self, net: nn.Module, spatial_dims: int, n_sigma: int) -> None:
        super().__init__()
        self.net = net
        self.dims = spatial_dims
        self.n_sigma = n_sigma
        k = spatial_dims + n_sigma + 1
        self.head = (nn.Conv2d if spatial_dims == 2 else nn.Conv3d)(k, k, 1)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.bias.zero_()
            self.head.weight[k - 1, k - 1] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(self.net(x))
        d, s = self.dims, self.n_sigma
        return torch.cat([torch.tanh(y[:, :d]), y[:, d:d + s] + SIGMA_OFFSET, torch.sigmoid(y[:, d + s:d + s + 1])], 1)
