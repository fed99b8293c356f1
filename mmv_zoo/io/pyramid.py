"""The resolution levels of an OME-Zarr output, computed block by block from the written full resolution.

Level 0 is written tile by tile while predicting; the lower levels are made at the end from the level
above them: Y and X halved (rounded up) per level, Z, C and T kept, as ome-zarr-py's default scaler
and most NGFF pyramids do (microscopy volumes are usually coarser in Z than in Y and X). Images are
averaged over 2x2 blocks (edges replicated on odd sizes), labels take every second pixel (a mean
would invent label values). A level is read in blocks of two chunks of the level below per axis, so
memory stays at a few chunks whatever the image size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import product
from typing import Any

import numpy as np

PYRAMID_ABOVE = 1024
"""Levels are added while the last one is larger than this in Y or X: a 2048x2048 output has two."""


def level_shapes(shape: tuple[int, ...], above: int = PYRAMID_ABOVE) -> list[tuple[int, ...]]:
    """The (T, C, Z, Y, X) shape of every level, full resolution first, halving Y and X."""
    levels = [tuple(int(s) for s in shape)]
    while max(levels[-1][-2:]) > above:
        *rest, ny, nx = levels[-1]
        levels.append((*rest, -(-ny // 2), -(-nx // 2)))
    return levels


def downsample(block: np.ndarray, labels: bool) -> np.ndarray:
    """`block` (..., Y, X) halved in Y and X: every second pixel for labels, else the 2x2 mean."""
    if labels:
        return block[..., ::2, ::2]
    ny, nx = block.shape[-2:]
    if ny % 2 or nx % 2:
        pad = [(0, 0)] * (block.ndim - 2) + [(0, ny % 2), (0, nx % 2)]
        block = np.pad(block, pad, mode="edge")
        ny, nx = block.shape[-2:]
    work = np.float32 if block.dtype.itemsize <= 2 or block.dtype == np.float32 else np.float64
    mean = block.reshape(*block.shape[:-2], ny // 2, 2, nx // 2, 2).mean(axis=(-3, -1), dtype=work)
    if np.issubdtype(block.dtype, np.integer):
        mean = np.floor(mean + 0.5)  # half up
    return mean.astype(block.dtype, copy=False)


def _blocks(shape: Sequence[int], step: Sequence[int]) -> Iterator[tuple[slice, ...]]:
    starts = [range(0, n, s) for n, s in zip(shape, step, strict=True)]
    for corner in product(*starts):
        yield tuple(slice(c, min(c + s, n)) for c, s, n in zip(corner, step, shape, strict=True))


def build_levels(levels: Sequence[Sequence[Any]], labels: bool) -> tuple[np.ndarray, np.ndarray]:
    """Fill levels 1.. from level 0 and return level 0's per-channel (min, max).

    `levels[k]` holds the arrays of level k (zarr arrays of shape (T, C, Z, Y, X)): the first is read,
    every one is written, so a copy kept elsewhere (a label image's own multiscale) gets the same
    pixels; level 0's copies are filled from its first array.
    """
    n_channels = levels[0][0].shape[1]
    lows = np.full(n_channels, np.inf)
    highs = np.full(n_channels, -np.inf)
    for k, arrays in enumerate(levels):
        src = arrays[0]
        below = levels[k + 1] if k + 1 < len(levels) else None
        step = list(src.chunks[:3])
        if below is not None:  # two chunks of the level below per axis: blocks line up with both grids
            step += [2 * c for c in below[0].chunks[3:]]
        else:
            step += list(src.chunks[3:])
        for index in _blocks(src.shape, step):
            block = np.asarray(src[index])
            if k == 0:
                for c in range(index[1].start, index[1].stop):
                    part = block[:, c - index[1].start]
                    lows[c] = min(lows[c], float(np.nanmin(part)))
                    highs[c] = max(highs[c], float(np.nanmax(part)))
                for copy in arrays[1:]:
                    copy[index] = block
            if below is not None:
                small = downsample(block, labels)
                target = (*index[:3], *(slice(s.start // 2, s.start // 2 + n)
                                        for s, n in zip(index[3:], small.shape[3:], strict=True)))
                for array in below:
                    array[target] = small
    return lows, highs
