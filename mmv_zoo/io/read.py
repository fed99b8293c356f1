"""Read whole microscopy images through bioio (TIFF, OME-TIFF, PNG, OME-Zarr, ...) for training.

Large images are read a block at a time through `mmv_zoo.io.source.open_image`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .source import open_image

IMAGE_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff", ".png", ".zarr", ".ome.zarr", ".jpg", ".jpeg")


@dataclass
class Image:
    """An image as the model sees it: `data` is (C, Y, X) or (C, Z, Y, X)."""

    data: np.ndarray
    path: Path
    pixel_sizes: dict[str, float | None]
    """Physical size per spatial axis id (z, y, x), None where the file does not say."""
    channel_names: list[str]


def is_image(path: Path) -> bool:
    name = path.name.lower()
    return not name.startswith(".") and name.endswith(IMAGE_SUFFIXES)


def image_stem(path: Path) -> str:
    """File name without its (possibly double) image extension."""
    name = path.name
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def read_image(path: str | Path, spatial_dims: int, t: int | None = None) -> Image:
    """Read `path` as (C, Y, X) for 2D or (C, Z, Y, X) for 3D; `t` picks a time point.

    RGB(A) samples become channels. A stack with more than one Z slice given to a 2D reader is an
    error, as is a single plane given to a 3D reader, and a time-lapse read without `t`.
    """
    path = Path(path)
    source = open_image(path)
    info = source.scene(0)
    if t is None:
        if info.T > 1:
            raise DataError(f"{path}: is a time-lapse ({info.T} time points); give single time points")
        t = 0
    data = source.read_block(t=t)
    nz = data.shape[1]
    if spatial_dims == 2:
        if nz > 1:
            raise DataError(f"{path}: is 3D ({nz} Z slices, shape {tuple(data.shape)} as CZYX) but the entry is 2D")
        data = data[:, 0]
    elif nz == 1:
        raise DataError(f"{path}: is a single 2D plane (shape {tuple(data.shape)} as CZYX) but the entry is 3D")
    return Image(data=data, path=path, pixel_sizes=dict(info.pixel_sizes), channel_names=list(info.channel_names))


def count_timepoints(path: str | Path) -> int:
    return open_image(Path(path)).scene(0).T


def is_grey_as_colour(data: np.ndarray) -> bool:
    """True for a grey image saved as RGB or RGBA (common for PNG and JPEG exports): 3 or 4 channels
    (C first), the first three equal, a fourth (alpha) constant."""
    if data.shape[0] not in (3, 4):
        return False
    same = bool(np.array_equal(data[0], data[1]) and np.array_equal(data[0], data[2]))
    return same and (data.shape[0] == 3 or bool((data[3] == data[3].flat[0]).all()))


def select_channels(image: Image, n_channels: int, channels: list[int] | None = None) -> np.ndarray:
    """The channels the entry takes: all when the count matches, else the given indices."""
    data = image.data
    if channels is not None:
        bad = [c for c in channels if not 0 <= c < data.shape[0]]
        if bad:
            raise DataError(f"{image.path}: has {data.shape[0]} channel(s), no channel index {bad}")
        data = data[channels]
    if channels is None and n_channels == 1 and is_grey_as_colour(data):
        return data[:1]  # a grey image saved as RGB(A): its one channel
    if data.shape[0] != n_channels:
        raise DataError(
            f"{image.path}: has {data.shape[0]} channel(s) but the entry's inputs[0] takes {n_channels}"
            f" ({image.channel_names}; when predicting, pick them with --channels)"
        )
    return data
