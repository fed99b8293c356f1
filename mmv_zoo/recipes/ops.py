"""The array operations of a recipe's `files` step (`settings/recipe.py: FileOps`): crop, RGB to grey,
every time point, output names from a pattern, per-object masks merged into instance labels, and
keeping only files with a partner in another folder. Called by `recipes._files` when any is set.
Also the manifest step's `dot_mask` (the Allen Cell Structure Segmenter's dot filter)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

GREY = np.array([0.2125, 0.7154, 0.0721])
"""Luminance weights of R, G and B (skimage.color.rgb2gray)."""
AXES = {"c": 0, "z": 1, "y": 2, "x": 3}
"""Axis of each name in a (C, Z, Y, X) block."""


def out_stem(step: Any, path: Path, where: str) -> str:
    """The output file stem of `path`: the `name_pattern` group (or the file's stem) without `strip`."""
    from ..io.read import image_stem

    stem = image_stem(path)
    if step.name_pattern:
        match = re.search(step.name_pattern, path.name)
        if match is None or not match.group(1):
            raise DataError(f"{path}: its name does not match {where}.name_pattern {step.name_pattern!r}")
        stem = match.group(1)
    return stem.replace(step.strip, "") if step.strip else stem


def transform(data: np.ndarray, step: Any, where: str, path: Path,
              reduce: Callable[[np.ndarray, int | None, str | None, str, Path], np.ndarray]) -> np.ndarray:
    """Crop, then the channel (`reduce`), grey, then the projection (`reduce`), on a (C, Z, Y, X) block."""
    for axis, (start, stop) in step.crop.items():
        size = data.shape[AXES[axis]]
        if stop > size:
            raise DataError(f"{path}: has {size} along {axis}, {where}.crop.{axis} asks for [{start}, {stop})")
        data = np.take(data, np.arange(start, stop), axis=AXES[axis])
    data = reduce(data, step.channel, None, where, path)
    if step.grey:
        if data.shape[0] != 3:
            raise DataError(f"{path}: has {data.shape[0]} channel(s); {where}.grey needs RGB (3)")
        grey = np.tensordot(GREY, data.astype(np.float64), axes=(0, 0))[None]
        data = np.clip(np.rint(grey), np.iinfo(data.dtype).min, np.iinfo(data.dtype).max).astype(data.dtype) \
            if np.issubdtype(data.dtype, np.integer) else grey.astype(np.float32)
    return reduce(data, None, step.project, where, path)


def files_with_ops(step: Any, paths: list[Path], out: Path, where: str,
                   read: Callable[[Path], np.ndarray], write: Callable[[Path, np.ndarray], Path],
                   reduce: Callable[..., np.ndarray]) -> int:
    """Write `paths` into `out/step.to` with the step's operations; returns the number of files written."""
    from ..io.read import IMAGE_SUFFIXES, image_stem, is_image
    from ..io.source import open_image

    groups: dict[str, list[Path]] = {}
    for path in paths:
        groups.setdefault(out_stem(step, path, where), []).append(path)
    if step.matching:
        folder = out / step.matching
        if not folder.is_dir():
            raise DataError(f"{where}.matching: {step.matching!r} was not written by an earlier step")
        have = {image_stem(p) for p in folder.iterdir() if is_image(p)}
        groups = {stem: group for stem, group in groups.items() if stem in have}
        if not groups:
            raise DataError(f"{where}.matching: no file is named like one in {step.matching!r}")
    written = 0
    for stem, group in groups.items():
        target = out / step.to / f"{stem}.tif"
        if step.combine == "labels":
            write(target, _labels(group, step, where, read, reduce))
            written += 1
            continue
        if len(group) > 1:
            raise DataError(f"{where}: {group[0].name} and {group[1].name} would both be written as {target.name} "
                            "(set name_pattern or strip differently, or combine: labels)")
        path = group[0]
        if not _changes_pixels(step) and path.name.lower().endswith(IMAGE_SUFFIXES):  # keep file and metadata
            shutil.copyfile(path, _copy_target(out / step.to, stem, path))
            written += 1
            continue
        if not step.timepoints:
            write(target, transform(read(path), step, where, path, reduce))
            written += 1
            continue
        with open_image(path) as source:
            for t in range(source.scene(0).T):
                block = np.asarray(source.read_block(t=t))
                write(out / step.to / f"{stem}_t{t:03d}.tif", transform(block, step, where, path, reduce))
                written += 1
    return written


def _changes_pixels(step: Any) -> bool:
    return bool(step.crop or step.grey or step.timepoints or step.combine or step.channel is not None or step.project)


def _copy_target(folder: Path, stem: str, path: Path) -> Path:
    from ..io.read import image_stem

    folder.mkdir(parents=True, exist_ok=True)
    return folder / (stem + path.name[len(image_stem(path)):])


def _labels(group: list[Path], step: Any, where: str, read: Callable[[Path], np.ndarray],
            reduce: Callable[..., np.ndarray]) -> np.ndarray:
    """One (1, Z, Y, X) uint16 label image from the object masks in `group` (later files win overlaps)."""
    if len(group) > np.iinfo(np.uint16).max:
        raise DataError(f"{where}.combine: {len(group)} objects do not fit uint16 labels")
    labels: np.ndarray | None = None
    for k, path in enumerate(sorted(group)):
        mask = transform(read(path), step, where, path, reduce)
        if labels is None:
            labels = np.zeros((1, *mask.shape[1:]), np.uint16)
        elif mask.shape[1:] != labels.shape[1:]:
            raise DataError(f"{path}: shape {mask.shape[1:]} differs from {sorted(group)[0].name}'s "
                            f"{labels.shape[1:]} ({where}.combine)")
        labels[0][(mask > 0).any(axis=0)] = k + 1
    assert labels is not None
    return labels


def dot_mask(img: np.ndarray, scaling: tuple[float, float], smooth_sigma: float, log_sigma: float,
             cutoff: float, min_size: int) -> np.ndarray:
    """0/1 uint8 mask of a (Z, Y, X) stack by the Allen Cell Structure Segmenter's 2D dot filter, as the
    MMV_Im2Im paper's FBL notebook called it (aicssegmentation.core): `intensity_normalization` with two
    scaling values, `image_smoothing_gaussian_3d`, `dot_slice_by_slice` > cutoff, then skimage's
    `remove_small_objects(min_size, connectivity=1)`. The same operations, including the clipping
    done in the image's own dtype (an integer stack's bounds are truncated, as in the original)."""
    from scipy import ndimage as ndi

    work = np.array(img, copy=True)
    m, s = float(work.mean()), float(work.std())  # scipy.stats.norm.fit: the mean and the ddof-0 std
    low, high = max(m - scaling[0] * s, work.min()), min(m + scaling[1] * s, work.max())
    work[work > high] = high
    work[work < low] = low
    if not low < high:
        raise ValueError(f"intensity normalization: {low} is not below {high}")
    norm = (work - low + 1e-8) / (high - low + 1e-8)
    smooth = ndi.gaussian_filter(norm, sigma=smooth_sigma, mode="nearest", truncate=3.0)
    response = np.zeros_like(smooth)
    for z in range(smooth.shape[0]):
        response[z] = -1 * (log_sigma ** 2) * ndi.gaussian_laplace(smooth[z], log_sigma)
    mask = response > cutoff
    labels, _ = ndi.label(mask, structure=ndi.generate_binary_structure(mask.ndim, 1))
    sizes = np.bincount(labels.ravel())
    small = sizes < min_size
    small[0] = False
    mask[small[labels]] = False
    return mask.astype(np.uint8)
