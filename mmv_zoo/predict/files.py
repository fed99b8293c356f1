"""Predict files: scenes and time points of 2D–5D images, read lazily, written as they are predicted.

Each input file yields one output per scene (OME-TIFF for small outputs, chunked OME-Zarr for large
ones or on request), written under a temporary name and renamed when complete: an interrupted batch
leaves no half-written output, and running it again skips what is done.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..io.read import image_stem, is_grey_as_colour
from ..io.source import ImageSource, open_image
from ..io.writers import choose_format, open_writer, output_name
from ..settings.predict import Selection
from ..transforms.stain import StainError
from .predictor import Predictor

STATS_VOXELS = 1 << 26
"""Normalization statistics come from the whole frame up to this many voxels per channel, else from
evenly spaced z planes (a documented approximation for frames larger than memory)."""


@dataclass
class Prediction:
    input: Path
    output: Path | None
    skipped: bool = False
    scene: str | None = None
    frames: int = 0
    notes: list[str] = field(default_factory=list)


class FrameSource:
    """One time point of one scene as a (C, [Z], Y, X) tile source; pixels are read per tile."""

    def __init__(self, src: ImageSource, scene: int, t: int, channels: list[int], z: tuple[int, int],
                 spatial_dims: int) -> None:
        info = src.scene(scene)
        self.src, self.scene, self.t, self.channels, self.z, self.dims = src, scene, t, channels, z, spatial_dims
        space = (info.Y, info.X) if spatial_dims == 2 else (z[1] - z[0], info.Y, info.X)
        self.shape = (len(channels), *space)

    def read(self, region: tuple[slice, ...]) -> np.ndarray:
        space = [(s.start or 0, s.stop if s.stop is not None else n) for s, n in zip(region[1:], self.shape[1:],
                                                                                     strict=True)]
        if self.dims == 2:
            z, (y, x) = (self.z[0], self.z[0] + 1), space
        else:
            (z0, z1), y, x = space
            z = (self.z[0] + z0, self.z[0] + z1)
        block = self.src.read_block(self.t, self.channels, z, y=y, x=x, scene=self.scene)
        block = block[:, 0] if self.dims == 2 else block
        return block[region[0]]

    def whole(self) -> np.ndarray:
        return self.read(tuple(slice(None) for _ in self.shape))

    def stats_sample(self) -> np.ndarray:
        """The whole frame, or evenly spaced z planes of a frame too large to hold."""
        voxels = int(np.prod(self.shape[1:]))
        if self.dims == 2 or voxels <= STATS_VOXELS:
            return self.whole()
        nz = self.shape[1]
        keep = max(1, STATS_VOXELS // int(np.prod(self.shape[2:])))
        planes = np.unique(np.linspace(0, nz - 1, min(nz, keep)).round().astype(int))
        return np.concatenate([self.read((slice(None), slice(p, p + 1), slice(None), slice(None)))
                               for p in planes], axis=1)


def scene_suffix(src: ImageSource, scene: int) -> str:
    """'' for single-scene files, else `_<scene id>` made safe for a file name."""
    if len(src.scenes) == 1:
        return ""
    return "_" + (re.sub(r"[^\w.-]+", "_", src.scenes[scene]).strip("_") or f"scene{scene}")


def _frames(path: Path, size: int, wanted: tuple[int, int] | None, what: str) -> tuple[int, int]:
    if wanted is None:
        return 0, size
    start, stop = wanted
    if not (0 <= start < stop <= size):
        raise DataError(f"{path}: --{what} {start}:{stop} is outside the image's {size} {what} position(s)")
    return start, stop


def predict_file(predictor: Predictor, path: Path, out: Path, selection: Selection, overwrite: bool,
                 on_tile: Callable[[int, int], None] | None = None) -> list[Prediction]:
    """All selected scenes of `path`, one output each; existing outputs are skipped unless `overwrite`."""
    results = []
    with open_image(path) as src:
        scenes = ([src.scene_index(s) for s in selection.scenes] if selection.scenes is not None
                  else list(range(len(src.scenes))))
        for scene in scenes:
            results.append(_predict_scene(predictor, src, scene, out, selection, overwrite, on_tile))
    return results


def _channels(predictor: Predictor, src: ImageSource, scene: int, wanted: list[int | str] | None,
              z: int) -> tuple[list[int], str | None]:
    """The channels to predict, and a note when a grey image saved as RGB(A) is read as its one channel."""
    info = src.scene(scene)
    chans = src.channel_indices(wanted, scene) if wanted is not None else list(range(info.C))
    if len(chans) == predictor.in_channels:
        return chans, None
    if wanted is None and predictor.in_channels == 1 and info.C in (3, 4):
        plane = FrameSource(src, scene, 0, chans, (z, z + 1), 2).whole()
        if is_grey_as_colour(plane):
            return [0], f"{src.path.name}: its {info.C} channels hold one grey image; predicted as one channel"
    listing = ", ".join(f"{i} {n!r}" for i, n in enumerate(info.channel_names))
    raise DataError(f"{src.path}: has {info.C} channel(s) ({listing}) but the model takes "
                    f"{predictor.in_channels}; pick them with --channels (indices or names)")


def _predict_scene(predictor: Predictor, src: ImageSource, scene: int, out: Path, sel: Selection, overwrite: bool,
                   on_tile: Callable[[int, int], None] | None) -> Prediction:
    path = src.path
    info = src.scene(scene)
    stem = image_stem(path) + scene_suffix(src, scene)
    t0, t1 = _frames(path, info.T, sel.t, "t")
    z0, z1 = _frames(path, info.Z, sel.z, "z")
    nz = z1 - z0
    chans, note = _channels(predictor, src, scene, sel.channels, z0)
    notes = [note] if note else []
    if predictor.spatial_dims == 2 and nz > 1:
        notes.append(f"{path.name}: a 2D model on {nz} Z planes: predicted plane by plane into one stack")
    if predictor.spatial_dims == 3 and nz == 1:
        raise DataError(f"{path}: is a single 2D plane but the model is 3D")
    n_out = max(1, predictor.out_channels)
    fmt = choose_format((t1 - t0, n_out, nz, info.Y, info.X), np.float32, sel.format)
    target = out / output_name(stem, fmt)
    others = [out / output_name(stem, f) for f in ("ome-tiff", "ome-zarr")] if sel.format == "auto" else [target]
    done = next((p for p in others if p.exists()), None)
    companions_done = all(any((out / output_name(stem + suffix, f)).exists() for f in ("ome-tiff", "ome-zarr"))
                          for suffix in predictor.companion_names())
    if done is not None and companions_done and not overwrite:
        return Prediction(path, done, skipped=True, scene=src.scenes[scene])
    if done is not None and not overwrite:  # e.g. asked for uncertainty now: the output is written again
        overwrite = True
    holder: dict[str, Any] = {}
    sizes = predictor.pixel_sizes(info.pixel_sizes)

    def writer(channels: int, dtype: Any, names: list[str], suffix: str = "") -> Any:
        """The output (or, with `suffix`, a companion such as `_uncertainty`), opened on first use."""
        if suffix not in holder:
            path = target if not suffix else out / output_name(stem + suffix, fmt)
            labels = bool(not suffix and names == ["labels"] and np.issubdtype(dtype, np.integer))
            holder[suffix] = open_writer(path, (t1 - t0, channels, nz, info.Y, info.X), dtype, pixel_sizes=sizes,
                                         channel_names=names, time_increment=info.time_increment,
                                         overwrite=overwrite, labels=labels)
        return holder[suffix]

    # a 2D model predicts a stack plane by plane (each plane normalized on its own, as if alone)
    planes = [(z, z + 1) for z in range(z0, z1)] if predictor.spatial_dims == 2 else [(z0, z1)]
    try:
        for t in range(t0, t1):
            for z, (lo, hi) in enumerate(planes):
                frame = FrameSource(src, scene, t, chans, (lo, hi), predictor.spatial_dims)
                _predict_frame(predictor, frame, t - t0, z, writer, on_tile)
        for suffix in sorted(holder, key=lambda k: k == ""):  # companions first: a committed output is complete
            holder[suffix].commit()
    except BaseException as e:
        for w in holder.values():
            w.abort()
        if isinstance(e, StainError):  # macenko normalization found no stains: name the file
            raise DataError(f"{path}: {e}") from None
        if isinstance(e, RuntimeError) and not isinstance(e, DataError):  # e.g. out of memory: name the file
            raise DataError(f"{path}: prediction failed ({str(e).splitlines()[0][:200]})") from None
        raise
    return Prediction(path, target, scene=src.scenes[scene], frames=t1 - t0, notes=notes)


def _predict_frame(predictor: Predictor, frame: FrameSource, t: int, z: int, writer: Callable[..., Any],
                   on_tile: Callable[[int, int], None] | None) -> None:
    """Predict one frame into time point `t` of the output (streamed tile by tile for our runs); a 2D
    model's frame is plane `z` of it."""
    def sample() -> np.ndarray:
        pixels = frame.stats_sample()
        if np.issubdtype(pixels.dtype, np.floating) and not np.isfinite(pixels).all():
            raise DataError(f"{frame.src.path}: time point {frame.t} holds NaN or infinite values; "
                            "replace them (e.g. with 0) before predicting")
        return pixels

    if predictor.streams:  # the statistics' pixels are held only while they are computed
        names_box: dict[str, list[str]] = {}

        def target(channels: int, dtype: Any) -> Any:
            region = writer(channels, dtype, names_box["names"]).region(t)
            return region if frame.dims == 3 else _Plane(region, z)

        names_box["names"] = predictor.output_names()
        predictor.predict(frame, out=target, stats=sample, on_tile=on_tile)
        return
    x = sample()
    x = x if x.shape == frame.shape else frame.whole()
    y, names, companions = predictor.with_companions(x)
    for suffix, (data, data_names) in [("", (y, names)), *companions.items()]:
        region = writer(data.shape[0], data.dtype, data_names, suffix).region(t)
        if frame.dims == 3:
            region[...] = data
        else:
            _Plane(region, z)[...] = data
    if on_tile is not None:
        on_tile(1, 1)


class _Plane:
    """Plane `z` of a (C, Z, Y, X) output region as a (C, Y, X) array-like, for 2D models."""

    def __init__(self, region: Any, z: int = 0) -> None:
        self.region, self.z = region, z

    def __setitem__(self, index: tuple[slice, ...], value: np.ndarray) -> None:
        if index is Ellipsis:
            self.region[:, self.z] = value
            return
        c, *space = index
        self.region[(c, self.z, *space)] = value

    def __getitem__(self, index: tuple[slice, ...]) -> np.ndarray:
        c, *space = index
        return self.region[(c, self.z, *space)]
