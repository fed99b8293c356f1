"""What every patch data module shares: loaders over a training and a validation patch dataset.

The training loader shuffles with a generator seeded by (seed, epoch) and can be resumed mid-epoch:
its state is the number of batches the trainer has processed in the epoch, and a loader restored
from a checkpoint skips that many, so a resumed run sees the batches an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, RandomSampler


class ResumableLoader(DataLoader):
    """A DataLoader whose `state_dict` is the batches processed so far in the epoch (asked from
    `consumed`); after `load_state_dict` the next iteration starts after them."""

    def __init__(self, *args: Any, consumed: Callable[[], int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.consumed = consumed
        self._skip = 0

    def state_dict(self) -> dict[str, int]:
        return {"consumed": int(self.consumed()) if self.consumed is not None else 0}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._skip = int(state.get("consumed", 0))

    def __iter__(self) -> Iterator[Any]:
        it = super().__iter__()
        skip, self._skip = self._skip, 0
        for _ in range(skip):
            if next(it, None) is None:
                break
        return it


class PatchDataModule(pl.LightningDataModule):
    """What training asks of a framework's data module (its spec's `data_module`, built as
    `Class(entry, data_folder)`): `prepare()` finds, reads and checks every file before the run
    folder exists and fills `train_set` and `val_set` (datasets with `set_epoch`); `train_files` and
    `val_files` name what each holds and `skipped_files` what was left out (all recorded in run.json)."""

    entry: Any
    train_set: Any = None
    val_set: Any = None

    def __init__(self) -> None:
        super().__init__()
        self.skipped_files: list[str] = []
        """`path: reason` of the input files left out (data.on_bad_file: skip)."""

    def prepare(self) -> None:
        raise NotImplementedError

    @property
    def train_files(self) -> list[str]:
        """Names of the training images or pairs."""
        raise NotImplementedError

    @property
    def val_files(self) -> list[str]:
        """Names of the validation images or pairs."""
        raise NotImplementedError

    @property
    def batch_size(self) -> int:
        """The entry's training.batch_size (Lightning's batch-size finder sets it here)."""
        return self.entry.mmv.training.batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self.entry.mmv.training.batch_size = int(value)

    def setup(self, stage: str | None = None) -> None:
        self.prepare()

    def _consumed(self) -> int:
        trainer = self.trainer
        return 0 if trainer is None else trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def _loader(self, dataset: Any, shuffle: bool, epoch: int = 0) -> DataLoader:
        t = self.entry.mmv.training
        common = {"batch_size": t.batch_size, "num_workers": t.num_workers,
                  "persistent_workers": t.num_workers > 0, "drop_last": False}
        if not shuffle:
            return DataLoader(dataset, shuffle=False, **common)
        generator = torch.Generator().manual_seed(t.seed * 100_003 + epoch)
        return ResumableLoader(dataset, sampler=RandomSampler(dataset, generator=generator),
                               consumed=self._consumed, **common)

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        self.train_set.set_epoch(epoch)
        return self._loader(self.train_set, shuffle=True, epoch=epoch)

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None
        return self._loader(self.val_set, shuffle=False)
