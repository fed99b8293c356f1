"""Intensity normalizations, per image and channel, on numpy arrays (C, [Z], Y, X).

`percentile` and `standard` compute exactly what BioImage.IO's `scale_range` and
`zero_mean_unit_variance` preprocessing compute (same eps, linear percentiles), so an exported
package reproduces training-time inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .stain import macenko_normalizer

EPS = 1e-6


def _spatial_axes(x: np.ndarray) -> tuple[int, ...]:
    return tuple(range(1, x.ndim))


def percentile(x: np.ndarray, lower: float, upper: float, range_: str = "0,1", clip: bool = False) -> np.ndarray:
    axes = _spatial_axes(x)
    lo = np.percentile(x, lower, axis=axes, keepdims=True)
    hi = np.percentile(x, upper, axis=axes, keepdims=True)
    y = (x - lo) / (hi - lo + EPS)
    if clip:
        y = np.clip(y, 0, 1)
    if range_ == "-1,1":
        y = y * 2.0 - 1.0
    return y


def standard(x: np.ndarray) -> np.ndarray:
    axes = _spatial_axes(x)
    return (x - x.mean(axis=axes, keepdims=True)) / (x.std(axis=axes, keepdims=True) + EPS)


def center(x: np.ndarray, z_chunk: int) -> np.ndarray:
    """Zero mean, unit variance with statistics from the `z_chunk` central slices (x is C, Z, Y, X)."""
    nz = x.shape[1]
    start = max(0, nz // 2 - z_chunk // 2)
    mid = x[:, start : start + z_chunk]
    axes = _spatial_axes(x)
    return (x - mid.mean(axis=axes, keepdims=True)) / (mid.std(axis=axes, keepdims=True) + EPS)


def normalizer(x: np.ndarray, settings: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Statistics from `x` (C, [Z], Y, X) -> a function normalizing any block of the same image the
    way `normalize` normalizes the whole (tiles of one image share the image's statistics)."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer):  # integer images: statistics without a float64 copy (same values)
        x = x.astype(np.float64)
    kind = settings.kind
    axes = _spatial_axes(x)
    if kind == "percentile":
        lo = np.percentile(x, settings.lower, axis=axes, keepdims=True)
        hi = np.percentile(x, settings.upper, axis=axes, keepdims=True)
        div, shift = hi - lo + EPS, lo
    elif kind == "standard":
        div, shift = x.std(axis=axes, keepdims=True, dtype=np.float64) + EPS, x.mean(axis=axes, keepdims=True,
                                                                                   dtype=np.float64)
    elif kind == "center":
        nz = x.shape[1]
        start = max(0, nz // 2 - settings.z_chunk // 2)
        mid = x[:, start : start + settings.z_chunk]
        div = mid.std(axis=axes, keepdims=True, dtype=np.float64) + EPS
        shift = mid.mean(axis=axes, keepdims=True, dtype=np.float64)
    elif kind in ("foreground", "none"):
        div = shift = None
    elif kind == "macenko":  # the stains of this image (a stain matrix and concentration maxima)

        stains = macenko_normalizer(x, settings)

        def apply_macenko(block: np.ndarray) -> np.ndarray:
            y = stains(block) / stains.white
            return (y * 2.0 - 1.0 if settings.range == "-1,1" else y).astype(np.float32)

        return apply_macenko
    else:  # pragma: no cover - the schema rejects other kinds
        raise ValueError(f"unknown normalization {kind!r}")

    def apply(block: np.ndarray) -> np.ndarray:
        b = np.asarray(block, dtype=np.float64)
        if kind == "foreground":
            y = (b > 0).astype(np.float64)
        elif kind == "none":
            y = b
        else:
            y = (b - shift) / div
        if kind == "percentile" and settings.clip:
            y = np.clip(y, 0, 1)
        if kind in ("percentile", "foreground") and settings.range == "-1,1":
            y = y * 2.0 - 1.0
        return y.astype(np.float32)

    return apply


def normalize(x: np.ndarray, settings: Any) -> np.ndarray:
    """Apply the normalization an entry declares; returns float32."""
    return normalizer(x, settings)(x)


def mask_cutoff(task: str | None, target_norm: Any) -> float | None:
    """The cut-off between background and foreground when a model's output is a mask domain: a
    regression model (a GAN) whose targets are normalized as `foreground` (unsupervised segmentation,
    image -> mask) — the middle of the mask's two values. None for any other output."""
    if task != "regression" or target_norm is None or getattr(target_norm, "kind", None) != "foreground":
        return None
    return 0.0 if target_norm.range == "-1,1" else 0.5
