"""The framework itself: mmv_zoo's FCN, its training inputs made noisy as its settings block says."""

from __future__ import annotations

from typing import Any

import torch

from mmv_zoo.frameworks.fcn import FCN


class NoisyFCN(FCN):
    """FCN with Gaussian noise of `settings.noise` added to the inputs of every training batch."""

    def _noisy(self, batch: Any) -> Any:
        x, *rest = batch
        return (x + self.settings.noise * torch.randn_like(x), *rest)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return super().training_step(self._noisy(batch), batch_idx)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        return super().validation_step(self._noisy(batch) if self.settings.noisy_validation else batch, batch_idx)
