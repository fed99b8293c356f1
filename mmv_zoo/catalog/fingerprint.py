"""A dataset's fingerprint: the facts `mmv-zoo plan` derives an entry from, read through the readers
training uses (`data.pairs` for the layout, `io.source` for the images).

Read from up to `MAX_IMAGES` images (the first time point, every channel): sizes and dimensionality,
pixel sizes and anisotropy, channels and RGB, intensity percentiles and outliers, and for labelled
data the label values and their frequencies, whether labels are instances, the foreground share and
the objects' median diameter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.pairs import find_pairs
from ..errors import DataError
from ..io.source import open_image

MAX_IMAGES = 20
MAX_VOXELS = 1 << 26
"""Larger images are fingerprinted on a central block of about this many voxels."""


@dataclass
class Fingerprint:
    folder: Path
    n_images: int
    paired: bool
    spatial_dims: int
    shape: tuple[int, int, int]
    """Median (Z, Y, X) of the images."""
    min_shape: tuple[int, int, int]
    channels: int
    channel_names: list[str]
    rgb: bool
    dtype: str
    pixel_sizes: dict[str, float | None]
    """Median pixel size per axis (z, y, x) where the files say."""
    percentiles: dict[str, float]
    """p1, p50, p99.8, p99.99 and max of the source intensities (all images pooled)."""
    variation: float
    """Median over images of std / mean: low for brightfield-like images with a high offset."""
    label_values: dict[int, float] = field(default_factory=dict)
    """Target value -> share of pixels (labelled data)."""
    instances: bool = False
    """Targets hold more distinct values than classes plausibly (instance labels)."""
    foreground: float | None = None
    """Share of target pixels above 0."""
    object_diameter: float | None = None
    """Median in-plane equivalent diameter of the labelled objects, in pixels."""
    n_objects: int = 0

    @property
    def anisotropy(self) -> float | None:
        """z pixel size over the in-plane one, when both are known (3D)."""
        z, y = self.pixel_sizes.get("z"), self.pixel_sizes.get("y")
        return z / y if self.spatial_dims == 3 and z and y else None

    @property
    def outliers(self) -> float:
        """How far the top 0.01 % reach beyond p99.8, relative to the p1-p99.8 range."""
        p = self.percentiles
        return (p["p99.99"] - p["p99.8"]) / max(p["p99.8"] - p["p1"], 1e-12)

    def facts(self) -> list[tuple[str, str]]:
        """The fingerprint as (fact, value) rows for the entry's README."""
        z, y, x = self.shape
        size = f"{y} x {x}" if self.spatial_dims == 2 else f"{z} x {y} x {x}"
        rows = [("images", f"{self.n_images} ({'paired with targets' if self.paired else 'sources only'})"),
                ("dimensions", f"{self.spatial_dims}D, median size {size}"),
                ("channels", f"{self.channels}{' (RGB)' if self.rgb else ''}, {self.dtype}"),
                ("pixel sizes", ", ".join(f"{k} {v:g}" for k, v in self.pixel_sizes.items() if v) or "not given"),
                ("intensity", ", ".join(f"{k} {v:.4g}" for k, v in self.percentiles.items())
                 + f"; std/mean {self.variation:.3f}; outliers {self.outliers:.3f}")]
        if self.anisotropy:
            rows.append(("anisotropy", f"z {self.anisotropy:.2f}x the in-plane pixel size"))
        if self.label_values:
            shown = sorted(self.label_values.items(), key=lambda kv: -kv[1])[:6]
            rows.append(("labels", f"{len(self.label_values)} values"
                         + (" (instance labels)" if self.instances else "") + ": "
                         + ", ".join(f"{k}: {v:.3f}" for k, v in shown)))
        if self.foreground is not None:
            rows.append(("foreground", f"{self.foreground:.3f} of the pixels"))
        if self.object_diameter:
            rows.append(("objects", f"{self.n_objects}, median diameter {self.object_diameter:.1f} px"))
        return rows


