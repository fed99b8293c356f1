"""Output writers with one interface: OME-Zarr written tile by tile, or OME-TIFF written whole at the end.

    fmt = choose_format(shape, dtype, "auto")
    with open_writer(folder / output_name(stem, fmt), shape, dtype, pixel_sizes=..., channel_names=...) as out:
        for t in range(shape[0]):
            region = out.region(t)                   # (C, Z, Y, X), accepts numpy slice assignment
            region[:, z0:z1, y0:y1, x0:x1] = tile
    # leaving the block commits; an exception (or out.abort()) leaves nothing under the final name

Nothing is ever written under the final name before `commit()`: OME-Zarr is written into a hidden
folder `.<name>.partial-<pid>` next to the target and renamed into place; OME-TIFF is kept in memory
and written through `write_ome_tiff` (its own `.partial-<pid>` file, renamed). A run that is killed
leaves only such a hidden `.partial-<pid>` entry: it is never read as an image (hidden names are
skipped), never taken for a finished output, and a later run writes its own; delete it at leisure.
An existing output is not overwritten unless `overwrite=True` (the caller decides skip/overwrite).

OME-Zarr, as viewers open it:

- Written through bioio-ome-zarr's `OMEZarrWriter` (the bioio team's, whose reader we read with; already
  a dependency): it creates the arrays of every resolution level and the NGFF metadata (axes, scales
  per level, omero channels). ome-zarr-py writes whole (dask) arrays only, with nothing to write a
  region at a time; `OMEZarrWriter.write_region` does, but downsamples each region on its own by
  nearest neighbour, which is wrong for tiles that do not line up with the factor of 2 and for images
  (aliasing). So level 0 is filled tile by tile through the writer's level-0 array and the lower
  levels are made at `commit()` from it, block by block (`mmv_zoo.io.pyramid`: 2x2 mean for images,
  every second pixel for labels), halving Y and X until a level is at most 1024 pixels a side: a
  2048x2048 output has two levels.
- NGFF 0.4 on zarr format 2: the version napari's OME-Zarr reader (napari-ome-zarr, which reads 0.4
  and 0.5), bioio and Fiji's readers open most widely; NGFF 0.5 needs zarr format 3, which Fiji's
  readers opened only lately and not all of them. The writer writes either: one argument to change.
- A label output (`labels=True`: the integer labels of a segmentation or of instances) is an image
  whose `labels/<name>` is an NGFF label image (`image-label`, its source `../../`) holding the same
  pixels (a compressed label map is small). The root stays a plain multiscale image, so bioio, Fiji
  and our own reader read the labels as an image, as before; napari-ome-zarr opens the root image
  and the Labels layer. The label image has no omero block: napari-ome-zarr would pass its display
  window to the Labels layer, which refuses it. The input is never written to (inputs are not
  modified), so the labels are not put under the input's own `labels` group.
- The omero display window of each channel is the data's range, found while the pyramid is built
  (a float output is displayed from its minimum to its maximum, not 0-255).
"""

from __future__ import annotations

import os
import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import OutputError
from .pyramid import build_levels, level_shapes
from .write import make_folder, temporary_path, write_ome_tiff

Format = Literal["ome-tiff", "ome-zarr"]
FORMATS: tuple[str, ...] = ("ome-tiff", "ome-zarr")
SUFFIXES: dict[str, str] = {"ome-tiff": ".ome.tiff", "ome-zarr": ".ome.zarr"}
ZARR_ABOVE_BYTES = 2 * 2**30
"""`auto` writes outputs larger than this as OME-Zarr (streamed), smaller ones as OME-TIFF (in memory)."""
NGFF_VERSION = "0.4"
_GREY = ("FFFFFF",)
_MULTI_COLORS = ("00FF00", "FF00FF", "00FFFF", "FFFF00", "FF0000", "0000FF", "FFFFFF")


def choose_format(shape: tuple[int, ...], dtype: Any, requested: str = "auto") -> Format:
    """The output format: `requested`, or for "auto" OME-Zarr above `ZARR_ABOVE_BYTES`, else OME-TIFF."""
    if requested == "auto":
        size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        return "ome-zarr" if size > ZARR_ABOVE_BYTES else "ome-tiff"
    if requested not in FORMATS:
        raise OutputError(f"unknown output format {requested!r}; choose one of auto, {', '.join(FORMATS)}")
    return requested  # type: ignore[return-value]


