"""Tiled prediction: tiles of valid network sizes, cropped by the halo, blended where they overlap.

Each tile is `core + 2 * halo` long per axis; only its core is kept, so with a halo at least the
network's receptive field the result does not depend on the tiling at all. What a tile sees past
the image border is the plan's `border`:

- `mirror`: the image is mirrored by the halo on every side (symmetric, as bioimageio.core pads),
  so an output pixel sees the same context whether it is predicted in one piece or in tiles, by
  mmv-zoo or by a BioImage.IO consumer of the exported package.
- `image`: tiles stop at the image border (extended at the far end to the next valid size, by
  mirroring), so tiling reproduces one pass of the network over the image itself, as in training
  and validation, and no voxel is spent on padding: on a 1x32x256x256 volume with a 16-slice halo
  mirroring would process twice the slices.

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
BORDERS = ("mirror", "image")


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
    border: str = "mirror"
    """`mirror` the image by the halo, or stop tiles at the `image` border (see the module notes)."""
    rules: tuple[SizeRule, ...] = ()
    """Valid sizes per axis (`image` border: tiles clipped at the border are grown back to one)."""

    def starts(self, axis: int) -> list[int]:
        """Core start positions along `axis` (the last core reaches the image border)."""
        a = self.anchor[axis] if self.anchor else 1
        return _starts(self.shape[axis], self.core[axis], self.overlap[axis], a)

    def __len__(self) -> int:
        return math.prod(len(self.starts(a)) for a in range(len(self.shape)))

    def tiles(self) -> Iterator[tuple[int, ...]]:
        return product(*(self.starts(a) for a in range(len(self.shape))))

    def span(self, axis: int, start: int) -> tuple[int, int]:
        """The input interval [lo, hi) of the tile whose core starts at `start` (may reach outside
        the image: mirrored)."""
        h, t = self.halo[axis], self.tile[axis]
        if self.border == "mirror":
            return start - h, start - h + t
        return _clipped_span(start, h, t, self.rules[axis], self.shape[axis])

    @property
    def largest(self) -> tuple[int, ...]:
        """The largest input the network gets, per axis (the tile, or less where `image` borders clip it)."""
        return tuple(max(hi - lo for lo, hi in (self.span(a, s) for s in self.starts(a)))
                     for a in range(len(self.shape)))

    @property
    def work(self) -> float:
        """Voxels the network processes per image voxel (1.0: no tiling or padding overhead)."""
        per_axis = [sum(hi - lo for lo, hi in (self.span(a, s) for s in self.starts(a))) / n
                    for a, n in enumerate(self.shape)]
        return math.prod(per_axis)


def _clipped_span(start: int, halo: int, tile: int, rule: SizeRule, n: int) -> tuple[int, int]:
    """`image` border: the tile [start - halo, start - halo + tile) clipped to the image padded to its
    next valid size, then grown back to a valid size on the side inside the image (more real
    context, never padding). A fixed size (step 0) smaller than the image is moved inside it."""
    extent = max(n, rule.min) if rule.step == 0 else rule.fit(n)
    lo, hi = max(0, start - halo), min(extent, start - halo + tile)
    size = min(rule.fit(hi - lo), extent)
    if lo == 0:
        return 0, size
    return max(0, hi - size), hi


def _starts(n: int, core: int, overlap: int, anchor: int) -> list[int]:
    if n <= core:
        return [0]
    stride = max(anchor, (core - overlap) // anchor * anchor)
    out = list(range(0, n - core, stride))
    last = -(-(n - core) // anchor) * anchor
    return out + [last] if last > out[-1] else out


def plan_tiles(shape: Sequence[int], rules: Sequence[SizeRule], halo: Sequence[int], budget: int,
               overlap: float = 0.0, border: str = "mirror") -> TilePlan:
    """The tile size within `budget` voxels that makes the network process the fewest voxels.

    One tile holds the whole (padded) image when it fits. Otherwise every combination of valid
    sizes is scored by its work (tiles x tile voxels); per axis only sizes that lower that axis'
    work are candidates, which keeps the search small. `overlap` is the fraction of a core blended
    with each neighbour; `border` is `mirror` or `image` (module notes). Raises ValueError when no
    tile leaves any output after the halo crop.
    """
    if border not in BORDERS:
        raise ValueError(f"border {border!r}: expected one of {', '.join(BORDERS)}")
    shape, halo = tuple(shape), tuple(halo)
    options = [_axis_options(n, r, h, overlap, border) for n, r, h in zip(shape, rules, halo, strict=True)]
    best: tuple[tuple[float, int], tuple[int, ...]] | None = None
    for combo in product(*options):
        voxels = math.prod(v for _, _, v in combo)
        if voxels > budget and best is not None:
            continue
        work = math.prod(c for _, c, _ in combo)
        key = (work if voxels <= budget else math.inf, voxels)
        if best is None or key < best[0]:
            best = (key, tuple(t for t, _, _ in combo))
    assert best is not None
    tile = best[1]
    cores = [t - 2 * h for t, h in zip(tile, halo, strict=True)]
    ov = tuple(min(c - 1, int(round(overlap * c))) if n > c else 0 for c, n in zip(cores, shape, strict=True))
    return TilePlan(shape, tile, halo, ov, tuple(max(1, r.step) for r in rules), border, tuple(rules))


def whole_image_padding(shape: Sequence[int], rules: Sequence[SizeRule], halo: Sequence[int]) -> list[int]:
    """Pixels to add after the image per space axis so that the image with `halo` of context on each
    side is a valid size: for models that see an image in one piece (an instance package that clusters
    inside its model), padded as bioimageio.core pads (to this size first, then by the halo)."""
    extra = []
    for n, h, r in zip(shape, halo, rules, strict=True):
        total = r.fit(n + 2 * h)
        if total < n + 2 * h:
            raise ValueError(f"an image of {n} pixels with a halo of {h} is larger than the model's fixed input "
                             f"size {total}")
        extra.append(total - n - 2 * h)
    return extra


def _axis_options(n: int, rule: SizeRule, halo: int, overlap: float, border: str) -> list[tuple[int, float, int]]:
    """(tile size, voxels processed along the axis, longest input span), for the valid sizes that lower
    the work as they grow."""
    anchor = max(1, rule.step)
    largest = rule.fit(n + 2 * halo)
    size = rule.fit(2 * halo + anchor)
    if size - 2 * halo < 1:
        raise ValueError(f"tile {size} leaves no output after cropping the halo {halo} from both sides")
    out: list[tuple[int, float, int]] = []
    while True:
        core = size - 2 * halo
        starts = _starts(n, core, int(round(overlap * core)) if n > core else 0, anchor)
        if border == "mirror":
            cost, longest = len(starts) * size, size
        else:
            spans = [hi - lo for lo, hi in (_clipped_span(s, halo, size, rule, n) for s in starts)]
            cost, longest = sum(spans), max(spans)
        if not out or cost < out[-1][1]:
            out.append((size, cost, longest))
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


class ArraySource:
    """An in-memory (C, *S) array as a tile source."""

    def __init__(self, x: np.ndarray) -> None:
        self.array = x
        self.shape = x.shape

    def read(self, region: tuple[slice, ...]) -> np.ndarray:
        return np.asarray(self.array[region])


def mirror(index: np.ndarray, n: int) -> np.ndarray:
    """Symmetric (edge-repeating) reflection of indices into [0, n), for any distance outside
    (numpy's and bioimageio.core's `symmetric` padding)."""
    period = np.mod(index, 2 * n)
    return np.where(period < n, period, 2 * n - 1 - period)


def read_tile(source: Any, start: Sequence[int], plan: TilePlan) -> np.ndarray:
    """The input tile whose core starts at `start`: (C, *span), mirrored where it reaches past the image.

    Only the part of the image the tile covers is read from `source` (anything with `.shape`
    (C, *S) and `.read(region)`), so a lazy source never loads the whole image.
    """
    indices = [mirror(np.arange(*plan.span(a, s)), n) for a, (s, n) in enumerate(zip(start, plan.shape, strict=True))]
    lows = [int(i.min()) for i in indices]
    block = source.read((slice(None), *(slice(lo, int(i.max()) + 1) for lo, i in zip(lows, indices, strict=True))))
    for axis, (lo, idx) in enumerate(zip(lows, indices, strict=True)):
        local = idx - lo
        if not (local[0] == 0 and np.all(np.diff(local) == 1) and len(local) == block.shape[axis + 1]):
            block = np.take(block, local, axis=axis + 1)
    return block


def kept(plan: TilePlan, start: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """The part of the tile whose core starts at `start` that is kept: [lo, hi) per axis, in tile coordinates."""
    out = []
    for a, (s, c, n) in enumerate(zip(start, plan.core, plan.shape, strict=True)):
        lo = s - plan.span(a, s)[0]
        out.append((lo, lo + min(c, n - s)))
    return tuple(out)


def _batches(plan: TilePlan, batch_size: int) -> Iterator[list[tuple[int, ...]]]:
    """Core starts in batches of at most `batch_size` tiles of the same input shape and kept part."""
    batch: list[tuple[int, ...]] = []
    key: tuple[Any, ...] | None = None
    for start in plan.tiles():
        this = (tuple(hi - lo for lo, hi in (plan.span(a, s) for a, s in enumerate(start))), kept(plan, start))
        if batch and (this != key or len(batch) == batch_size):
            yield batch
            batch = []
        batch.append(start)
        key = this
    if batch:
        yield batch


def predict_tiled(
    forward: Callable[[np.ndarray], np.ndarray],
    x: Any,
    plan: TilePlan,
    out: Any | None = None,
    batch_size: int = 1,
    blend: str = "cosine",
    prepare: Callable[[np.ndarray], np.ndarray] | None = None,
    finish: Callable[[np.ndarray], np.ndarray] | None = None,
    on_tile: Callable[[int, int], None] | None = None,
    crop: bool = False,
) -> Any:
    """Run `forward` ((B, C, *tile) -> (B, K, *tile) float32) over the tiles of (C, *S) `x`.

    With `crop`, `forward(batch, keep)` is given the part of the tiles that is kept ([lo, hi) per
    axis, the same for the whole batch) and returns only that part (crop.Cropped computes little more).

    `x` is an array or a lazy source (`.shape`, `.read(region)`); `prepare` maps each input tile
    (e.g. normalization), `finish` each output core before it is stored (e.g. argmax labels).
    Results go into `out`: an array with numpy slicing (numpy, zarr, a streaming writer), or a
    callable `(channels, dtype) -> array` that creates it once the first core is known; by default
    a new numpy array. Where cores overlap (`plan.overlap`), outputs are averaged with `blend`
    weights in memory before `finish`. `on_tile(done, total)` reports progress.
    """
    if blend not in BLENDS:
        raise ValueError(f"blend {blend!r}: expected one of {', '.join(BLENDS)}")
    source = x if hasattr(x, "read") else ArraySource(np.asarray(x))
    dims = len(plan.shape)
    blending = any(o > 0 for o in plan.overlap)
    weights = acc = wsum = None
    if blending:
        w = [window(blend, c, o) for c, o in zip(plan.core, plan.overlap, strict=True)]
        weights = np.ones((), np.float32)
        for a in range(dims):
            weights = np.multiply.outer(weights, w[a])
        wsum = np.zeros(plan.shape, np.float32)
    target = out
    total, done = len(plan), 0
    for batch in _batches(plan, batch_size):
        tiles = [read_tile(source, b, plan) for b in batch]
        if prepare is not None:
            tiles = [prepare(t) for t in tiles]
        stacked = np.ascontiguousarray(np.stack(tiles), dtype=np.float32)
        part = kept(plan, batch[0])
        y = np.asarray(forward(stacked, part) if crop else forward(stacked), dtype=np.float32)
        for b, yb in zip(batch, y, strict=True):
            keep = tuple(hi - lo for lo, hi in part)
            core = yb if crop else yb[(slice(None), *(slice(lo, hi) for lo, hi in part))]
            region = (slice(None), *(slice(s, s + k) for s, k in zip(b, keep, strict=True)))
            if blending:
                if acc is None:
                    acc = np.zeros((core.shape[0], *plan.shape), np.float32)
                wk = weights[tuple(slice(0, k) for k in keep)]
                acc[region] += core * wk
                wsum[region[1:]] += wk
                continue
            result = finish(core) if finish is not None else core
            if target is None or callable(target):
                make = target or (lambda k, dtype: np.zeros((k, *plan.shape), dtype))
                target = make(result.shape[0], result.dtype)
            target[region] = result
        done += len(batch)
        if on_tile is not None:
            on_tile(done, total)
    if blending:
        result = acc / wsum
        result = finish(result) if finish is not None else result
        if target is None or callable(target):
            make = target or (lambda k, dtype: np.zeros((k, *plan.shape), dtype))
            target = make(result.shape[0], result.dtype)
        target[...] = result
    return target