def _block(source: Any, info: Any) -> np.ndarray:
    """(C, Z, Y, X) of time point 0: the whole frame, or a central block of about MAX_VOXELS."""
    z, y, x = info.Z, info.Y, info.X
    scale = min(1.0, (MAX_VOXELS / max(z * y * x, 1)) ** (1 / 3))
    ranges = [((n - max(1, int(n * scale))) // 2, (n - max(1, int(n * scale))) // 2 + max(1, int(n * scale)))
              for n in (z, y, x)]
    return source.read_block(0, None, ranges[0], y=ranges[1], x=ranges[2])


def fingerprint(folder: Path, layout: Any, task: str) -> Fingerprint:
    """The fingerprint of the data in `folder` laid out as `layout` (an entry's `data.layout`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such data folder")
    pairs, _ = find_pairs(folder, layout, 3)
    if not pairs:
        raise DataError(f"{folder}: no images found for the {task} layout ({layout.layout})")
    total_images = len(pairs)
    pairs = pairs[:MAX_IMAGES]  # statistics from a sample; the count is every image
    shapes, sizes, variation, sources = [], [], [], []
    info0 = None
    for pair in pairs:
        with open_image(pair.source) as src:
            info = src.scene(0)
            info0 = info0 or info
            shapes.append((info.Z, info.Y, info.X))
            sizes.append(info.pixel_sizes)
            block = _block(src, info).astype(np.float64)
        sources.append(block[:, :, ::4, ::4].ravel() if block.size > 1 << 20 else block.ravel())
        mean = float(block.mean())
        variation.append(float(block.std()) / abs(mean) if mean else math.inf)
    assert info0 is not None
    pooled = np.concatenate(sources)
    qs = np.percentile(pooled, [1, 50, 99.8, 99.99])
    pixel_sizes = {}
    for axis in ("z", "y", "x"):
        known = [s[axis] for s in sizes if s.get(axis)]
        pixel_sizes[axis] = float(np.median(known)) if known else None
    shape = tuple(int(v) for v in np.median(np.array(shapes), axis=0))
    fp = Fingerprint(
        folder=folder, n_images=total_images, paired=pairs[0].target is not None,
        spatial_dims=3 if shape[0] > 1 else 2, shape=shape,  # type: ignore[arg-type]
        min_shape=tuple(int(v) for v in np.min(np.array(shapes), axis=0)),  # type: ignore[arg-type]
        channels=info0.C, rgb=info0.rgb, dtype=str(info0.dtype), pixel_sizes=pixel_sizes,
        channel_names=list(info0.channel_names),
        percentiles={"p1": float(qs[0]), "p50": float(qs[1]), "p99.8": float(qs[2]), "p99.99": float(qs[3]),
                     "max": float(pooled.max())},
        variation=float(np.median(variation)))
    if fp.paired and task in ("segmentation", "instance"):
        _labels(fp, pairs)
    return fp


def _labels(fp: Fingerprint, pairs: list[Any]) -> None:
    from scipy import ndimage

    counts: dict[int, int] = {}
    diameters: list[float] = []
    total = 0
    for pair in pairs:
        with open_image(pair.target) as src:
            lab = _block(src, src.scene(0))[0]
        if not np.issubdtype(lab.dtype, np.integer):
            lab = lab.round().astype(np.int64)
        values, n = np.unique(lab, return_counts=True)
        for v, c in zip(values.tolist(), n.tolist(), strict=True):
            counts[v] = counts.get(v, 0) + c
        total += lab.size
        plane = lab[lab.shape[0] // 2]
        ids = plane if len(values) > 8 else ndimage.label(plane > 0)[0]
        _, areas = np.unique(ids[ids > 0], return_counts=True)  # any id values (sparse, huge, -1 ignored)
        diameters += [2 * math.sqrt(a / math.pi) for a in areas]
    fp.label_values = {k: v / total for k, v in sorted(counts.items())}
    fp.instances = len(counts) > 8
    fp.foreground = sum(v for k, v in fp.label_values.items() if k > 0)
    fp.n_objects = len(diameters)
    fp.object_diameter = float(np.median(diameters)) if diameters else None