def output_name(stem: str, fmt: str) -> str:
    """`stem` with the suffix of `fmt` (".ome.tiff" or ".ome.zarr")."""
    return stem + SUFFIXES[fmt]


def format_of(path: Path) -> Format:
    """The format a path's suffix names: .zarr -> OME-Zarr, .tif/.tiff -> OME-TIFF."""
    name = Path(path).name.lower()
    if name.endswith(".zarr"):
        return "ome-zarr"
    if name.endswith((".tif", ".tiff")):
        return "ome-tiff"
    raise OutputError(f"{path}: unknown output format; name it *.ome.tiff or *.ome.zarr")


def zarr_chunks(shape: tuple[int, int, int, int, int]) -> tuple[int, int, int, int, int]:
    """Chunks (1, 1, z, y, x) of a few MiB: up to 32 Z slices, 256-1024 pixels in Y and X."""
    _, _, nz, ny, nx = shape
    cz = min(nz, 32)
    cyx = 256 if cz >= 16 else 512 if cz >= 4 else 1024
    return (1, 1, max(cz, 1), max(min(ny, cyx), 1), max(min(nx, cyx), 1))


def open_writer(
    path: str | Path,
    shape: tuple[int, int, int, int, int],
    dtype: Any,
    *,
    pixel_sizes: dict[str, float | None] | None = None,
    channel_names: list[str] | None = None,
    time_increment: float | None = None,
    overwrite: bool = False,
    labels: bool = False,
) -> OutputWriter:
    """A writer for a (T, C, Z, Y, X) output at `path`, in the format its suffix names (see `format_of`);
    `labels` marks an integer label image (written as an NGFF label image too in OME-Zarr)."""
    path = Path(path)
    cls = OmeZarrOutput if format_of(path) == "ome-zarr" else OmeTiffOutput
    return cls(path, shape, dtype, pixel_sizes=pixel_sizes, channel_names=channel_names,
               time_increment=time_increment, overwrite=overwrite, labels=labels)


class OutputWriter(ABC):
    """One (T, C, Z, Y, X) output; fill it through `region(t)` or `write`, then `commit()` or `abort()`.

    As a context manager it commits on a normal exit and aborts on an exception.
    """

    format: Format
    chunks: tuple[int, int, int, int, int] | None = None
    """The on-disk chunk shape (T, C, Z, Y, X) writes are best aligned to; None when written whole."""

    def __init__(
        self,
        path: Path,
        shape: tuple[int, int, int, int, int],
        dtype: Any,
        *,
        pixel_sizes: dict[str, float | None] | None = None,
        channel_names: list[str] | None = None,
        time_increment: float | None = None,
        overwrite: bool = False,
        labels: bool = False,
    ) -> None:
        shape = tuple(int(s) for s in shape)
        if len(shape) != 5 or min(shape) < 1:
            raise ValueError(f"output shape must be 5 positive sizes (T, C, Z, Y, X), got {shape}")
        if channel_names is not None and len(channel_names) != shape[1]:
            raise ValueError(f"{len(channel_names)} channel names for {shape[1]} channels")
        if labels and (shape[1] != 1 or not np.issubdtype(np.dtype(dtype), np.integer)):
            raise ValueError(f"a label output has one channel of integers, not {shape[1]} of {np.dtype(dtype)}")
        self.path = Path(path)
        self.shape: tuple[int, int, int, int, int] = shape  # type: ignore[assignment]
        self.dtype = np.dtype(dtype)
        self.pixel_sizes = dict(pixel_sizes or {})
        self.channel_names = list(channel_names) if channel_names is not None else None
        self.time_increment = time_increment
        self.overwrite = overwrite
        self.labels = labels
        self.state: Literal["open", "committed", "aborted"] = "open"
        self._refuse_existing()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, shape={self.shape}, dtype={self.dtype}, {self.state})"

    def __enter__(self) -> OutputWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.abort()
        elif self.state == "open":
            self.commit()

    def _refuse_existing(self) -> None:
        if not self.overwrite and (self.path.exists() or self.path.is_symlink()):
            raise OutputError(f"{self.path}: already exists; not overwritten")

    def _check_open(self) -> None:
        if self.state != "open":
            raise OutputError(f"{self.path}: writer is already {self.state}")

    def _check_t(self, t: int) -> int:
        if not 0 <= t < self.shape[0]:
            raise IndexError(f"time point {t} is outside the output's {self.shape[0]} time point(s)")
        return int(t)

    @abstractmethod
    def region(self, t: int) -> Any:
        """Time point `t` as a (C, Z, Y, X) array-like that takes numpy slice assignment (and reads back)."""

    def write(self, t: int, index: tuple[slice | int, ...], block: np.ndarray) -> None:
        """Write `block` at `index` (slices over C, Z, Y, X) of time point `t`."""
        self.region(t)[tuple(index)] = block

    @abstractmethod
    def commit(self) -> Path:
        """Finish the output and move it under its final name; returns the path."""

    @abstractmethod
    def abort(self) -> None:
        """Drop everything written so far; the final name is left untouched. Safe to call twice."""


