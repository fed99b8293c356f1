"""Tiled prediction: tiles of valid network sizes, cropped by the halo, blended where they overlap.

The image is padded by the halo on every side (symmetric mirroring, as bioimageio.core does), so an
output pixel sees the same context whether it is predicted in one piece or in tiles, by mmv-zoo or
by a BioImage.IO consumer. Each tile is `core + 2 * halo` long per axis; only its core is kept. With
a halo at least the network's receptive field the result does not depend on the tiling at all;
`overlap` adds blended overlap between neighbouring cores for networks whose field is wider than
the halo (without it, overlapping cores are simply overwritten: with a halo covering the receptive
field they hold the same values). Tile sizes are the largest valid sizes within a voxel budget,
so memory is bounded by the tile, not the image. The output is written into any array with numpy
slicing (numpy, zarr, ...).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np

from ..settings.networks import SizeRule

DEFAULT_BUDGET = {2: 1024 * 1024, 3: 64 * 256 * 256}
"""Default voxels per tile (input side, halo included)."""
BLENDS = ("cosine", "gaussian", "flat")


@dataclass(frozen=True)
class TilePlan:
    shape: tuple[int, ...]
    """Spatial shape of the image."""
    tile: tuple[int, ...]
    """Input tile size per axis (valid for the network, halo included)."""
    halo: tuple[int, ...]
    overlap: tuple[int, ...]
    """Blended overlap between neighbouring cores per axis (pixels)."""

    @property
    def core(self) -> tuple[int, ...]:
        return tuple(t - 2 * h for t, h in zip(self.tile, self.halo, strict=True))

    anchor: tuple[int, ...] = ()
    """Tile starts are multiples of this per axis (the network's step), so that every tile sees the
    image on the same downsampling grid as a whole-image pass."""

    def starts(self, axis: int) -> list[int]:
        """Core start positions along `axis` (the last core reaches the image border)."""
        a = self.anchor[axis] if self.anchor else 1
        return _starts(self.shape[axis], self.core[axis], self.overlap[axis], a)

    def __len__(self) -> int:
        return math.prod(len(self.starts(a)) for a in range(len(self.shape)))

    def tiles(self) -> Iterator[tuple[int, ...]]:
        return product(*(self.starts(a) for a in range(len(self.shape))))

    @property
    def work(self) -> float:
        """Voxels the network processes per image voxel (1.0: no tiling or padding overhead)."""
        return len(self) * math.prod(self.tile) / math.prod(self.shape)


def _starts(n: int, core: int, overlap: int, anchor: int) -> list[int]:
    if n <= core:
        return [0]
    stride = max(anchor, (core - overlap) // anchor * anchor)
    out = list(range(0, n - core, stride))
    last = -(-(n - core) // anchor) * anchor
    return out + [last] if last > out[-1] else out


def plan_tiles(shape: Sequence[int], rules: Sequence[SizeRule], halo: Sequence[int], budget: int,
               overlap: float = 0.0) -> TilePlan:
    """The tile size within `budget` voxels that makes the network process the fewest voxels.

    One tile holds the whole (padded) image when it fits. Otherwise every combination of valid
    sizes is scored by its work (tiles x tile voxels); per axis only sizes that lower that axis'
    work are candidates, which keeps the search small. `overlap` is the fraction of a core blended
    with each neighbour. Raises ValueError when no tile leaves any output after the halo crop.
    """
    shape, halo = tuple(shape), tuple(halo)
    options = [_axis_options(n, r, h, overlap) for n, r, h in zip(shape, rules, halo, strict=True)]
    best: tuple[float, tuple[int, ...]] | None = None
    for combo in product(*options):
        voxels = math.prod(t for t, _ in combo)
        if voxels > budget and best is not None:
            continue
        work = math.prod(c for _, c in combo)
        key = (work if voxels <= budget else math.inf, voxels)
        if best is None or key < best[0]:
            best = (key, tuple(t for t, _ in combo))
    assert best is not None
    tile = best[1]
    cores = [t - 2 * h for t, h in zip(tile, halo, strict=True)]
    ov = tuple(min(c - 1, int(round(overlap * c))) if n > c else 0 for c, n in zip(cores, shape, strict=True))
    return TilePlan(shape, tile, halo, ov, tuple(max(1, r.step) for r in rules))


def _axis_options(n: int, rule: SizeRule, halo: int, overlap: float) -> list[tuple[int, float]]:
    """(tile size, tiles x size) along one axis, for the valid sizes that lower the work as they grow."""
    anchor = max(1, rule.step)
    largest = rule.fit(n + 2 * halo)
    size = rule.fit(2 * halo + anchor)
    if size - 2 * halo < 1:
        raise ValueError(f"tile {size} leaves no output after cropping the halo {halo} from both sides")
    out: list[tuple[int, float]] = []
    while True:
        core = size - 2 * halo
        cost = len(_starts(n, core, int(round(overlap * core)) if n > core else 0, anchor)) * size
        if not out or cost < out[-1][1]:
            out.append((size, cost))
        if size >= largest or rule.step == 0:
            return out
        size += rule.step


def window(blend: str, core: int, overlap: int) -> np.ndarray:
    """1D blending weights over one core (all > 0): flat; cosine ramps over the overlap; a gaussian."""
    i = np.arange(core, dtype=np.float64)
    if blend == "gaussian":
        sigma = max(core / 8, 1.0)
        return np.maximum(np.exp(-((i - (core - 1) / 2) ** 2) / (2 * sigma**2)), 1e-3).astype(np.float32)
    w = np.ones(core)
    if blend == "cosine" and overlap > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap) + 0.5) / overlap)
        w[:overlap] = np.minimum(w[:overlap], ramp)
        w[core - overlap:] = np.minimum(w[core - overlap:], ramp[::-1])
    return w.astype(np.float32)


def pad_image(x: np.ndarray, plan: TilePlan, mode: str = "symmetric") -> np.ndarray:
    """(C, *S) padded by the halo on both sides, plus at the end as far as the last tile reaches."""
    widths = [(0, 0)] + [(h, h + max(0, plan.starts(a)[-1] + c - n))
                         for a, (h, c, n) in enumerate(zip(plan.halo, plan.core, plan.shape, strict=True))]
    if mode == "symmetric":
        return np.pad(x, widths, mode="symmetric")
    if mode == "zeros":
        return np.pad(x, widths, mode="constant")
    return np.pad(x, widths, mode=mode)


def predict_tiled(
    forward: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    plan: TilePlan,
    out: Any | None = None,
    batch_size: int = 1,
    blend: str = "cosine",
    pad_mode: str = "symmetric",
    on_tile: Callable[[int], None] | None = None,
) -> Any:
    """Run `forward` ((B, C, *tile) -> (B, K, *tile) float32) over the tiles of (C, *S) `x`.

    Returns (K, *S) float32, written into `out` when given (any array with numpy slicing). Where
    cores overlap, outputs are averaged with `blend` weights.
    """
    if blend not in BLENDS:
        raise ValueError(f"blend {blend!r}: expected one of {', '.join(BLENDS)}")
    padded = pad_image(x, plan, pad_mode)
    dims = len(plan.shape)
    overlapping = any(o > 0 for o in plan.overlap)
    weights = None
    if overlapping:
        w = [window(blend, c, o) for c, o in zip(plan.core, plan.overlap, strict=True)]
        weights = np.ones((), np.float32)
        for a in range(dims):
            weights = np.multiply.outer(weights, w[a])
        wsum = np.zeros(plan.shape, np.float32)
    acc = None
    done = 0
    batch: list[tuple[int, ...]] = []
    for start in [*plan.tiles(), None]:
        if start is not None:
            batch.append(start)
            if len(batch) < batch_size:
                continue
        if not batch:
            break
        tiles = np.stack([padded[(slice(None), *(slice(s, s + t) for s, t in zip(b, plan.tile, strict=True)))]
                          for b in batch])
        y = np.asarray(forward(np.ascontiguousarray(tiles, dtype=np.float32)), dtype=np.float32)
        if acc is None:
            acc = out if out is not None else np.zeros((y.shape[1], *plan.shape), np.float32)
            if overlapping and out is not None:
                acc[...] = 0
        for b, yb in zip(batch, y, strict=True):
            keep = tuple(min(c, n - s) for s, c, n in zip(b, plan.core, plan.shape, strict=True))
            core = yb[(slice(None), *(slice(h, h + k) for h, k in zip(plan.halo, keep, strict=True)))]
            region = (slice(None), *(slice(s, s + k) for s, k in zip(b, keep, strict=True)))
            if weights is None:
                acc[region] = core
            else:
                wk = weights[tuple(slice(0, k) for k in keep)]
                acc[region] = acc[region] + core * wk
                wsum[region[1:]] += wk
        done += len(batch)
        if on_tile is not None:
            on_tile(done)
        batch = []
    if weights is not None:
        acc[...] = acc[...] / wsum
    return acc
