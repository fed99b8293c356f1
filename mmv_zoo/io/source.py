"""A lazy view of a 2D-5D microscopy image: scenes, sizes, metadata, and one (C, Z, Y, X) block at a time.

`open_image(path)` reads only metadata. `ImageSource.read_block` reads one time point's selected
channels and Z (optionally Y, X) range through bioio's dask arrays, so only the chunks (OME-Zarr) or
planes (TIFF) that the block covers are read: a file larger than memory is never loaded whole.
RGB(A) samples are presented as channels. Not thread-safe: use one source per thread.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

# A TIFF without a resolution unit has no pixel size: bioio-tifffile warns on every read; we report
# the sizes as unknown (None) instead.
warnings.filterwarnings("ignore", message="Could not parse tiff pixel size")

PLANE_CHUNK_BYTES = 256 * 2**20
"""A TIFF whose (Z, Y, X) stack of one channel is larger than this is read plane by plane when a
block needs only part of Z (bioio otherwise reads whole stacks per channel and time point)."""

ChannelSpec = int | str
Range = slice | tuple[int, int] | None


def _short(reason: str, limit: int = 240) -> str:
    """A library's message cut at a word boundary (never mid-URL)."""
    if len(reason) <= limit:
        return reason
    return reason[:limit].rsplit(" ", 1)[0] + " ..."


def _reason(e: BaseException) -> str:
    return _short(str(e).splitlines()[0] if str(e) else type(e).__name__)


