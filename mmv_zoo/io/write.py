"""Write results as OME-TIFF under a temporary name, renamed into place when complete."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import OutputError


def check_writable(folder: Path) -> None:
    """Create `folder` if needed and make sure files can be written there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".mmv_zoo_write_test_{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise OutputError(f"{folder}: cannot write output folder ({e.strerror or e})") from None


def temporary_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial-{os.getpid()}")


def write_ome_tiff(
    path: Path,
    data: np.ndarray,
    pixel_sizes: dict[str, float | None] | None = None,
    channel_names: list[str] | None = None,
) -> Path:
    """Write (C, Y, X) or (C, Z, Y, X) `data` to `path` atomically; returns `path`."""
    from bioio.writers import OmeTiffWriter
    from bioio_base.types import PhysicalPixelSizes

    if data.ndim == 3:
        data = data[:, None]
    sizes = pixel_sizes or {}
    pps = PhysicalPixelSizes(Z=sizes.get("z"), Y=sizes.get("y"), X=sizes.get("x"))
    tmp = temporary_path(path)
    try:
        OmeTiffWriter.save(
            data, tmp, dim_order="CZYX", channel_names=channel_names, physical_pixel_sizes=pps, image_name=path.stem
        )
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
