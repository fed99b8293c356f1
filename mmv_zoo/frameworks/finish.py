"""The task's default post-processing of network outputs, without a trained framework at hand: what a
zoo entry's package, a run and the napari plugin share (kept free of Lightning so that predicting with
a package imports only torch)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Finish = Callable[[np.ndarray], np.ndarray]
"""Post-processing of a (K, [Z], Y, X) network output (one tile's kept core, or the whole image)."""


def task_postprocess(task: str, channel_names: list[str], options: Any) -> tuple[Finish, list[str]]:
    """The task's default post-processing of network outputs and the output channel names:
    segmentation -> labels (argmax, or thresholded; `options.probabilities` keeps the probabilities),
    regression -> values as predicted (a 0/1 mask of values above `options.threshold`, BioImage.IO's
    binarize rule, so a mask package's output stays as it is)."""
    t = options.threshold
    if task == "segmentation" and not options.probabilities:
        def labels(y: np.ndarray) -> np.ndarray:
            dtype = np.uint8 if y.shape[0] < 256 else np.uint16
            if t is not None and y.shape[0] == 2:
                return (y[1:2] >= t).astype(dtype)
            lab = y.argmax(0)[None]
            if t is not None:
                lab[y.max(0)[None] < t] = 0
            return lab.astype(dtype)
        return labels, ["labels"]
    if task == "regression" and t is not None:
        return (lambda y: (y > t).astype(np.uint8)), ["labels"]
    return (lambda y: y.astype(np.float32)), list(channel_names)
