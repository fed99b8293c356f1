"""The in-model normalization of labels packages (`transforms/torch_normalize.py`) computes what
mmv_zoo's numpy normalization computes, compiled by TorchScript, with the statistics of a region."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmv_zoo.settings.data import CenterNorm, ForegroundNorm, NoNorm, PercentileNorm, StandardNorm
from mmv_zoo.transforms.normalize import normalize, normalizer
from mmv_zoo.transforms.torch_normalize import norm_arguments, normalize_region

SETTINGS = [
    PercentileNorm(kind="percentile"),
    PercentileNorm(kind="percentile", lower=3.0, upper=97.5, clip=True, range="-1,1"),
    StandardNorm(kind="standard"),
    CenterNorm(kind="center", z_chunk=4),
    ForegroundNorm(kind="foreground", range="-1,1"),
    NoNorm(kind="none"),
]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: f"{s.kind}")
@pytest.mark.parametrize("shape", [(2, 37, 41), (1, 9, 20, 23)], ids=["2d", "3d"])
def test_same_as_numpy_normalization(settings, shape):
    rng = np.random.default_rng(0)
    x = (rng.gamma(2.0, 300.0, shape) * (rng.random(shape) > 0.2)).astype(np.float32)
    whole = [[0, n] for n in shape[1:]]
    scripted = torch.jit.script(normalize_region)
    got = scripted(torch.from_numpy(x), whole, **norm_arguments(settings)).numpy()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, normalize(x, settings), rtol=1e-5, atol=1e-5)


def test_statistics_come_from_the_region():
    """A padded image normalized with its inner region's statistics equals the image normalized, padded."""
    rng = np.random.default_rng(1)
    x = rng.gamma(2.0, 300.0, (1, 30, 40)).astype(np.float32)
    padded = np.pad(x, [(0, 0), (5, 5), (7, 7)], mode="symmetric")
    settings = PercentileNorm(kind="percentile")
    got = normalize_region(torch.from_numpy(padded), [[5, 35], [7, 47]], **norm_arguments(settings)).numpy()
    np.testing.assert_allclose(got, np.pad(normalize(x, settings), [(0, 0), (5, 5), (7, 7)], mode="symmetric"),
                               rtol=1e-5, atol=1e-5)
    other = normalizer(padded, settings)(padded)  # statistics of the padded image: not the same
    assert np.abs(other - got).max() > 1e-3
