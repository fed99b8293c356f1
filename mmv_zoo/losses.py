"""Loss functions by kind. Segmentation losses take logits (B, K, ...) and class ids (B, 1, ...)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class CrossEntropy(nn.Module):
    def __init__(self, class_weights: list[float] | None = None) -> None:
        super().__init__()
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.loss = nn.CrossEntropyLoss(weight=weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(logits, target[:, 0].long())


def _dice(s: Any) -> nn.Module:
    from monai.losses import DiceLoss

    return DiceLoss(softmax=True, to_onehot_y=True, include_background=s.include_background)


def _dice_ce(s: Any) -> nn.Module:
    from monai.losses import DiceCELoss

    return DiceCELoss(softmax=True, to_onehot_y=True, include_background=s.include_background,
                      lambda_dice=s.lambda_dice, lambda_ce=s.lambda_ce)


LOSSES = {
    "mse": lambda s: nn.MSELoss(),
    "l1": lambda s: nn.L1Loss(),
    "cross_entropy": lambda s: CrossEntropy(s.class_weights),
    "dice": _dice,
    "dice_ce": _dice_ce,
}


def build_loss(settings: Any) -> nn.Module:
    return LOSSES[settings.kind](settings)
