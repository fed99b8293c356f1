"""The LightningDataModule: finds and loads the pairs once, serves patches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from ..errors import DataError
from .base import PatchDataModule
from .dataset import LoadedPair, PatchDataset, load_pair
from .pairs import Pair, split_pairs


def load_all(pairs: list[Pair], entry: Any) -> list[LoadedPair]:
    """Load every pair; if any fails, one error lists every bad file (not just the first)."""
    loaded, problems = [], []
    for pair in pairs:
        try:
            loaded.append(load_pair(pair, entry))
        except DataError as e:
            problems.append(str(e))
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise DataError(f"{len(problems)} bad file(s): " + "; ".join(problems[:5]) + more)
    if entry.mmv.task == "segmentation" and loaded and all(int(p.target.max()) == 0 for p in loaded):
        raise DataError(f"{pairs[0].target.parent}: no label image has any foreground (all zeros); nothing to learn")
    return loaded


class PairedDataModule(PatchDataModule):
    """Training patches drawn anew each epoch; validation patches fixed for the whole run."""

    def __init__(self, entry: Any, root: Path) -> None:
        super().__init__()
        self.entry = entry
        self.root = Path(root)
        self.train_pairs: list[Pair] = []
        self.val_pairs: list[Pair] = []
        self.train_set: PatchDataset | None = None
        self.val_set: PatchDataset | None = None

    @property
    def train_files(self) -> list[str]:
        """Names of the training pairs (run.json)."""
        return [p.name for p in self.train_pairs]

    @property
    def val_files(self) -> list[str]:
        return [p.name for p in self.val_pairs]

    def prepare(self) -> None:
        """Find, read and check every file before training starts (errors name the file)."""
        if self.train_set is not None:
            return
        data, training = self.entry.mmv.data, self.entry.mmv.training
        self.train_pairs, self.val_pairs = split_pairs(self.root, data)
        loaded = load_all(self.train_pairs + self.val_pairs, self.entry)
        train, val = loaded[: len(self.train_pairs)], loaded[len(self.train_pairs) :]
        self.train_set = PatchDataset(train, data.patch, training.patches_per_image, data.augment, training.seed)
        self.val_set = PatchDataset(val, data.patch, max(2, training.patches_per_image // 2), None,
                                    training.seed + 1)


def data_module(entry: Any, root: Path) -> pl.LightningDataModule:
    """The data module the entry's layout needs: unpaired folders or pairs."""
    if entry.mmv.data.layout.layout == "unpaired_folders":
        from .unpaired import UnpairedDataModule

        return UnpairedDataModule(entry, root)
    return PairedDataModule(entry, root)
