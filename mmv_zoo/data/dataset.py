"""Patch datasets of normalized images: random patches with augmentation for training, a fixed set of
patches for validation. 2D and 3D share every line (arrays are C, [Z], Y, X).

Images are held in memory, or — with the persistent cache or partial loading — loaded when an epoch
first needs them (memory-mapped from the cache) and released when partial loading moves on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError
from ..io.read import Image, read_image, select_channels
from ..io.source import open_image
from ..transforms.normalize import normalize
from ..transforms.stain import StainError
from .pairs import Pair

MAX_FOREGROUND_POINTS = 20_000
"""Foreground pixels remembered per image for foreground-weighted sampling (a random subset)."""


@dataclass
class LoadedPair:
    name: str
    source: np.ndarray  # float32 (C, [Z], Y, X), normalized
    target: np.ndarray  # float32 for regression, int64 (1, ...) class ids for segmentation
    exclusion: np.ndarray | None = None  # uint8 (1, ...): 1 where a pixel is taken out of the loss


def load_exclusion(pair: Pair, dims: int, spatial: tuple[int, ...]) -> np.ndarray | None:
    """The pair's exclusion mask as uint8 (1, ...) (any channel non-zero: excluded), checked against
    the source's spatial shape."""
    if pair.exclusion is None:
        return None
    mask = read_image(pair.exclusion, dims).data
    if mask.shape[1:] != spatial:
        raise DataError(f"{pair.exclusion}: exclusion mask shape {tuple(mask.shape[1:])} differs from its source "
                        f"{pair.source.name} {spatial} (data.layout.exclusion)")
    return (mask != 0).any(axis=0, keepdims=True).astype(np.uint8)


def read_source(pair: Pair, spatial_dims: int) -> Image:
    """The pair's source image: the whole file, or the 2D plane `pair.frame` of a stack."""
    if pair.frame is None:
        return read_image(pair.source, spatial_dims)
    t, z = pair.frame
    with open_image(pair.source) as src:
        info = src.scene(0)
        data = src.read_block(t=t, z=(z, z + 1))[:, 0]
    return Image(data=data, path=pair.source, pixel_sizes=dict(info.pixel_sizes),
                 channel_names=list(info.channel_names))


def load_source_only(pair: Pair, entry: Any) -> LoadedPair:
    """A self-supervised image (no target): read, normalized with the statistics of the whole image,
    then cut to the pair's region; its target has no channels (the image is its own target)."""
    src = select_channels(read_source(pair, entry.spatial_dims), entry.in_channels)
    try:
        source = normalize(src, entry.mmv.data.normalization.source)
    except StainError as e:
        raise DataError(f"{pair.source}: {e}") from None
    if pair.region is not None:
        source = _crop(source, pair.region)
    return LoadedPair(pair.name, source, np.zeros((0, *source.shape[1:]), np.float32))


def load_pair(pair: Pair, entry: Any) -> LoadedPair:
    """Read, check and normalize one pair as the entry says."""
    if pair.target is None:
        return load_source_only(pair, entry)
    dims, mmv = entry.spatial_dims, entry.mmv
    src = select_channels(read_image(pair.source, dims), entry.in_channels)
    tgt_img = read_image(pair.target, dims)
    if src.shape[1:] != tgt_img.data.shape[1:]:
        raise DataError(
            f"{pair.target}: shape {tuple(tgt_img.data.shape[1:])} differs from its source "
            f"{pair.source.name} {tuple(src.shape[1:])}"
        )
    exclusion = load_exclusion(pair, dims, tuple(src.shape[1:]))
    try:
        source = normalize(src, mmv.data.normalization.source)
    except StainError as e:  # macenko: the image has no stains to estimate
        raise DataError(f"{pair.source}: {e}") from None
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
    if pair.region is not None:  # one image split into a training and a validation region
        source, target = _crop(source, pair.region), _crop(target, pair.region)
        exclusion = None if exclusion is None else _crop(exclusion, pair.region)
    return LoadedPair(pair.name, source, target, exclusion)


def _crop(x: np.ndarray, region: tuple[tuple[int, int], ...]) -> np.ndarray:
    """The [start, stop) `region` of the last len(region) (spatial) axes of `x`."""
    return np.ascontiguousarray(x[(..., *(slice(a, b) for a, b in region))])


def pad_to(x: np.ndarray, size: list[int]) -> np.ndarray:
    """Reflect-pad (edge-pad for tiny images) the spatial axes of x up to at least `size`."""
    pad = [(0, 0)] + [(0, max(0, s - n)) for s, n in zip(size, x.shape[1:], strict=True)]
    if not any(p[1] for p in pad):
        return x
    mode = "reflect" if all(p[1] < n for p, n in zip(pad[1:], x.shape[1:], strict=True)) else "edge"
    return np.pad(x, pad, mode=mode)


def foreground_points(target: np.ndarray, seed: int) -> np.ndarray:
    """Flat indices (into the spatial shape) of up to MAX_FOREGROUND_POINTS foreground pixels: labels
    above 0, or for intensities the pixels above the target's 90th percentile."""
    t = np.asarray(target[0])
    fg = t > 0 if np.issubdtype(t.dtype, np.integer) else t > np.percentile(t, 90)
    points = np.flatnonzero(fg)
    if len(points) > MAX_FOREGROUND_POINTS:
        points = np.sort(np.random.default_rng(seed).choice(points, MAX_FOREGROUND_POINTS, replace=False))
    return points


