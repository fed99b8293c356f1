"""What every patch data module shares: loaders over a training and a validation patch dataset."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader


class PatchDataModule(pl.LightningDataModule):
    """Subclasses fill `train_set` and `val_set` (datasets with `set_epoch`) in `prepare()`."""

    entry: Any
    train_set: Any = None
    val_set: Any = None

    def prepare(self) -> None:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        self.prepare()

    def _loader(self, dataset: Any, shuffle: bool) -> DataLoader:
        t = self.entry.mmv.training
        return DataLoader(dataset, batch_size=t.batch_size, shuffle=shuffle, num_workers=t.num_workers,
                          persistent_workers=t.num_workers > 0, drop_last=False)

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None
        if self.trainer is not None:
            self.train_set.set_epoch(self.trainer.current_epoch)
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None
        return self._loader(self.val_set, shuffle=False)
