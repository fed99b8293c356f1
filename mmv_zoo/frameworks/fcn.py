"""FCN: supervised image-to-image training (regression or semantic segmentation) with any network."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..nets.factory import build_network
from .base import Framework
from .losses import build_loss


class InferenceModel(nn.Module):
    """The network plus the task's final activation: what prediction and export run."""

    def __init__(self, net: nn.Module, softmax: bool) -> None:
        super().__init__()
        self.net = net
        self.softmax = softmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        return torch.softmax(y, dim=1) if self.softmax else y


class WithClassLabels(nn.Module):
    """A segmentation model's probabilities and its class labels (argmax over channels, int64, one
    channel) as two outputs: what a segmentation package's weights run, so that consumers get masks."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.model(x)
        return y, torch.argmax(y, dim=1, keepdim=True)


def foreground_dice(logits: torch.Tensor, target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Mean hard Dice over the non-background classes present in prediction or target."""
    pred = logits.argmax(1)
    tgt = target[:, 0]
    scores = []
    for k in range(1, n_classes):
        p, t = pred == k, tgt == k
        denom = p.sum() + t.sum()
        if denom > 0:
            scores.append(2 * (p & t).sum() / denom)
    return torch.stack(scores).mean() if scores else torch.ones((), device=logits.device)


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a.flatten().float(), b.flatten().float()
    a, b = a - a.mean(), b - b.mean()
    return (a * b).sum() / (a.norm() * b.norm() + 1e-8)


class FCN(Framework):
    """Network + loss; logs `train_loss`, `val_loss` and `val_metric` (foreground Dice or Pearson)."""

    def __init__(self, entry: dict[str, Any], slug: str | None = None) -> None:
        super().__init__(entry, slug)
        mmv = self.entry.mmv
        self.segmentation = mmv.task == "segmentation"
        self.net = build_network(mmv.network, self.entry.spatial_dims, self.entry.in_channels,
                                 self.entry.out_channels)
        self.loss_fn = build_loss(mmv.loss)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def inference_model(self) -> InferenceModel:
        return InferenceModel(self.net, softmax=self.segmentation)

    def network(self) -> nn.Module:
        return self.net

    def compute_loss(self, out: torch.Tensor, y: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """The entry's loss; `keep` (B, 1, ...; 0 where an exclusion mask takes a pixel out) weights it."""
        return self.loss_fn(out, y) if keep is None else self.loss_fn(out, y, keep)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        x, y, *rest = batch
        loss = self.compute_loss(self(x), y, rest[0] if rest else None)
        self.log("train_loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=x.shape[0],
                 sync_dist=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        x, y, *rest = batch
        keep = rest[0] if rest else None
        out = self(x)
        loss = self.compute_loss(out, y, keep)
        if keep is not None:  # the metric over counted pixels only
            counted = keep[:, 0] > 0
            if self.segmentation:
                y = torch.where(counted[:, None], y, torch.zeros_like(y))
                out = torch.where(counted[:, None], out, torch.nn.functional.one_hot(
                    torch.zeros_like(y[:, 0]), out.shape[1]).movedim(-1, 1).to(out.dtype) * 1e4)
            else:
                out, y = out.movedim(1, -1)[counted], y.movedim(1, -1)[counted]
        metric = foreground_dice(out, y, self.entry.out_channels) if self.segmentation else pearson(out, y)
        self.log("val_loss", loss, prog_bar=True, batch_size=x.shape[0], sync_dist=True)
        self.log("val_metric", metric, prog_bar=True, batch_size=x.shape[0], sync_dist=True)
