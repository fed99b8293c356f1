"""The source normalizations of `normalize.py` in TorchScript-compilable torch, for a model that
normalizes its own input: a labels package takes the statistics of the image inside whatever padding
a consumer put around it (`region`), so every consumer gives the model the inputs `mmv-zoo predict`
gives it, whether and however it pads. Statistics in float64, linear percentiles and the population
standard deviation, as numpy (and BioImage.IO's `scale_range` and `zero_mean_unit_variance`) take them.
"""

from __future__ import annotations

import math
from typing import Any

import torch


def _percentile(v: torch.Tensor, q: float) -> torch.Tensor:
    """(C, N) -> (C,): the q-th percentile of each row, linearly interpolated (numpy's default)."""
    n = v.shape[1]
    s, _ = torch.sort(v, dim=1)
    pos = q / 100.0 * (n - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    t = pos - lo
    a, b = s[:, lo], s[:, hi]
    return a + (b - a) * t if t < 0.5 else b - (b - a) * (1.0 - t)


def normalize_region(x: torch.Tensor, region: list[list[int]], kind: str, lower: float = 1.0,
                     upper: float = 99.8, clip: bool = False, signed: bool = False, z_chunk: int = 32,
                     eps: float = 1e-6) -> torch.Tensor:
    """One image (C, *S) normalized per channel with the statistics of `region` ([start, stop) per
    space axis); `kind` and the rest as `config.mmv_zoo.data.normalization.source` says. float32."""
    inner = x
    for a in range(len(region)):
        inner = inner.narrow(1 + a, region[a][0], region[a][1] - region[a][0])
    if kind == "foreground":
        y = (x > 0).to(torch.float32)
        return y * 2.0 - 1.0 if signed else y
    if kind == "none":
        return x.to(torch.float32)
    if kind == "center":  # the z_chunk central planes of the first space axis (of a stack: z), as numpy
        nz = inner.shape[1]
        start = max(0, nz // 2 - z_chunk // 2)
        inner = inner.narrow(1, start, min(z_chunk, nz - start))
    v = inner.reshape(inner.shape[0], -1).to(torch.float64)
    if kind == "percentile":
        shift = _percentile(v, lower)
        div = _percentile(v, upper) - shift + eps
    else:  # standard, center
        shift = v.mean(dim=1)
        div = v.std(dim=1, unbiased=False) + eps
    view = [x.shape[0]] + [1] * (x.dim() - 1)
    y = ((x.to(torch.float64) - shift.view(view)) / div.view(view)).to(torch.float32)
    if kind == "percentile":
        if clip:
            y = y.clamp(0.0, 1.0)
        if signed:
            y = y * 2.0 - 1.0
    return y


def norm_arguments(settings: Any) -> dict[str, Any]:
    """`normalize_region`'s keyword arguments from a source normalization's settings."""
    return {"kind": settings.kind, "lower": float(getattr(settings, "lower", 1.0)),
            "upper": float(getattr(settings, "upper", 99.8)), "clip": bool(getattr(settings, "clip", False)),
            "signed": getattr(settings, "range", "0,1") == "-1,1", "z_chunk": int(getattr(settings, "z_chunk", 32))}