class OmeTiffOutput(OutputWriter):
    """OME-TIFF for outputs that fit in memory: filled in memory, written atomically at `commit()`."""

    format: Format = "ome-tiff"

    def __init__(self, path: Path, shape: tuple[int, int, int, int, int], dtype: Any, **kwargs: Any) -> None:
        super().__init__(path, shape, dtype, **kwargs)
        self._data: np.ndarray | None = np.zeros(self.shape, self.dtype)

    def region(self, t: int) -> np.ndarray:
        self._check_open()
        assert self._data is not None
        return self._data[self._check_t(t)]

    def commit(self) -> Path:
        self._check_open()
        self._refuse_existing()
        assert self._data is not None
        try:
            write_ome_tiff(self.path, self._data, self.pixel_sizes, self.channel_names, self.time_increment)
        except BaseException:
            self.abort()
            raise
        self.state, self._data = "committed", None
        return self.path

    def abort(self) -> None:
        if self.state == "open":
            self.state, self._data = "aborted", None


class _ZarrTime:
    """One time point of a (T, C, Z, Y, X) zarr array, as a (C, Z, Y, X) array-like."""

    def __init__(self, array: Any, t: int) -> None:
        self._array, self._t = array, t
        self.shape: tuple[int, ...] = tuple(array.shape[1:])
        self.dtype = array.dtype
        self.ndim = 4

    def _key(self, key: Any) -> tuple[Any, ...]:
        return (self._t, *(key if isinstance(key, tuple) else (key,)))

    def __setitem__(self, key: Any, value: Any) -> None:
        self._array[self._key(key)] = value

    def __getitem__(self, key: Any) -> np.ndarray:
        return self._array[self._key(key)]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = self._array[self._t]
        return data if dtype is None else data.astype(dtype)


