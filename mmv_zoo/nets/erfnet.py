"""BranchedERFNet in 2D and 3D: an ERFNet encoder (Romera et al., IEEE T-ITS 2018) with one decoder per
output group, as EmbedSeg uses it (Lalit et al., MIDL 2021). Pure torch, no mmv_zoo imports.

The encoder downsamples three times (by 2, or by (1, 2, 2) with `anisotropic_z`), each downsampler
concatenating a strided convolution with max pooling; between them "non-bottleneck-1D" residual
blocks factorize each k x k convolution into one 3-tap convolution per axis, the deepest with
dilations 2, 4, 8, 16. Each decoder upsamples back with transposed convolutions.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812


def _layers(dims: int) -> tuple[type[nn.Module], type[nn.Module], type[nn.Module], type[nn.Module], type[nn.Module]]:
    if dims == 2:
        return nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.MaxPool2d, nn.Dropout2d
    return nn.Conv3d, nn.ConvTranspose3d, nn.BatchNorm3d, nn.MaxPool3d, nn.Dropout3d


def _along(dims: int, axis: int, value: int, other: int) -> tuple[int, ...]:
    return tuple(value if a == axis else other for a in range(dims))


class Downsampler(nn.Module):
    """Strided 3-conv (out - in channels) next to max pooling (in channels), batch norm, ReLU."""

    def __init__(self, dims: int, cin: int, cout: int, stride: tuple[int, ...]) -> None:
        super().__init__()
        conv, _, bn, pool, _ = _layers(dims)
        self.conv = conv(cin, cout - cin, 3, stride=stride, padding=1)
        self.pool = pool(stride, stride=stride)
        self.bn = bn(cout, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(torch.cat([self.conv(x), self.pool(x)], 1)))


class NonBottleneck1D(nn.Module):
    """Two groups of factorized 3-tap convolutions (the second dilated) and a residual connection."""

    def __init__(self, dims: int, channels: int, dropout: float, dilation: int) -> None:
        super().__init__()
        conv, _, bn, _, drop = _layers(dims)
        self.first = nn.ModuleList(
            conv(channels, channels, _along(dims, a, 3, 1), padding=_along(dims, a, 1, 0)) for a in range(dims))
        self.second = nn.ModuleList(
            conv(channels, channels, _along(dims, a, 3, 1), padding=_along(dims, a, dilation, 0),
                 dilation=_along(dims, a, dilation, 1)) for a in range(dims))
        self.bn1 = bn(channels, eps=1e-3)
        self.bn2 = bn(channels, eps=1e-3)
        self.dropout = drop(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for i, c in enumerate(self.first):
            y = c(y)
            y = F.relu(self.bn1(y) if i == len(self.first) - 1 else y)
        for i, c in enumerate(self.second):
            y = c(y)
            if i < len(self.second) - 1:
                y = F.relu(y)
        y = self.dropout(self.bn2(y))
        return F.relu(y + x)


class Upsampler(nn.Module):
    def __init__(self, dims: int, cin: int, cout: int, stride: tuple[int, ...]) -> None:
        super().__init__()
        _, convt, bn, _, _ = _layers(dims)
        self.conv = convt(cin, cout, 3, stride=stride, padding=1, output_padding=tuple(s - 1 for s in stride))
        self.bn = bn(cout, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class Encoder(nn.Module):
    def __init__(self, dims: int, cin: int, channels: list[int], dropout: float,
                 strides: list[tuple[int, ...]]) -> None:
        super().__init__()
        c1, c2, c3 = channels
        layers: list[nn.Module] = [Downsampler(dims, cin, c1, strides[0]), Downsampler(dims, c1, c2, strides[1])]
        layers += [NonBottleneck1D(dims, c2, dropout / 10, 1) for _ in range(5)]
        layers.append(Downsampler(dims, c2, c3, strides[2]))
        for _ in range(2):
            layers += [NonBottleneck1D(dims, c3, dropout, d) for d in (2, 4, 8, 16)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Decoder(nn.Module):
    def __init__(self, dims: int, channels: list[int], cout: int, strides: list[tuple[int, ...]]) -> None:
        super().__init__()
        c1, c2, c3 = channels
        _, convt, _, _, _ = _layers(dims)
        self.layers = nn.Sequential(
            Upsampler(dims, c3, c2, strides[2]), NonBottleneck1D(dims, c2, 0.0, 1), NonBottleneck1D(dims, c2, 0.0, 1),
            Upsampler(dims, c2, c1, strides[1]), NonBottleneck1D(dims, c1, 0.0, 1), NonBottleneck1D(dims, c1, 0.0, 1))
        self.output_conv = convt(c1, cout, strides[0], stride=strides[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_conv(self.layers(x))


class BranchedERFNet(nn.Module):
    """ERFNet encoder and two decoders: the first gives `out_channels - 1` channels (offsets and sigma of
    a spatial embedding), the second the last channel (seediness). Input sizes: multiples of 8 per
    axis (z: any size with `anisotropic_z`)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, channels: list[int] | None = None,
                 dropout: float = 0.3, anisotropic_z: bool = False) -> None:
        super().__init__()
        if out_channels < 2:
            raise ValueError(f"out_channels {out_channels}: a branched network needs at least 2")
        if anisotropic_z and spatial_dims != 3:
            raise ValueError("anisotropic_z needs 3 spatial axes")
        channels = list(channels or [16, 64, 128])
        stride = tuple(1 if anisotropic_z and a == 0 else 2 for a in range(spatial_dims))
        strides = [stride] * 3
        self.encoder = Encoder(spatial_dims, in_channels, channels, dropout, strides)
        self.decoders = nn.ModuleList(
            Decoder(spatial_dims, channels, n, strides) for n in (out_channels - 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        return torch.cat([decoder(features) for decoder in self.decoders], 1)
