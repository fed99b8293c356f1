"""FCN: supervised image-to-image training (regression or semantic segmentation) with any network."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from ..losses import build_loss
from ..nets.factory import build_network
from ..optim import build_optimizer, build_scheduler


class InferenceModel(nn.Module):
    """The network plus the task's final activation: what prediction and export run."""

    def __init__(self, net: nn.Module, softmax: bool) -> None:
        super().__init__()
        self.net = net
        self.softmax = softmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        return torch.softmax(y, dim=1) if self.softmax else y


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


class FCN(pl.LightningModule):
    """Network + loss; logs `train_loss`, `val_loss` and `val_metric` (foreground Dice or Pearson)."""

    def __init__(self, entry: dict[str, Any], slug: str | None = None) -> None:
        super().__init__()
        from ..entry import Entry

        self.save_hyperparameters({"entry": entry, "slug": slug})
        self.entry = Entry.model_validate(entry)
        self.slug = slug or self.entry.slug
        mmv = self.entry.mmv
        self.segmentation = mmv.task == "segmentation"
        self.net = build_network(mmv.network, self.entry.spatial_dims, self.entry.in_channels,
                                 self.entry.out_channels)
        self.loss_fn = build_loss(mmv.loss)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def inference_model(self) -> InferenceModel:
        return InferenceModel(self.net, softmax=self.segmentation)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.loss_fn(self(x), y)
        self.log("train_loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=x.shape[0])
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        out = self(x)
        loss = self.loss_fn(out, y)
        metric = foreground_dice(out, y, self.entry.out_channels) if self.segmentation else pearson(out, y)
        self.log("val_loss", loss, prog_bar=True, batch_size=x.shape[0])
        self.log("val_metric", metric, prog_bar=True, batch_size=x.shape[0])

    def configure_optimizers(self) -> Any:
        t = self.entry.mmv.training
        opt = build_optimizer(t.optimizer, self.parameters())
        sched = build_scheduler(t.scheduler, opt, t.max_epochs)
        return opt if sched is None else {"optimizer": opt, "lr_scheduler": sched}
