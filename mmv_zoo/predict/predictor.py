"""What file prediction asks of a predictor (a run, a zoo entry's package, anyone's package).

A predictor takes (C, [Z], Y, X) images in the input's raw units and returns its output with channel
names. One that `streams` reads and writes tile by tile (`predict(x, out=..., stats=...)` with a lazy
tile source `x`), so a frame larger than memory never exists whole; one that does not takes whole
frames (`__call__`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


class Predictor:
    """Base of every predictor; subclasses set `spatial_dims`, `in_channels` and implement `__call__`
    (and, when they stream, `predict`)."""

    spatial_dims: int
    in_channels: int
    task: str | None = None
    """segmentation, regression or instance where the model says (None: not known, e.g. a foreign package)."""
    streams: bool = False
    """Reads and writes tile by tile through `predict` (else whole frames through `__call__`)."""

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """(C, [Z], Y, X) image -> (K, [Z], Y, X) output and its K channel names."""
        raise NotImplementedError

    def predict(self, x: Any, out: Any = None, stats: Any = None,
                on_tile: Callable[[int, int], None] | None = None) -> tuple[Any, list[str]]:
        """Streaming predictors: a lazy (C, [Z], Y, X) source `x` -> the output written into `out` (an
        array, or a callable `(channels, dtype)` making one), normalized with the statistics of
        `stats` (an array or a callable returning one)."""
        raise NotImplementedError(f"{type(self).__name__} does not stream")

    def output_names(self) -> list[str]:
        """The output's channel names (known before predicting)."""
        raise NotImplementedError

    def companion_names(self) -> dict[str, list[str]]:
        """Outputs written beside the prediction (e.g. an uncertainty map): file-name suffix -> channel
        names. Only whole-frame predictors have them."""
        return {}

    def with_companions(self, x: np.ndarray) -> tuple[np.ndarray, list[str], dict[str, tuple[np.ndarray, list[str]]]]:
        """`__call__`, and the companions of the same frame: suffix -> ((K', [Z], Y, X), channel names)."""
        y, names = self(x)
        return y, names, {}

    @property
    def out_channels(self) -> int:
        return len(self.output_names())

    def pixel_sizes(self, from_file: dict[str, float | None]) -> dict[str, float | None]:
        """The output's physical pixel sizes: the input file's (z dropped for 2D models)."""
        sizes = dict(from_file)
        if self.spatial_dims == 2:
            sizes["z"] = None
        return sizes
