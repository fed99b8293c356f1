"""PatchGAN discriminator (Isola et al. 2017), 2D or 3D: pure torch.

`depth` stride-2 convolutions (kernel 4), one stride-1 convolution and a one-channel score map:
each score judges one overlapping patch of the input (70 px for depth 3). Feature channels double
per level, at most 8x `channels`. With `anisotropic_z` a 3D network never downsamples z.
"""

from __future__ import annotations

import torch
from torch import nn


def _norm(kind: str, spatial_dims: int, channels: int) -> nn.Module:
    if kind == "instance":
        return (nn.InstanceNorm2d if spatial_dims == 2 else nn.InstanceNorm3d)(channels, affine=True)
    if kind == "batch":
        return (nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d)(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; valid: 'instance', 'batch', 'none'")


class PatchGAN(nn.Module):
    """Real/fake scores (logits) of overlapping patches: (B, C, [Z], Y, X) -> (B, 1, [z], y, x)."""

    def __init__(self, spatial_dims: int, in_channels: int, channels: int = 64, depth: int = 3,
                 norm: str = "instance", anisotropic_z: bool = False) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if anisotropic_z and spatial_dims != 3:
            raise ValueError("anisotropic_z needs spatial_dims 3")
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        if anisotropic_z:
            kernel, down, keep, pad = (3, 4, 4), (1, 2, 2), (1, 1, 1), (1, 1, 1)
        else:
            kernel, down, keep, pad = 4, 2, 1, 1
        bias = norm != "batch"  # a bias before batch normalization is redundant
        layers: list[nn.Module] = [conv(in_channels, channels, kernel, down, pad), nn.LeakyReLU(0.2, inplace=True)]
        mult = 1
        for level in range(1, depth + 1):
            prev, mult = mult, min(2**level, 8)
            stride = down if level < depth else keep
            layers += [conv(channels * prev, channels * mult, kernel, stride, pad, bias=bias),
                       _norm(norm, spatial_dims, channels * mult), nn.LeakyReLU(0.2, inplace=True)]
        layers.append(conv(channels * mult, 1, kernel, keep, pad))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
