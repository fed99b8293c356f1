"""Self-supervised denoising by blind-spot training: Noise2Void, N2V2 and structN2V in 2D and 3D (the
settings, the rules and what each variant does are in `mmv_zoo.settings.n2v`).

Masking happens here, on the batch and on its device, vectorized over patches and channels (no
per-patch Python loop in the data loader): every channel of every patch gets its own masked pixels,
one per cell of a regular grid of `1 / masked_fraction` pixels, at a random place in the cell. The
loss is the entry's loss (mse or l1) over the masked pixels only; validation masks its fixed
patches the same way, with a seed per batch so every epoch sees the same masks, and reports the
masked loss (`val_loss`) and the masked PSNR on a range of 1 (`val_metric`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..nets.care_unet import PerChannel
from ..nets.factory import build_network
from .base import Framework


@dataclass
class Masked:
    """A masked batch: the input the network sees, and where (and what) the originals were."""

    inputs: torch.Tensor
    """(B, C, *S) with the masked pixels (and structN2V lines) replaced."""
    index: tuple[torch.Tensor, ...]
    """Indices (batch, channel, *space) of the masked pixels, each of shape (N,)."""
    original: torch.Tensor
    """(N,) their original values: the targets of the loss."""


def grid_points(shape: tuple[int, ...], step: float, batch: int, channels: int,
                generator: torch.Generator, device: torch.device) -> tuple[torch.Tensor, ...]:
    """One random pixel per cell of a grid of side `step` over `shape` (cells with whole-pixel edges,
    so no two cells share a pixel), drawn independently for every (patch, channel); returns index
    tensors (batch, channel, *space), each of shape (N,)."""
    dims = len(shape)
    lows, widths = [], []
    for n in shape:
        edges = torch.clamp((torch.arange(int(-(-n // step)) + 1) * step).floor().long(), max=n)
        lows.append(edges[:-1])
        widths.append(edges[1:] - edges[:-1])
    low = torch.stack(torch.meshgrid(*lows, indexing="ij"), dim=-1).reshape(-1, dims)  # (G, D)
    width = torch.stack(torch.meshgrid(*widths, indexing="ij"), dim=-1).reshape(-1, dims)
    u = torch.rand((batch, channels, low.shape[0], dims), generator=generator)
    pos = low + (u * width).floor().long()  # (B, C, G, D), inside the patch
    b, c, g = torch.meshgrid(torch.arange(batch), torch.arange(channels), torch.arange(low.shape[0]), indexing="ij")
    return tuple(t.reshape(-1).to(device) for t in (b, c, *pos.unbind(-1)))


def _offsets(dims: int, radius: int) -> torch.Tensor:
    """Every offset of the neighbourhood but the centre, (K, D)."""
    offs = [o for o in itertools.product(range(-radius, radius + 1), repeat=dims) if any(o)]
    return torch.tensor(offs, dtype=torch.long)


def _inside(pos: torch.Tensor, offset: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    """pos + offset, with every axis that would leave the patch taking -offset instead (so the result
    never falls back onto `pos` along an axis whose offset is not 0). Needs patch >= neighbourhood."""
    moved = pos + offset
    out = (moved < 0) | (moved >= shape)
    return torch.where(out, pos - offset, moved)


def mask_batch(x: torch.Tensor, settings: Any, generator: torch.Generator) -> Masked:
    """Mask a (B, C, *S) batch as `settings` (an `N2VSettings`) says; random draws from `generator`
    (CPU), tensors on x's device."""
    batch, channels, *shape = x.shape
    dims = len(shape)
    device = x.device
    index = grid_points(tuple(shape), settings.grid_step(dims), batch, channels, generator, device)
    b, c, pos = index[0], index[1], torch.stack(index[2:], dim=-1)  # pos (N, D)
    n = pos.shape[0]
    size = torch.tensor(shape, device=device)
    offsets = _offsets(dims, settings.neighbourhood // 2)
    sm = settings.struct_mask
    if sm is not None:
        # structN2V: the replacement never comes from the line masked through the pixel, whose noise is
        # correlated with the pixel's own (its median leaves that line out too)
        axis = ("z", "y", "x")[3 - dims:].index(sm.axis)
        others = torch.cat([offsets[:, :axis], offsets[:, axis + 1:]], dim=1)
        on_line = (others == 0).all(dim=1) & (offsets[:, axis].abs() <= sm.span // 2)
        offsets = offsets[~on_line]
    offsets = offsets.to(device)
    original = x[index]
    if settings.replacement == "median":
        around = _inside(pos[:, None, :], offsets[None], size)  # (N, K, D)
        values = x[(b[:, None], c[:, None], *around.unbind(-1))]  # (N, K)
        ordered = values.sort(dim=-1).values
        k = ordered.shape[-1]
        value = 0.5 * (ordered[:, (k - 1) // 2] + ordered[:, k // 2])
    else:
        pick = torch.randint(0, offsets.shape[0], (n,), generator=generator).to(device)
        source = _inside(pos, offsets[pick], size)
        value = x[(b, c, *source.unbind(-1))]
    out = x.clone()
    out[index] = value
    if sm is not None:
        flat = x.reshape(batch, channels, -1)
        lo, hi = flat.min(-1).values[b, c], flat.max(-1).values[b, c]  # each patch-channel's range
        for k in range(1, sm.span // 2 + 1):
            for sign in (-1, 1):
                p = pos.clone()
                p[:, axis] += sign * k
                keep = (p[:, axis] >= 0) & (p[:, axis] < shape[axis])
                r = torch.rand((n,), generator=generator).to(device)
                out[(b[keep], c[keep], *p[keep].unbind(-1))] = (lo + r * (hi - lo))[keep]
        out[index] = value  # a line of another masked pixel must not cover this one's replacement
    return Masked(out, index, original)


class N2V(Framework):
    """The entry's network trained blind-spot: logs `train_loss`, `val_loss` (masked loss) and
    `val_metric` (masked PSNR, range 1)."""

    metric_name = "val masked PSNR (dB, range 1)"

    def __init__(self, entry: dict[str, Any], slug: str | None = None) -> None:
        super().__init__(entry, slug)
        e = self.entry
        per_channel = self.settings.independent_channels and e.in_channels > 1
        c = 1 if per_channel else e.in_channels
        net = build_network(e.mmv.network, e.spatial_dims, c, c)
        self.net = PerChannel(net) if per_channel else net
        self.loss_kind = e.mmv.loss.kind
        # channels-last tensors: oneDNN's (and cuDNN's) faster convolution layout, 1.2x per training step
        # of the CARE U-Net on CPU here
        self.memory_format = torch.channels_last if e.spatial_dims == 2 else torch.channels_last_3d
        self.net.to(memory_format=self.memory_format)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def inference_model(self) -> nn.Module:
        return self.net

    def network(self) -> nn.Module:
        return self.net

    def masked_loss(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The loss of the network's output at the masked pixels of a masked `x` against their originals."""
        m = mask_batch(x, self.settings, generator)
        pred = self(m.inputs.contiguous(memory_format=self.memory_format))[m.index]
        diff = pred - m.original
        return (diff * diff).mean() if self.loss_kind == "mse" else diff.abs().mean()

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        x = batch[0]
        # masks drawn from (seed, rank, step): a resumed run masks as the uninterrupted one would
        seed = (self.entry.mmv.training.seed * 1_000_003 + self.global_rank) * 1_000_003 + self.global_step
        loss = self.masked_loss(x, torch.Generator().manual_seed(seed))
        self.log("train_loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=x.shape[0],
                 sync_dist=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        x = batch[0]
        generator = torch.Generator().manual_seed(self.entry.mmv.training.seed * 7_919 + batch_idx)
        m = mask_batch(x, self.settings, generator)
        diff = self(m.inputs.contiguous(memory_format=self.memory_format))[m.index] - m.original
        mse = (diff * diff).mean()
        loss = mse if self.loss_kind == "mse" else diff.abs().mean()
        self.log("val_loss", loss, prog_bar=True, batch_size=x.shape[0], sync_dist=True)
        self.log("val_metric", -10 * torch.log10(mse.clamp_min(1e-12)), prog_bar=True, batch_size=x.shape[0],
                 sync_dist=True)
