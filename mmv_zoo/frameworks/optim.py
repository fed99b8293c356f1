"""Optimizers and learning-rate schedulers by kind."""

from __future__ import annotations

from typing import Any

import torch


def build_optimizer(settings: Any, params: Any) -> torch.optim.Optimizer:
    if settings.kind == "adam":
        return torch.optim.Adam(params, lr=settings.lr, betas=settings.betas, weight_decay=settings.weight_decay)
    if settings.kind == "adamw":
        return torch.optim.AdamW(params, lr=settings.lr, betas=settings.betas, weight_decay=settings.weight_decay)
    if settings.kind == "sgd":
        return torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum,
                               weight_decay=settings.weight_decay, nesterov=settings.nesterov)
    raise ValueError(f"unknown optimizer {settings.kind!r}")  # pragma: no cover - schema rejects it


def build_scheduler(settings: Any, optimizer: torch.optim.Optimizer, max_epochs: int) -> dict[str, Any] | None:
    """A Lightning `lr_scheduler` config dict, or None."""
    if settings.kind == "none":
        return None
    if settings.kind == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs, eta_min=settings.min_lr)
    elif settings.kind == "step":
        sched = torch.optim.lr_scheduler.StepLR(optimizer, step_size=settings.step_size, gamma=settings.gamma)
    elif settings.kind == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=settings.factor,
                                                           patience=settings.patience)
        return {"scheduler": sched, "monitor": "val_loss", "interval": "epoch"}
    else:  # pragma: no cover
        raise ValueError(f"unknown scheduler {settings.kind!r}")
    return {"scheduler": sched, "interval": "epoch"}
