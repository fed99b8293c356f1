"""Patch datasets of normalized images: random patches with augmentation for training, a fixed set of
patches for validation. 2D and 3D share every line (arrays are C, [Z], Y, X)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError
from ..io.read import read_image, select_channels
from ..transforms.normalize import normalize
from .pairs import Pair


@dataclass
class LoadedPair:
    name: str
    source: np.ndarray  # float32 (C, [Z], Y, X), normalized
    target: np.ndarray  # float32 for regression, int64 (1, ...) class ids for segmentation


def load_pair(pair: Pair, entry: Any) -> LoadedPair:
    """Read, check and normalize one pair as the entry says."""
    dims, mmv = entry.spatial_dims, entry.mmv
    src = select_channels(read_image(pair.source, dims), entry.in_channels)
    tgt_img = read_image(pair.target, dims)
    if src.shape[1:] != tgt_img.data.shape[1:]:
        raise DataError(
            f"{pair.target}: shape {tuple(tgt_img.data.shape[1:])} differs from its source "
            f"{pair.source.name} {tuple(src.shape[1:])}"
        )
    source = normalize(src, mmv.data.normalization.source)
    if mmv.task == "segmentation":
        if tgt_img.data.shape[0] != 1:
            raise DataError(f"{pair.target}: a label image needs one channel, it has {tgt_img.data.shape[0]}")
        raw = tgt_img.data
        if mmv.data.labels == "foreground":
            labels = (raw > 0).astype(np.int64)
        else:
            if np.issubdtype(raw.dtype, np.floating) and not np.array_equal(raw, np.round(raw)):
                raise DataError(f"{pair.target}: label image has non-integer values ({raw.dtype}); class ids "
                                "must be whole numbers (or use data.labels: foreground)")
            labels = raw.astype(np.int64)
        top = int(labels.max())
        if labels.min() < 0 or top >= entry.out_channels:
            raise DataError(
                f"{pair.target}: label values {int(labels.min())}..{top} outside the {entry.out_channels} classes "
                f"{entry.outputs[0].channel_names} (use data.labels: foreground for instance labels)"
            )
        target = labels
    else:
        tgt = select_channels(tgt_img, entry.out_channels)
        target = normalize(tgt, mmv.data.normalization.target)
    return LoadedPair(pair.name, source, target)


def pad_to(x: np.ndarray, size: list[int]) -> np.ndarray:
    """Reflect-pad (edge-pad for tiny images) the spatial axes of x up to at least `size`."""
    pad = [(0, 0)] + [(0, max(0, s - n)) for s, n in zip(size, x.shape[1:], strict=True)]
    if not any(p[1] for p in pad):
        return x
    mode = "reflect" if all(p[1] < n for p, n in zip(pad[1:], x.shape[1:], strict=True)) else "edge"
    return np.pad(x, pad, mode=mode)


class PatchDataset(Dataset):
    """`patches_per_image` random patches per image and epoch, flipped and rotated at random."""

    def __init__(self, pairs: list[LoadedPair], patch: list[int], patches_per_image: int, augment: Any,
                 seed: int = 0) -> None:
        self.pairs = [LoadedPair(p.name, pad_to(p.source, patch), pad_to(p.target, patch)) for p in pairs]
        self.patch = list(patch)
        self.per_image = patches_per_image
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.pairs) * self.per_image

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        pair = self.pairs[index // self.per_image]
        starts = [int(rng.integers(0, n - p + 1)) for n, p in zip(pair.source.shape[1:], self.patch, strict=True)]
        window = (slice(None), *(slice(s, s + p) for s, p in zip(starts, self.patch, strict=True)))
        x, y = pair.source[window], pair.target[window]
        x, y = augment(x, y, rng, self.augment)
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))


def augment(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, settings: Any) -> tuple[np.ndarray, np.ndarray]:
    """The same random flips and y-x rotation by multiples of 90 degrees on source and target."""
    spatial = range(1, x.ndim)
    if settings is None:
        return x, y
    if settings.flip:
        for axis in spatial:
            if rng.random() < 0.5:
                x, y = np.flip(x, axis), np.flip(y, axis)
    if settings.rotate90 and x.shape[-1] == x.shape[-2]:
        k = int(rng.integers(0, 4))
        x, y = np.rot90(x, k, axes=(-2, -1)), np.rot90(y, k, axes=(-2, -1))
    return x, y