class OmeZarrOutput(OutputWriter):
    """OME-Zarr (NGFF 0.4, zarr format 2) written chunk by chunk to disk, its lower resolutions at `commit()`.

    Writes aligned to `chunks` are fastest; unaligned ones are correct (read-modify-write of the
    chunks they touch). Regions never written read back as 0. A label output (`labels=True`) is
    also an NGFF label image, `labels/<name>`, of itself (see the module notes).
    """

    format: Format = "ome-zarr"

    def __init__(
        self,
        path: Path,
        shape: tuple[int, int, int, int, int],
        dtype: Any,
        *,
        chunks: tuple[int, int, int, int, int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(path, shape, dtype, **kwargs)
        self.chunks = tuple(chunks) if chunks is not None else zarr_chunks(self.shape)  # type: ignore[assignment]
        self.levels = level_shapes(self.shape)
        self.name = image_name(self.path)
        self.partial = temporary_path(self.path)
        make_folder(self.path.parent)
        _remove(self.partial)  # our pid's leftover: a dead run's, or an earlier abort that failed
        try:
            self._image = self._ngff_writer(self.partial)
            if self.labels:
                self._label = self._ngff_writer(self.partial / "labels" / self.name, {"image-label": {
                    "version": NGFF_VERSION, "source": {"image": "../../"}}})
        except OSError as e:
            _remove(self.partial)
            raise OutputError(f"{self.path}: cannot write ({e.strerror or e})") from None
        except BaseException:
            _remove(self.partial)
            raise
        self._array = self._image.datasets[0]

    def _ngff_writer(self, folder: Path, attributes: dict[str, Any] | None = None) -> Any:
        """bioio-ome-zarr's writer of one multiscale image at `folder`, its arrays and metadata created."""
        import numcodecs
        import zarr
        from bioio_ome_zarr.writers import OMEZarrWriter

        if folder != self.partial:  # a label image: under the `labels` group that lists it
            zarr.open_group(str(folder.parent), mode="w-", zarr_format=2).attrs["labels"] = [folder.name]
        known_t = self.time_increment is not None and self.time_increment > 0
        sizes = [self.pixel_sizes.get(ax) for ax in ("z", "y", "x")]
        writer = OMEZarrWriter(
            str(folder), self.levels, self.dtype, zarr_format=2, image_name=self.name,
            chunk_shape=[tuple(min(c, n) for c, n in zip(self.chunks, level, strict=True)) for level in self.levels],
            compressor=numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE),
            channels=self._channels(), axes_names=["t", "c", "z", "y", "x"],
            axes_types=["time", "channel", "space", "space", "space"],
            axes_units=["second" if known_t else None, None, *("micrometer" if s else None for s in sizes)],
            physical_pixel_size=[float(self.time_increment) if known_t else 1.0, 1.0,  # type: ignore[arg-type]
                                 *(float(s) if s else 1.0 for s in sizes)],
            attributes=attributes,
        )
        writer.initialize()
        return writer

    def _channels(self, lows: Any = None, highs: Any = None) -> list[Any]:
        """OMERO channels: names, colours and the display window (the data's range once it is known)."""
        from bioio_ome_zarr.writers import Channel

        n_channels = self.shape[1]
        names = self.channel_names or [f"channel{i}" for i in range(n_channels)]
        colors = _GREY if n_channels == 1 else _MULTI_COLORS
        channels = []
        for i, label in enumerate(names):
            low, high = (0.0, 1.0) if lows is None else (float(lows[i]), float(highs[i]))
            if not (np.isfinite(low) and np.isfinite(high)):
                low, high = 0.0, 1.0
            if self.labels:
                low = 0.0
            if high <= low:
                high = low + 1
            if np.issubdtype(self.dtype, np.integer):
                low, high = int(low), int(high)  # type: ignore[assignment]
            channels.append(Channel(label=str(label), color=colors[i % len(colors)],
                                    window={"min": low, "max": high, "start": low, "end": high}))  # type: ignore[dict-item]
        return channels

    def region(self, t: int) -> _ZarrTime:
        self._check_open()
        return _ZarrTime(self._array, self._check_t(t))

    def _finish(self) -> None:
        """The lower resolutions, the label image's copy and the channels' display window."""
        writers = [self._image] + ([self._label] if self.labels else [])
        lows, highs = build_levels([[w.datasets[k] for w in writers] for k in range(len(self.levels))],
                                   self.labels)
        for writer in writers:
            writer.channels = self._channels(lows, highs)
            attrs = writer.preview_metadata()
            if writer is not self._image:  # napari-ome-zarr gives a label's omero window to its Labels layer,
                del attrs["omero"]  # which refuses it: a label image has no display settings
            writer.root.attrs.put(attrs)

    def commit(self) -> Path:
        self._check_open()
        try:
            self._finish()
            _move_into_place(self.partial, self.path, self.overwrite)
        except BaseException:
            self.abort()
            raise
        self.state = "committed"
        return self.path

    def abort(self) -> None:
        if self.state == "open":
            self.state = "aborted"
            _remove(self.partial)


def image_name(path: Path) -> str:
    """The image's name: the file name without `.ome.zarr` (or its last suffix)."""
    return path.name[: -len(".ome.zarr")] if path.name.lower().endswith(".ome.zarr") else path.stem


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def _move_into_place(partial: Path, final: Path, overwrite: bool) -> None:
    """Rename `partial` to `final`; an existing `final` is an error unless `overwrite`."""
    try:
        if final.exists() or final.is_symlink():
            if not overwrite:
                raise OutputError(f"{final}: already exists; not overwritten")
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            _remove(old)
            os.replace(final, old)
            os.replace(partial, final)
            _remove(old)
        else:
            os.replace(partial, final)
    except OSError as e:
        raise OutputError(f"{final}: cannot write ({e.strerror or e})") from None
