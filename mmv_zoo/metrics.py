"""Segmentation and regression scores on numpy arrays."""

from __future__ import annotations

import numpy as np


def foreground_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """F1 (Dice) and IoU of the foreground (any non-zero value) of two label images."""
    p, t = np.asarray(pred) > 0, np.asarray(truth) > 0
    if p.shape != t.shape:
        raise ValueError(f"shapes differ: prediction {p.shape}, truth {t.shape}")
    tp = float(np.logical_and(p, t).sum())
    denom = float(p.sum() + t.sum())
    union = float(np.logical_or(p, t).sum())
    return {"f1": 2 * tp / denom if denom else 1.0, "iou": tp / union if union else 1.0}


def otsu_foreground(image: np.ndarray) -> np.ndarray:
    """The classical baseline: foreground above Otsu's threshold."""
    from skimage.filters import threshold_otsu

    return np.asarray(image) > threshold_otsu(np.asarray(image))
