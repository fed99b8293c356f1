"""Plain one-plane TIFF files (grey or RGB(A), no OME or ImageJ metadata) read with tifffile alone.

They are the commonest input (exports of a single image), and bioio reads them through the same
tifffile after importing its OME model, which costs more than reading the image. `open_plain_tiff`
gives an `ImageSource` that reports what bioio reports for such a file: one scene `Image:0`, the
channel name bioio makes up (`Channel:0:0`; `channel<i>` for RGB samples), the pixel size from the
resolution tags in micrometers (None without a resolution unit) and no Z size. Any other TIFF (OME,
ImageJ hyperstacks, several pages or series, other axes) is left to bioio.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import DataError
from .source import ImageSource, SceneInfo, _corrupt

_MICROMETERS = {1: 1.0, 2: 25400.0, 3: 10000.0, 4: 1000.0, 5: 1.0}
"""Micrometers per TIFF ResolutionUnit (none, inch, centimeter, millimeter, micrometer), as bioio-tifffile."""


class PlainTiffSource(ImageSource):
    """One YX or YXS page; the file is read once, when the first block is asked for."""

    def __init__(self, path: Path, info: SceneInfo) -> None:
        super().__init__(path, None)
        self._info = {0: info}
        self._pixels: np.ndarray | None = None

    @property
    def scenes(self) -> tuple[str, ...]:
        return (self._info[0].id,)

    def _read_info(self, index: int) -> SceneInfo:  # only scene 0 exists, known from the start
        return self._info[index]

    def close(self) -> None:
        self._pixels = None

    def _read(self, info: SceneInfo, t: int, idx: list[int], zs: slice, ys: slice, xs: slice) -> np.ndarray:
        if self._pixels is None:
            import tifffile

            try:
                data = tifffile.imread(self.path, is_mmstack=False)
            except Exception as e:
                raise _corrupt(self.path, e) from None
            self._pixels = np.moveaxis(data, -1, 0) if info.rgb else data[None]  # (C, Y, X)
        return self._pixels[idx, ys, xs][:, None]


def open_plain_tiff(path: Path) -> PlainTiffSource | None:
    """A source for `path` when it is a plain one-plane TIFF, else None (bioio reads it)."""
    name = path.name.lower()
    if not name.endswith((".tif", ".tiff")) or name.endswith((".ome.tif", ".ome.tiff")) or not path.is_file():
        return None
    import tifffile

    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    try:
        with tifffile.TiffFile(path, is_mmstack=False) as tif:
            if tif.is_ome or tif.is_imagej or len(tif.series) != 1 or len(tif.pages) != 1:
                return None
            series, page = tif.series[0], tif.pages[0]
            axes, shape = series.axes, series.shape
            rgb = axes == "YXS"
            if axes != "YX" and not (rgb and shape[-1] in (3, 4)):
                return None
            sizes = _pixel_sizes(page.tags)
            dtype = np.dtype(series.dtype)
    except DataError:
        raise
    except Exception:  # let bioio try, and say what is wrong with the file
        return None
    channels = [f"channel{i}" for i in range(shape[-1])] if rgb else ["Channel:0:0"]
    info = SceneInfo(id="Image:0", index=0, T=1, C=len(channels), Z=1, Y=int(shape[0]), X=int(shape[1]),
                     dtype=dtype, channel_names=channels, pixel_sizes=sizes, time_increment=None, rgb=rgb)
    return PlainTiffSource(path, info)


def _pixel_sizes(tags: object) -> dict[str, float | None]:
    """Micrometers per pixel from the resolution tags, as bioio-tifffile computes them."""
    try:
        unit = int(tags["ResolutionUnit"].value)  # type: ignore[index]
        scale = _MICROMETERS.get(unit, 1.0)
        xn, xd = tags["XResolution"].value  # type: ignore[index]
        yn, yd = tags["YResolution"].value  # type: ignore[index]
        return {"z": None, "y": scale * yd / yn, "x": scale * xd / xn}
    except Exception:
        return {"z": None, "y": None, "x": None}
