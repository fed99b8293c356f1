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

    OME-TIFF (deflate-compressed, as bioio writes it) through tifffile's own OME-XML: pixel sizes in
    micrometers, channel names, the image name and, when known, `time_increment` (seconds between
    time points). Written without importing bioio's OME model, which costs more than the write.
    """
    import tifffile

    if data.ndim == 3:
        data = data[:, None]
    if data.ndim == 4:
        data = data[None]
    if data.dtype == bool:
        data = data.astype(np.uint8)
    make_folder(path.parent)
    meta: dict[str, object] = {"axes": "TCZYX", "Name": path.name.split(".")[0]}
    for axis, size in (pixel_sizes or {}).items():
        if size is not None and axis in ("z", "y", "x"):
            meta[f"PhysicalSize{axis.upper()}"] = float(size)
            meta[f"PhysicalSize{axis.upper()}Unit"] = "\u00b5m"
    if channel_names is not None:
        meta["Channel"] = {"Name": [str(n) for n in channel_names]}
    if time_increment is not None:
        meta["TimeIncrement"] = float(time_increment)
        meta["TimeIncrementUnit"] = "s"
    tmp = temporary_path(path)
    try:
        big = data.nbytes > 2**32 - 2**25
        tifffile.imwrite(tmp, data, ome=True, bigtiff=big, photometric="minisblack", compression="adobe_deflate",
                         metadata=meta)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