class PatchDataset(Dataset):
    """`patches_per_image` random patches per image and epoch, flipped and rotated at random.

    `pairs` are LoadedPairs, or Pairs that `loader` loads when an epoch first needs them. With
    `partial` (files_per_epoch, refresh_every) an epoch draws from a seeded random subset of the
    images, and images outside it are released. `foreground_fraction` of the patches are centred on
    a foreground pixel. With `exclusion` items are (source, target, keep) where keep (float, 0 on
    excluded pixels) weights the loss."""

    def __init__(self, pairs: Sequence[LoadedPair | Pair], patch: list[int], patches_per_image: int, augment: Any,
                 seed: int = 0, *, loader: Callable[[Pair], LoadedPair] | None = None,
                 partial: tuple[int, int] | None = None, foreground_fraction: float = 0.0,
                 exclusion: bool | None = None) -> None:
        self.items = list(pairs)
        self.loader = loader
        self.patch = list(patch)
        self.per_image = patches_per_image
        self.augment = augment
        self.seed = seed
        self.partial = partial
        self.foreground_fraction = foreground_fraction
        self.exclusion = exclusion if exclusion is not None else any(
            p.exclusion is not None for p in self.items)
        self._loaded: dict[int, LoadedPair] = {}
        self._points: dict[int, np.ndarray] = {}
        self.epoch = 0
        self.active = self._active(0)

    @property
    def pairs(self) -> list[LoadedPair]:
        """Every pair, loaded (in memory datasets; a lazy one loads them all)."""
        return [self.get(i) for i in range(len(self.items))]

    def _active(self, epoch: int) -> list[int]:
        n = len(self.items)
        if self.partial is None or self.partial[0] >= n:
            return list(range(n))
        files, refresh = self.partial
        rng = np.random.default_rng((self.seed, 7919, epoch // refresh))
        return sorted(int(i) for i in rng.choice(n, files, replace=False))

    def __len__(self) -> int:
        return len(self.active) * self.per_image

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.active = self._active(epoch)
        if self.partial is not None:  # release what the new subset does not use
            keep = set(self.active)
            for i in [i for i in self._loaded if i not in keep]:
                del self._loaded[i]
                self._points.pop(i, None)

    def get(self, i: int) -> LoadedPair:
        """Image i, padded to the patch size (loaded now if it is not in memory)."""
        if i not in self._loaded:
            item = self.items[i]
            if isinstance(item, Pair):
                if self.loader is None:
                    raise TypeError("PatchDataset of Pairs needs a loader")
                item = self.loader(item)
            self._loaded[i] = LoadedPair(item.name, pad_to(item.source, self.patch), pad_to(item.target, self.patch),
                                         None if item.exclusion is None else pad_to(item.exclusion, self.patch))
        return self._loaded[i]

    def _start(self, i: int, pair: LoadedPair, rng: np.random.Generator) -> list[int]:
        shape = pair.source.shape[1:]
        if self.foreground_fraction and rng.random() < self.foreground_fraction:
            if i not in self._points:
                self._points[i] = foreground_points(pair.target, self.seed + i)
            points = self._points[i]
            if len(points):
                centre = np.unravel_index(int(points[rng.integers(len(points))]), shape)
                return [int(min(max(c - p // 2, 0), n - p)) for c, p, n in zip(centre, self.patch, shape, strict=True)]
        return [int(rng.integers(0, n - p + 1)) for n, p in zip(shape, self.patch, strict=True)]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        i = self.active[index // self.per_image]
        pair = self.get(i)
        starts = self._start(i, pair, rng)
        window = (slice(None), *(slice(s, s + p) for s, p in zip(starts, self.patch, strict=True)))
        arrays = [pair.source[window], pair.target[window]]
        if self.exclusion:
            arrays.append(np.zeros_like(pair.target[window], dtype=np.uint8) if pair.exclusion is None
                          else pair.exclusion[window])
        arrays = augment_many(arrays, rng, self.augment)
        x = torch.from_numpy(np.ascontiguousarray(arrays[0], dtype=np.float32))
        y = np.ascontiguousarray(arrays[1])
        y = torch.from_numpy(y.astype(np.int64) if np.issubdtype(y.dtype, np.integer) else y.astype(np.float32))
        if not self.exclusion:
            return x, y
        keep = torch.from_numpy((np.ascontiguousarray(arrays[2]) == 0).astype(np.float32))
        return x, y, keep


def augment_many(arrays: list[np.ndarray], rng: np.random.Generator, settings: Any) -> list[np.ndarray]:
    """The same random flips along every spatial axis and y-x rotation by multiples of 90 degrees on
    all arrays (C, [Z], Y, X) of one sample."""
    if settings is None:
        return arrays
    if settings.flip:
        for axis in range(1, arrays[0].ndim):
            if rng.random() < 0.5:
                arrays = [np.flip(a, axis) for a in arrays]
    if settings.rotate90 and arrays[0].shape[-1] == arrays[0].shape[-2]:
        k = int(rng.integers(0, 4))
        arrays = [np.rot90(a, k, axes=(-2, -1)) for a in arrays]
    return arrays


def augment(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, settings: Any) -> tuple[np.ndarray, np.ndarray]:
    """The same random flips and y-x rotation by multiples of 90 degrees on source and target."""
    a, b = augment_many([x, y], rng, settings)
    return a, b
