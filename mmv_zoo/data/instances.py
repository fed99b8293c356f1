"""Training data for instance segmentation (task instance): instance label images read as they are,
optional exclusion masks, and patches drawn on the fly.

Each training patch is centred on a random foreground pixel (objects, not empty space, are what the
loss learns from) except for a share drawn at uniformly random positions (`embedseg.background_share`),
flipped and rotated like the other tasks' patches; then each instance's centre is computed on the
patch (the part of the object it holds): its centroid or its medoid. A patch's target holds three
channels: instance ids, each instance's id at its centre pixel, and the exclusion mask (1: out of the
loss). 2D and 3D share every line (arrays are C, [Z], Y, X).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError
from ..io.read import read_image, select_channels
from ..transforms.normalize import normalize
from ..transforms.stain import StainError
from .dataset import augment, pad_to
from .module import PairedDataModule
from .pairs import Pair, split_pairs

MEDOID_PIXELS = 2000
"""Objects larger than this get their medoid from a random sample of this many of their pixels."""


@dataclass
class LoadedInstances:
    name: str
    source: np.ndarray  # float32 (C, [Z], Y, X), normalized
    labels: np.ndarray  # int64 (1, [Z], Y, X) instance ids, 0 background
    exclusion: np.ndarray  # uint8 (1, [Z], Y, X), 1: left out of the loss


def _integer_labels(raw: np.ndarray, path: Path) -> np.ndarray:
    if np.issubdtype(raw.dtype, np.floating) and not np.array_equal(raw, np.round(raw)):
        raise DataError(f"{path}: label image has non-integer values ({raw.dtype}); instance ids must be whole "
                        "numbers (0 background, 1, 2, ... one per object)")
    if raw.min() < 0:
        raise DataError(f"{path}: label image has negative values ({int(raw.min())}); instance ids are 0 "
                        "(background) and 1, 2, ...")
    return raw.astype(np.int64)


def check_instance_labels(labels: np.ndarray, path: Path) -> None:
    """DataError when `labels` look like a binary mask (one non-zero value over several separate objects)
    rather than instance labels."""
    from scipy import ndimage

    values = np.unique(labels)
    values = values[values != 0]
    if len(values) != 1:
        return
    _, parts = ndimage.label(labels[0] != 0)
    if parts > 1:
        raise DataError(
            f"{path}: a binary mask, not instance labels: the single value {int(values[0])} covers {parts} "
            "separate objects; give each object its own id (e.g. skimage.measure.label) or, for one object "
            "in several parts, keep it in an image that has other objects too")


def load_instances(pair: Pair, entry: Any) -> LoadedInstances:
    """Read, check and normalize one (image, instance labels[, exclusion]) pair."""
    dims, mmv = entry.spatial_dims, entry.mmv
    src = select_channels(read_image(pair.source, dims), entry.in_channels)
    tgt = read_image(pair.target, dims).data
    if src.shape[1:] != tgt.shape[1:]:
        raise DataError(f"{pair.target}: shape {tuple(tgt.shape[1:])} differs from its source {pair.source.name} "
                        f"{tuple(src.shape[1:])}")
    if tgt.shape[0] != 1:
        raise DataError(f"{pair.target}: an instance label image needs one channel, it has {tgt.shape[0]}")
    labels = _integer_labels(np.asarray(tgt), pair.target)
    check_instance_labels(labels, pair.target)
    exclusion = np.zeros(labels.shape, np.uint8)
    excl_path = pair.exclusion
    if excl_path is not None:
        excl = np.asarray(read_image(Path(excl_path), dims).data)
        if excl.shape[0] != 1 or excl.shape[1:] != labels.shape[1:]:
            raise DataError(f"{excl_path}: exclusion mask of shape {tuple(excl.shape[1:])} ({excl.shape[0]} "
                            f"channel(s)) does not match its label image {Path(pair.target).name} "
                            f"{tuple(labels.shape[1:])} (1 channel)")
        exclusion = (excl != 0).astype(np.uint8)
    return LoadedInstances(pair.name, normalize(src, mmv.data.normalization.source), labels, exclusion)


def load_all_instances(pairs: list[Pair], entry: Any) -> list[LoadedInstances]:
    """Load every pair; if any fails, one error lists every bad file."""
    loaded, problems = [], []
    for pair in pairs:
        try:
            loaded.append(load_instances(pair, entry))
        except StainError as e:  # macenko: no stains to estimate
            problems.append(f"{pair.source}: {e}")
        except DataError as e:
            problems.append(str(e))
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise DataError(f"{len(problems)} bad file(s): " + "; ".join(problems[:5]) + more)
    if loaded and all(int(p.labels.max()) == 0 for p in loaded):
        raise DataError(f"{pairs[0].target.parent}: no label image has any instance (all zeros); nothing to learn")
    return loaded


# ---------------------------------------------------------------- centres


def centre_map(labels: np.ndarray, exclusion: np.ndarray, kind: str, scale: list[float],
               rng: np.random.Generator) -> np.ndarray:
    """(1, *S) int64: each instance's id at its centre pixel (pixels under the exclusion mask left out):
    the pixel nearest its centroid, or its medoid (the pixel with the smallest summed distance, in
    physical units `scale` per axis, to all its other pixels)."""
    out = np.zeros(labels.shape, np.int64)
    lab = np.where(exclusion[0] == 0, labels[0], 0)
    ids = np.unique(lab)
    for k in ids[ids != 0]:
        coords = np.argwhere(lab == k)
        if kind == "centroid":
            at = np.clip(np.round(coords.mean(0)).astype(int), 0, np.array(lab.shape) - 1)
        else:
            at = coords[_medoid(coords * np.asarray(scale), rng)]
        out[(0, *at)] = k
    return out


def _medoid(points: np.ndarray, rng: np.random.Generator) -> int:
    refs = points
    cand = np.arange(len(points))
    if len(points) > MEDOID_PIXELS:
        cand = rng.choice(len(points), MEDOID_PIXELS, replace=False)
        refs = points[rng.choice(len(points), MEDOID_PIXELS, replace=False)]
    total = np.zeros(len(cand))
    for start in range(0, len(cand), 256):  # bounded memory
        block = points[cand[start:start + 256]]
        total[start:start + 256] = np.sqrt(((block[:, None, :] - refs[None]) ** 2).sum(-1)).sum(1)
    return int(cand[int(np.argmin(total))])


# ---------------------------------------------------------------- patches


def _pad(x: np.ndarray, size: list[int], value: int) -> np.ndarray:
    """Pad the spatial axes at the end up to `size` with `value` (labels: background; exclusion: the
    padding, mirrored image without labels, is left out of the loss)."""
    pad = [(0, 0)] + [(0, max(0, s - n)) for s, n in zip(size, x.shape[1:], strict=True)]
    return np.pad(x, pad, constant_values=value) if any(p[1] for p in pad) else x


class InstancePatchDataset(Dataset):
    """`patches_per_image` patches per image and epoch: (source (C, *P) float32, target (3, *P) int64)."""

    def __init__(self, items: list[LoadedInstances], patch: list[int], patches_per_image: int, augment: Any,
                 settings: Any, scale: list[float], seed: int = 0) -> None:
        self.items = [LoadedInstances(p.name, pad_to(p.source, patch), _pad(p.labels, patch, 0),
                                      _pad(p.exclusion, patch, 1)) for p in items]
        self.foreground = [np.argwhere((p.labels[0] != 0) & (p.exclusion[0] == 0)) for p in self.items]
        self.patch = list(patch)
        self.per_image = patches_per_image
        self.augment = augment
        self.settings = settings
        self.scale = list(scale)
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.items) * self.per_image

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _starts(self, i: int, rng: np.random.Generator) -> list[int]:
        shape = self.items[i].source.shape[1:]
        fg = self.foreground[i]
        s = self.settings
        if s.foreground_sampling and len(fg) and rng.random() >= s.background_share:
            centre = fg[int(rng.integers(0, len(fg)))]
            return [int(np.clip(c - p // 2, 0, n - p)) for c, p, n in zip(centre, self.patch, shape, strict=True)]
        return [int(rng.integers(0, n - p + 1)) for n, p in zip(shape, self.patch, strict=True)]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        i = index // self.per_image
        item = self.items[i]
        starts = self._starts(i, rng)
        window = (slice(None), *(slice(s, s + p) for s, p in zip(starts, self.patch, strict=True)))
        x = item.source[window]
        y = np.concatenate([item.labels[window], item.exclusion[window].astype(np.int64)])
        x, y = augment(x, y, rng, self.augment)
        labels, exclusion = np.ascontiguousarray(y[:1]), np.ascontiguousarray(y[1:])
        centres = centre_map(labels, exclusion, self.settings.centre, self.scale, rng)
        target = np.concatenate([labels, centres, exclusion])
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(target)


class InstanceDataModule(PairedDataModule):
    """Instance labels (and exclusion masks) found like any pairs, patches drawn as above."""

    def prepare(self) -> None:
        if self.train_set is not None:
            return
        entry = self.entry
        data, training, settings = entry.mmv.data, entry.mmv.training, entry.mmv.embedseg
        self.train_pairs, self.val_pairs = split_pairs(self.root, data)
        loaded = load_all_instances(self.train_pairs + self.val_pairs, entry)
        train, val = loaded[: len(self.train_pairs)], loaded[len(self.train_pairs):]
        scale = [a.scale for a in entry.inputs[0].space_axes]
        self.train_set = InstancePatchDataset(train, data.patch, training.patches_per_image, data.augment, settings,
                                              scale, training.seed)
        self.val_set = InstancePatchDataset(val, data.patch, training.val_patches, None,
                                            settings, scale, training.seed + 1)
