"""The LightningDataModule: finds and loads the pairs once, serves patches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from ..errors import DataError
from ..registry import resolve
from ..settings.framework import framework_spec
from .dataset import LoadedPair, PatchDataset, load_pair
from .loaders import PatchDataModule
from .loading import build_patch_sets
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

        train_pairs, val_pairs = split_pairs(self.root, self.entry.mmv.data)
        sets = build_patch_sets(train_pairs, val_pairs, self.entry)  # pre-flight check; data.on_bad_file
        self.train_pairs, self.val_pairs, self.skipped_files = sets.train_pairs, sets.val_pairs, sets.skipped
        self.train_set, self.val_set = sets.train_set, sets.val_set


def data_module(entry: Any, root: Path) -> pl.LightningDataModule:
    """The data module the entry's framework trains from (its spec's `data_module`): pairs, unpaired
    folders (CycleGAN) or instance labels (EmbedSeg)."""
    return resolve(framework_spec(entry.mmv.framework).data_module)(entry, root)
