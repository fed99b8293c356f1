"""fnet: the U-Net of Ounkomol et al. (Nature Methods 2018), 2D and 3D in one class.

This file imports only torch: the BioImage.IO export copies it verbatim as the standalone
architecture of `pytorch_state_dict` weights, so keep it free of mmv_zoo imports.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv(spatial_dims: int) -> type[nn.Module]:
    return nn.Conv3d if spatial_dims == 3 else nn.Conv2d


def _norm(spatial_dims: int) -> type[nn.Module]:
    return nn.BatchNorm3d if spatial_dims == 3 else nn.BatchNorm2d


def _down_stride(spatial_dims: int, anisotropic_z: bool) -> tuple[int, ...]:
    return (1, 2, 2) if anisotropic_z else (2,) * spatial_dims


class DoubleConv(nn.Module):
    """Two 3x3 convolutions, each followed by batch norm and ReLU."""

    def __init__(self, spatial_dims: int, n_in: int, n_out: int) -> None:
        super().__init__()
        conv, norm = _conv(spatial_dims), _norm(spatial_dims)
        self.block = nn.Sequential(
            conv(n_in, n_out, kernel_size=3, padding=1),
            norm(n_out),
            nn.ReLU(inplace=True),
            conv(n_out, n_out, kernel_size=3, padding=1),
            norm(n_out),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Level(nn.Module):
    """One level of the recursive U: convs, then (if not the bottom) down, recurse, up, merge."""

    def __init__(self, spatial_dims: int, depth: int, n_in: int, mult_chan: int, anisotropic_z: bool) -> None:
        super().__init__()
        self.depth = depth
        n_out = n_in * mult_chan
        self.sub_2conv_more = DoubleConv(spatial_dims, n_in, n_out)
        if depth > 0:
            conv, norm = _conv(spatial_dims), _norm(spatial_dims)
            up = nn.ConvTranspose3d if spatial_dims == 3 else nn.ConvTranspose2d
            stride = _down_stride(spatial_dims, anisotropic_z)
            self.sub_2conv_less = DoubleConv(spatial_dims, 2 * n_out, n_out)
            self.conv_down = nn.Sequential(
                conv(n_out, n_out, kernel_size=stride, stride=stride), norm(n_out), nn.ReLU(inplace=True)
            )
            self.convt = nn.Sequential(
                up(2 * n_out, n_out, kernel_size=stride, stride=stride), norm(n_out), nn.ReLU(inplace=True)
            )
            self.sub_u = Level(spatial_dims, depth - 1, n_out, 2, anisotropic_z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.depth == 0:
            return self.sub_2conv_more(x)
        x_more = self.sub_2conv_more(x)
        x_up = self.convt(self.sub_u(self.conv_down(x_more)))
        return self.sub_2conv_less(torch.cat((x_more, x_up), dim=1))


class FNet(nn.Module):
    """fnet for `spatial_dims` 2 or 3; input sizes must be multiples of 2**depth (z: 1 if anisotropic_z)."""

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 1,
        depth: int = 4,
        mult_chan: int = 32,
        anisotropic_z: bool = False,
    ) -> None:
        super().__init__()
        self.net_recurse = Level(spatial_dims, depth, in_channels, mult_chan, anisotropic_z)
        self.conv_out = _conv(spatial_dims)(mult_chan * in_channels, out_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.net_recurse(x))
