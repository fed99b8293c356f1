"""Write whole results as OME-TIFF under a temporary name, renamed into place when complete.

Streaming writers (OME-Zarr, tile by tile) are in `mmv_zoo.io.writers`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import OutputError


def check_writable(folder: Path) -> None:
    """Fail early if `folder` could not be created or written; creates nothing."""
    folder = Path(folder).absolute()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{folder}: cannot write output folder ({existing} is a file, not a folder)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{folder}: cannot write output folder (no write permission in {existing})")


def make_folder(folder: Path) -> Path:
    """Create `folder` (and parents) when the first output is written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{folder}: cannot write output folder ({e.strerror or e})") from None
    return folder


def temporary_path(path: Path) -> Path:
    """`.<name>.partial-<pid>` next to `path`: hidden, so folder scans (`is_image`) skip it."""
    return path.with_name(f".{path.name}.partial-{os.getpid()}")


def write_ome_tiff(
    path: Path,
    data: np.ndarray,
    pixel_sizes: dict[str, float | None] | None = None,
    channel_names: list[str] | None = None,
    time_increment: float | None = None,
) -> Path:
    """Write (C, Y, X), (C, Z, Y, X) or (T, C, Z, Y, X) `data` to `path` atomically; returns `path`.

    `time_increment` is the time between time points in seconds (OME TimeIncrement), when known.
    """
    from bioio.writers import OmeTiffWriter
    from bioio_base.types import PhysicalPixelSizes

    if data.ndim == 3:
        data = data[:, None]
    if data.ndim == 4:
        data = data[None]
    make_folder(path.parent)
    sizes = pixel_sizes or {}
    pps = PhysicalPixelSizes(Z=sizes.get("z"), Y=sizes.get("y"), X=sizes.get("x"))
    tmp = temporary_path(path)
    ome = None
    if time_increment is not None:
        ome = OmeTiffWriter.build_ome([data.shape], [data.dtype], dimension_order=["TCZYX"],
                                      channel_names=[channel_names], image_name=[path.stem],
                                      physical_pixel_sizes=[pps])
        ome.images[0].pixels.time_increment = float(time_increment)
        ome.images[0].pixels.time_increment_unit = "s"
    try:
        OmeTiffWriter.save(
            data, tmp, dim_order="TCZYX", ome_xml=ome, channel_names=channel_names, physical_pixel_sizes=pps,
            image_name=path.stem,
        )
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