def _open(path: Path, **kwargs: Any):  # -> bioio.BioImage
    from bioio import BioImage

    for name in ("bioio", "bioio_base", "tifffile"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    try:
        return BioImage(path, **kwargs)
    except Exception as e:  # bioio raises many kinds for unreadable files
        raise DataError(f"{path}: cannot read image ({_reason(e)})") from None


def _corrupt(path: Path, e: BaseException) -> DataError:
    return DataError(f"{path}: cannot read image data, the file may be corrupt ({_reason(e)})")


@dataclass(frozen=True)
class SceneInfo:
    """One scene (series) of a file, with RGB(A) samples counted as channels."""

    id: str
    index: int
    T: int
    C: int
    Z: int
    Y: int
    X: int
    dtype: np.dtype
    channel_names: list[str]
    pixel_sizes: dict[str, float | None]
    """Physical size per spatial axis id (z, y, x) in micrometers, None where the file does not say."""
    time_increment: float | None
    """Seconds between time points, None where the file does not say."""
    rgb: bool
    """True when the channels are the RGB(A) samples of the file."""

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """(T, C, Z, Y, X)."""
        return (self.T, self.C, self.Z, self.Y, self.X)


class ImageSource:
    """A lazily read image file; use `open_image`. Metadata per scene, pixels by `read_block`."""

    def __init__(self, path: Path, image: Any) -> None:
        self.path = path
        self._img = image
        self._planes: Any = None  # the same file opened with one dask chunk per plane (big TIFF stacks)
        self._info: dict[int, SceneInfo] = {}

    def __repr__(self) -> str:
        return f"ImageSource({str(self.path)!r}, scenes={len(self.scenes)})"

    def __enter__(self) -> ImageSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop cached readers; bioio opens the file per read, so no file stays open in between."""
        self._planes = None

    @property
    def scenes(self) -> tuple[str, ...]:
        """Scene ids, in file order."""
        try:
            ids = tuple(str(s) for s in self._img.scenes)
        except Exception as e:
            raise _corrupt(self.path, e) from None
        if not ids:
            raise DataError(f"{self.path}: cannot read image data, the file may be corrupt (it holds no image)")
        return ids

    def scene_index(self, scene: int | str) -> int:
        """The index of a scene given by index or id; a missing one is a DataError listing the scenes."""
        ids = self.scenes
        if isinstance(scene, str) and scene in ids:
            return ids.index(scene)
        index = int(scene) if isinstance(scene, str) and scene.isdigit() else scene
        if isinstance(index, (int, np.integer)) and not isinstance(index, bool) and 0 <= index < len(ids):
            return int(index)
        raise DataError(f"{self.path}: no scene {scene!r}; it has {len(ids)} scene(s): {_listing(ids)}")

    def scene(self, scene: int | str = 0) -> SceneInfo:
        """Sizes and metadata of a scene, by index or id (digits count as an index when no id matches)."""
        index = self.scene_index(scene)
        if index not in self._info:
            self._info[index] = self._read_info(index)
        return self._info[index]

    def _read_info(self, index: int) -> SceneInfo:
        img, path = self._img, self.path
        try:
            _set_scene(img, index)
            dims = img.dims
            rgb = "S" in dims.order and dims.S > 1
            if rgb and dims.C > 1:
                raise DataError(f"{path}: has both {dims.C} channels and {dims.S} RGB samples; not supported")
            n_channels = dims.S if rgb else dims.C
            names = [str(c) for c in (img.channel_names or [])]
            if len(names) != n_channels:
                names = [f"channel{i}" for i in range(n_channels)]
            pps = img.physical_pixel_sizes
            units = _dimension_units(img)
            sizes = {ax: _micrometers(getattr(pps, ax.upper()), units.get(ax.upper())) for ax in ("z", "y", "x")}
            info = SceneInfo(
                id=str(img.scenes[index]), index=index, T=int(dims.T), C=int(n_channels), Z=int(dims.Z),
                Y=int(dims.Y), X=int(dims.X), dtype=np.dtype(img.dtype), channel_names=names,
                pixel_sizes=sizes, time_increment=_time_increment(img, units.get("T")), rgb=bool(rgb),
            )
        except DataError:
            raise
        except Exception as e:
            raise _corrupt(path, e) from None
        return info

    def channel_indices(self, channels: ChannelSpec | Sequence[ChannelSpec] | None, scene: int | str = 0) -> list[int]:
        """Channel indices for a selection by index or name (None: all); a missing one is a DataError."""
        info = self.scene(scene)
        if channels is None:
            return list(range(info.C))
        if isinstance(channels, (int, str, np.integer)):
            channels = [channels]
        names, out, bad = info.channel_names, [], []
        for ch in channels:
            index = _channel_index(ch, names)
            if index is None:
                bad.append(ch)
            else:
                out.append(index)
        if bad:
            where = f" (scene {info.id!r})" if len(self.scenes) > 1 else ""
            missing = ", ".join(repr(b) for b in bad)
            raise DataError(
                f"{self.path}{where}: no channel {missing}; it has {info.C} channel(s): "
                + ", ".join(f"{i} {n!r}" for i, n in enumerate(names))
            )
        return out

    def read_block(
        self,
        t: int = 0,
        channels: ChannelSpec | Sequence[ChannelSpec] | None = None,
        z: Range = None,
        *,
        y: Range = None,
        x: Range = None,
        scene: int | str = 0,
    ) -> np.ndarray:
        """One (C_selected, Z_range, Y_range, X_range) numpy block of time point `t`, read lazily.

        `channels` are indices or names (None: all); `z`, `y`, `x` are slices or (start, stop) pairs
        (None: the whole axis). Only the chunks (OME-Zarr) or planes (TIFF; whole planes, then
        cropped to `y`, `x`) the block covers are read.
        """
        info = self.scene(scene)
        if not (isinstance(t, (int, np.integer)) and 0 <= t < info.T):
            raise DataError(f"{self.path}: has {info.T} time point(s), no time point {t!r}")
        idx = self.channel_indices(channels, scene)
        zs, ys, xs = (_range(self.path, ax, r, n) for ax, r, n in (("z", z, info.Z), ("y", y, info.Y),
                                                                   ("x", x, info.X)))
        return self._read(info, int(t), idx, zs, ys, xs)

    def _read(self, info: SceneInfo, t: int, idx: list[int], zs: slice, ys: slice, xs: slice) -> np.ndarray:
        """The (C, Z, Y, X) block of checked ranges, read through bioio's dask arrays."""
        partial_z = zs.stop - zs.start < info.Z
        img = self._planes_image(info) if partial_z else self._img
        try:
            _set_scene(img, info.index)
            if info.rgb:
                lazy = img.get_image_dask_data("SZYX", T=int(t), C=0)
            else:
                lazy = img.get_image_dask_data("CZYX", T=int(t))
            if idx != list(range(info.C)):
                lazy = lazy[idx]
            block = np.asarray(lazy[:, zs, ys, xs].compute())
        except DataError:
            raise
        except Exception as e:
            raise _corrupt(self.path, e) from None
        return block

    def _planes_image(self, info: SceneInfo) -> Any:
        """The file opened with one dask chunk per plane when its stacks are big and bioio reads TIFF."""
        if info.Z * info.Y * info.X * info.dtype.itemsize <= PLANE_CHUNK_BYTES:
            return self._img
        if not hasattr(self._img.reader, "chunk_dims"):  # native chunks (OME-Zarr) need nothing
            return self._img
        if self._planes is None:
            self._planes = _open(self.path, reader=type(self._img.reader), chunk_dims=["Y", "X", "S"])
        return self._planes


def open_image(path: str | Path) -> ImageSource:
    """Open `path` lazily through bioio (a plain one-plane TIFF through tifffile alone, which reads it as
    bioio does: see `mmv_zoo.io.tiff`); unreadable or missing files are a DataError naming the file."""
    from .tiff import open_plain_tiff

    path = Path(path)
    return open_plain_tiff(path) or ImageSource(path, _open(path))


def _set_scene(img: Any, index: int) -> None:
    if img.current_scene_index != index:
        img.set_scene(index)


def _channel_index(ch: Any, names: list[str]) -> int | None:
    """A name, else an index (an int, or digits as a command line gives them); None if there is no such channel."""
    if isinstance(ch, str):
        if ch in names:
            return names.index(ch)
        ch = int(ch) if ch.isdigit() else -1
    if isinstance(ch, (int, np.integer)) and not isinstance(ch, bool) and 0 <= ch < len(names):
        return int(ch)
    return None


def _listing(items: Sequence[str]) -> str:
    return ", ".join(f"{i} {s!r}" for i, s in enumerate(items))


def _range(path: Path, axis: str, r: Range, size: int) -> slice:
    if r is None:
        return slice(0, size)
    if isinstance(r, slice):
        if r.step not in (None, 1):
            raise DataError(f"{path}: {axis} range {r} must have step 1")
        start, stop, _ = r.indices(size)
        ok = (r.start is None or r.start >= 0) and (r.stop is None or r.stop <= size)
    else:
        start, stop = (int(v) for v in r)
        ok = start >= 0 and stop <= size
    if not ok or start >= stop:
        raise DataError(f"{path}: {axis} range {start}:{stop} is empty or outside the image's {size} {axis} size")
    return slice(start, stop)


def _dimension_units(img: Any) -> dict[str, Any]:
    """Per dimension letter, the pint unit the file declares (OME-Zarr axes), where it declares one."""
    try:
        props = img.dimension_properties
        return {d: getattr(props, d).unit for d in "TZYX" if getattr(props, d).unit is not None}
    except Exception:
        return {}


def _micrometers(value: float | None, unit: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    if unit is not None:
        with contextlib.suppress(Exception):  # not a length unit: keep the number as the file gives it
            value = float((value * unit).to("micrometer").magnitude)
    return value


_OME_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9, "min": 60.0, "h": 3600.0}


def _time_increment(img: Any, unit: Any) -> float | None:
    """Seconds between time points: from OME-Zarr's t scale when it has a unit, else OME-XML."""
    try:
        value = img.time_interval
    except Exception:
        value = None
    if isinstance(value, timedelta):
        return value.total_seconds()
    if value is not None and unit is not None:
        try:
            return float((float(value) * unit).to("second").magnitude)
        except Exception:
            pass
    try:
        pixels = img.ome_metadata.images[img.current_scene_index].pixels
    except Exception:  # not an OME file
        return None
    if pixels.time_increment is None:
        return None
    unit_name = getattr(pixels.time_increment_unit, "value", pixels.time_increment_unit)
    factor = _OME_TIME_UNITS.get(str(unit_name))
    return None if factor is None else float(pixels.time_increment) * factor
