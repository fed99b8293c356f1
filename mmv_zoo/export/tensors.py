"""Sample image, test tensors and cover of an exported package."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..io.read import image_stem, is_image, read_image, select_channels
from . import ExportError
from .axes import AxisSize

if TYPE_CHECKING:
    from ..entry import Entry

# Largest test tensor per space axis: enough to show the model at work, small enough to ship.
MAX_CROP = {2: (256, 256), 3: (32, 128, 128)}


def find_sample(entry: Entry, info: dict[str, Any] | None) -> Path:
    """The run's first validation image (from run.json `data` and `val_files` and the entry's layout)."""
    hint = "pass a sample image (sample=..., --sample) for the test tensors"
    if not info or not info.get("val_files") or not info.get("data"):
        raise ExportError(f"no validation image recorded for this run (run.json val_files/data); {hint}")
    data, names = Path(info["data"]), [str(n) for n in info["val_files"]]
    layout = entry.mmv.data.layout
    candidates: list[Path] = []
    # a single image's validation region is named after it; planes of stacks are no sample
    names = [n.removesuffix("_val_region") for n in names if not re.search(r"_t\d{3}_z\d{3}$", n)]
    if layout.layout in ("paired_folders", "unpaired_folders", "source_folder"):
        for folder in (data / layout.source, data / "val" / layout.source):
            if folder.is_dir():
                candidates += sorted(p for p in folder.iterdir() if is_image(p))
    else:
        table = data / layout.file
        if table.is_file():
            with table.open(newline="") as f:
                candidates = [table.parent / row.get(layout.source_column, "") for row in csv.DictReader(f)]
    if not names:
        raise ExportError(f"the run validated on planes of stacks, which are no sample image; {hint}")
    for name in names:
        for path in candidates:
            if image_stem(path) == name and path.exists():
                return path
    raise ExportError(f"the run's validation image {names[0]!r} is not found under {data} any more; {hint}")


def load_crop(path: Path, entry: Entry, sizes: list[AxisSize]) -> np.ndarray:
    """The entry's channels of `path`, cropped centrally to a valid size: (C, [Z], Y, X) float32, raw values."""
    dims = entry.spatial_dims
    data = select_channels(read_image(path, dims), entry.in_channels)
    shape = data.shape[1:]
    slices: list[slice] = [slice(None)]
    for n, size, cap in zip(shape, sizes, MAX_CROP[dims], strict=True):
        if n < size.min:
            raise ExportError(
                f"{path}: axis {size.id} has {n} pixels; the package needs at least {size.min} "
                f"(valid sizes {size.min} + k*{size.step}); pass a larger sample image"
            )
        want = size.rule.fit_down(min(n, max(cap, size.min)))
        start = (n - want) // 2
        slices.append(slice(start, start + want))
    return np.ascontiguousarray(data[tuple(slices)], dtype=np.float32)


def other_valid_shape(shape: tuple[int, ...], sizes: list[AxisSize]) -> tuple[int, ...]:
    """A valid space shape different from `shape` (one step smaller where possible, else larger)."""
    out = []
    for n, size in zip(shape, sizes, strict=True):
        if size.step == 0:
            out.append(n)
        else:
            out.append(n - size.step if n - size.step >= size.min else n + size.step)
    return tuple(out)


def _plane(x: np.ndarray, stretch: bool = True, clip: bool = True) -> np.ndarray:
    """(Y, X) display plane of a (C, [Z], Y, X) array: first channel, middle slice; stretched to 0..1
    (or clipped to it, or, with neither, as it is)."""
    a = x[0]
    if a.ndim == 3:
        a = a[a.shape[0] // 2]
    if not stretch:
        return np.clip(a, 0, 1) if clip else a
    lo, hi = np.percentile(a, (1, 99.8))
    return np.clip((a - lo) / (hi - lo + 1e-6), 0, 1)


def write_cover(path: Path, raw: np.ndarray, output: np.ndarray, segmentation: bool, mask: bool = False,
                labels: bool = False) -> Path:
    """A 2:1 PNG: the input (left) next to the output (right; foreground probability for segmentation,
    the 0/1 mask for `mask` outputs, each instance in its own colour for `labels`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = (1.0 - output[:1]) if segmentation else output.astype(np.float32) if mask else output
    segmentation = segmentation or mask
    fig = plt.figure(figsize=(8, 4), dpi=100)
    title = "instances" if labels else "foreground" if segmentation else "output"
    for i, (img, name) in enumerate(((raw, "input"), (shown, title))):
        ax = fig.add_axes((i * 0.5, 0.0, 0.5, 0.92))
        if i == 1 and labels:
            ax.imshow(_label_colours(_plane(img.astype(np.int64), stretch=False, clip=False)), interpolation="nearest")
        else:
            grayscale = i == 0 or not segmentation  # probabilities are shown on a fixed 0..1 colour scale
            ax.imshow(_plane(img, stretch=grayscale), cmap="gray" if grayscale else "magma", interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.axis("off")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _label_colours(labels: np.ndarray) -> np.ndarray:
    """(Y, X, 3) float RGB: background black, each label a colour of its own (a seeded random hue)."""
    palette = np.random.default_rng(0).uniform(0.25, 1.0, (int(labels.max(initial=0)) + 1, 3))
    palette[0] = 0.0
    return palette[labels]


def write_sample_tiff(path: Path, tensor: np.ndarray) -> Path:
    """A sample tensor (B, C, [Z], Y, X) as TIFF for human viewers (BioImage.IO's sample_tensor)."""
    import tifffile

    integer = np.issubdtype(tensor.dtype, np.integer)  # labels and masks keep their type
    tifffile.imwrite(path, np.ascontiguousarray(tensor, dtype=tensor.dtype if integer else np.float32))
    return path
