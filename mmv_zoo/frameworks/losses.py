"""Loss functions by kind. Segmentation losses take logits (B, K, ...) and class ids (B, 1, ...).

Every loss takes an optional `weight` (B, 1, ...): 1 where a pixel counts, 0 where an exclusion
(cost) mask takes it out; excluded pixels then neither add to the loss nor get a gradient."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def _weighted_mean(per_pixel: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean of `per_pixel` (B, C, ...) over the pixels where `weight` (B, 1, ...) is non-zero."""
    w = weight.to(per_pixel.dtype).expand_as(per_pixel)
    return (per_pixel * w).sum() / w.sum().clamp_min(1.0)


class Regression(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        fn = F.mse_loss if self.kind == "mse" else F.l1_loss
        if weight is None:
            return fn(pred, target)
        return _weighted_mean(fn(pred, target, reduction="none"), weight)


class CrossEntropy(nn.Module):
    def __init__(self, class_weights: list[float] | None = None) -> None:
        super().__init__()
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", weight, persistent=False)
        self.loss = nn.CrossEntropyLoss(weight=weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        t = target[:, 0].long()
        if weight is None:
            return self.loss(logits, t)
        cw = self.class_weights
        per_pixel = F.cross_entropy(logits, t, weight=cw, reduction="none")
        norm = weight[:, 0].to(per_pixel.dtype) * (cw[t] if cw is not None else 1.0)  # as torch's weighted mean
        return (per_pixel * weight[:, 0]).sum() / norm.sum().clamp_min(1e-8)


def masked_dice(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, include_background: bool = True,
                smooth: float = 1e-5) -> torch.Tensor:
    """Soft Dice over the softmax probabilities (per sample and class, then averaged, as MONAI's
    DiceLoss) counting only pixels whose weight is non-zero."""
    k = logits.shape[1]
    probs = torch.softmax(logits, 1)
    onehot = F.one_hot(target[:, 0].long(), k).movedim(-1, 1).to(probs.dtype)
    if not include_background:
        probs, onehot = probs[:, 1:], onehot[:, 1:]
    w = weight.to(probs.dtype)
    probs, onehot = probs * w, onehot * w
    dims = tuple(range(2, logits.ndim))
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    return (1.0 - (2.0 * inter + smooth) / (denom + smooth)).mean()


class Dice(nn.Module):
    """Soft Dice (MONAI's DiceLoss without a mask), optionally plus cross-entropy."""

    def __init__(self, s: Any, with_ce: bool) -> None:
        super().__init__()
        from monai.losses import DiceCELoss, DiceLoss

        self.include_background = s.include_background
        self.lambda_dice = getattr(s, "lambda_dice", 1.0)
        self.lambda_ce = getattr(s, "lambda_ce", 1.0) if with_ce else 0.0
        self.plain = (DiceCELoss(softmax=True, to_onehot_y=True, include_background=s.include_background,
                                 lambda_dice=s.lambda_dice, lambda_ce=s.lambda_ce) if with_ce
                      else DiceLoss(softmax=True, to_onehot_y=True, include_background=s.include_background))

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        if weight is None:
            return self.plain(logits, target)
        loss = self.lambda_dice * masked_dice(logits, target, weight, self.include_background)
        if self.lambda_ce:
            per_pixel = F.cross_entropy(logits, target[:, 0].long(), reduction="none")
            loss = loss + self.lambda_ce * _weighted_mean(per_pixel[:, None], weight)
        return loss


LOSSES = {
    "mse": lambda s: Regression("mse"),
    "l1": lambda s: Regression("l1"),
    "cross_entropy": lambda s: CrossEntropy(s.class_weights),
    "dice": lambda s: Dice(s, with_ce=False),
    "dice_ce": lambda s: Dice(s, with_ce=True),
}


def build_loss(settings: Any) -> nn.Module:
    return LOSSES[settings.kind](settings)
