"""Read microscopy images through bioio (TIFF, OME-TIFF, PNG, OME-Zarr, ...) with named dimensions."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

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


def _short(reason: str, limit: int = 240) -> str:
    """A library's message cut at a word boundary (never mid-URL)."""
    if len(reason) <= limit:
        return reason
    return reason[:limit].rsplit(" ", 1)[0] + " ..."


def _open(path: Path):  # -> bioio.BioImage
    from bioio import BioImage

    for name in ("bioio", "bioio_base", "tifffile"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    try:
        return BioImage(path)
    except Exception as e:  # bioio raises many kinds for unreadable files
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path}: cannot read image ({_short(reason)})") from None


def read_image(path: str | Path, spatial_dims: int, t: int | None = None) -> Image:
    """Read `path` as (C, Y, X) for 2D or (C, Z, Y, X) for 3D; `t` picks a time point.

    RGB(A) samples become channels. A stack with more than one Z slice given to a 2D reader is an
    error, as is a single plane given to a 3D reader, and a time-lapse read without `t`.
    """
    path = Path(path)
    img = _open(path)
    dims = _dims(img, path)
    if t is None:
        if dims.T > 1:
            raise DataError(f"{path}: is a time-lapse ({dims.T} time points); give single time points")
        t = 0
    try:
        order = "CZYX"
        if "S" in img.dims.order and dims.S > 1:
            if dims.C > 1:
                raise DataError(f"{path}: has both {dims.C} channels and {dims.S} RGB samples; not supported")
            data = np.asarray(img.get_image_data("SZYX", T=t, C=0))
        else:
            data = np.asarray(img.get_image_data(order, T=t))
        pps = img.physical_pixel_sizes
        sizes = {"z": pps.Z, "y": pps.Y, "x": pps.X}
        names = [str(c) for c in (img.channel_names or [])]
    except DataError:
        raise
    except Exception as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path}: cannot read image data, the file may be corrupt ({_short(reason)})") from None
    nz = data.shape[1]
    if spatial_dims == 2:
        if nz > 1:
            raise DataError(f"{path}: is 3D ({nz} Z slices, shape {tuple(data.shape)} as CZYX) but the entry is 2D")
        data = data[:, 0]
    elif nz == 1:
        raise DataError(f"{path}: is a single 2D plane (shape {tuple(data.shape)} as CZYX) but the entry is 3D")
    if len(names) != data.shape[0]:
        names = [f"channel{i}" for i in range(data.shape[0])]
    return Image(data=data, path=path, pixel_sizes=sizes, channel_names=names)


def count_timepoints(path: str | Path) -> int:
    return int(_dims(_open(Path(path)), Path(path)).T)


def _dims(img: Any, path: Path) -> Any:
    try:
        return img.dims
    except Exception as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path}: cannot read image data, the file may be corrupt ({_short(reason)})") from None


def select_channels(image: Image, n_channels: int, channels: list[int] | None = None) -> np.ndarray:
    """The channels the entry takes: all when the count matches, else the given indices."""
    data = image.data
    if channels is not None:
        bad = [c for c in channels if not 0 <= c < data.shape[0]]
        if bad:
            raise DataError(f"{image.path}: has {data.shape[0]} channel(s), no channel index {bad}")
        data = data[channels]
    if data.shape[0] != n_channels:
        raise DataError(
            f"{image.path}: has {data.shape[0]} channel(s) but the entry's inputs[0] takes {n_channels}"
            f" ({image.channel_names}; when predicting, pick them with --channels)"
        )
    return data
