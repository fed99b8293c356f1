"""The U-Net of CARE and Noise2Void (Weigert et al. 2018, Krull et al. 2019), 2D and 3D in one class,
with the two changes of N2V2 (Höck et al. 2022) as options: max-blur pooling instead of max pooling
(`blurpool`) and no skip connection at the top level (`top_skip=False`), which together remove the
checkerboard artefacts of blind-spot training.

Each level is two 3x3 convolutions with batch norm and ReLU; the decoder upsamples (bi- or trilinear)
and concatenates the skip; a 1x1 convolution gives the output (no activation). `PerChannel` runs a
one-channel network on every channel of its input on its own (channels denoised independently).

This file imports only torch (the export may ship it as the standalone architecture).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812


def _conv(spatial_dims: int) -> type[nn.Module]:
    return nn.Conv3d if spatial_dims == 3 else nn.Conv2d


def _norm(spatial_dims: int) -> type[nn.Module]:
    return nn.BatchNorm3d if spatial_dims == 3 else nn.BatchNorm2d


class ConvBlock(nn.Module):
    """Two 3x3 convolutions (`n_in` -> `n_mid` -> `n_out`, default `n_mid`), each followed by batch norm
    (optional) and ReLU."""

    def __init__(self, spatial_dims: int, n_in: int, n_mid: int, batch_norm: bool = True,
                 n_out: int | None = None) -> None:
        super().__init__()
        conv, norm = _conv(spatial_dims), _norm(spatial_dims)
        layers: list[nn.Module] = []
        for a, b in ((n_in, n_mid), (n_mid, n_out or n_mid)):
            layers.append(conv(a, b, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(norm(b))
            layers.append(nn.ReLU(inplace=True))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class MaxBlurPool(nn.Module):
    """Anti-aliased downsampling by 2 (Zhang 2019): max pooling with stride 1, then a binomial [1 2 1]
    blur with stride 2 on each channel (reflect padding)."""

    def __init__(self, spatial_dims: int, channels: int) -> None:
        super().__init__()
        self.spatial_dims, self.channels = spatial_dims, channels
        k1 = torch.tensor([1.0, 2.0, 1.0])
        kernel = k1
        for _ in range(spatial_dims - 1):
            kernel = kernel[..., None] * k1
        kernel = kernel / kernel.sum()
        self.register_buffer("kernel", kernel[None, None].repeat(channels, *[1] * (spatial_dims + 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spatial_dims == 3:
            x = F.max_pool3d(F.pad(x, (0, 1, 0, 1, 0, 1), mode="replicate"), kernel_size=2, stride=1)
            return F.conv3d(F.pad(x, (1, 1, 1, 1, 1, 1), mode="reflect"), self.kernel, stride=2,
                            groups=self.channels)
        x = F.max_pool2d(F.pad(x, (0, 1, 0, 1), mode="replicate"), kernel_size=2, stride=1)
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.kernel, stride=2, groups=self.channels)


class CAREUNet(nn.Module):
    """U-Net with `depth` downsamplings by 2 and `channels` features at the top (doubled per level), in
    the layout of CSBDeep's and CAREamics's N2V U-Net: the bottleneck and every decoder level end at the
    width of the level above (so each skip is concatenated with as many channels as it brings)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, depth: int = 2,
                 channels: int = 32, batch_norm: bool = True, blurpool: bool = False,
                 top_skip: bool = True) -> None:
        super().__init__()
        self.spatial_dims, self.depth, self.top_skip = spatial_dims, depth, top_skip
        self.mode = "trilinear" if spatial_dims == 3 else "bilinear"
        widths = [channels * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        self.pool = nn.ModuleList()
        n_in = in_channels
        for w in widths[:-1]:
            self.down.append(ConvBlock(spatial_dims, n_in, w, batch_norm))
            if blurpool:
                self.pool.append(MaxBlurPool(spatial_dims, w))
            else:
                self.pool.append(nn.MaxPool3d(2) if spatial_dims == 3 else nn.MaxPool2d(2))
            n_in = w
        self.bottom = ConvBlock(spatial_dims, widths[-2], widths[-1], batch_norm, n_out=widths[-2])
        self.up = nn.ModuleList()
        for level in reversed(range(depth)):
            skip = widths[level] if (level > 0 or top_skip) else 0
            self.up.append(ConvBlock(spatial_dims, widths[level] + skip, widths[level], batch_norm,
                                     n_out=widths[max(level - 1, 0)]))
        self.head = _conv(spatial_dims)(widths[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block, pool in zip(self.down, self.pool, strict=True):
            x = block(x)
            skips.append(x)
            x = pool(x)
        x = self.bottom(x)
        for i, block in enumerate(self.up):
            level = self.depth - 1 - i
            x = F.interpolate(x, scale_factor=2.0, mode=self.mode, align_corners=False)
            if level > 0 or self.top_skip:
                x = torch.cat([x, skips[level]], dim=1)
            x = block(x)
        return self.head(x)


class PerChannel(nn.Module):
    """A one-channel network applied to each channel of the input on its own (channels as samples)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[0], x.shape[1]
        y = self.net(x.reshape(b * c, 1, *x.shape[2:]))
        return y.reshape(b, c, *y.shape[2:])
