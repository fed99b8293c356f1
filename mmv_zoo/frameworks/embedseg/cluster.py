"""Clustering spatial embeddings into instance labels (EmbedSeg's greedy seed clustering), vectorized
torch on any device (CPU, CUDA, MPS: no device-specific calls), and a plain-Python reference.

Among the foreground pixels (seediness >= `foreground_threshold`), the unclustered pixel with the
highest seediness is the next seed while it reaches `seed_threshold`; its embedding is the centre and
its sigma the bandwidth; every foreground pixel whose score exp(-sum (e - c)^2 exp(10 s)) exceeds 0.5
is its proposal. A proposal larger than `min_size` whose pixels are mostly unclustered becomes an
instance (later instances take the pixels they share); its pixels are then clustered. Stops when
fewer than `min_size` pixels are left unclustered or no seed is high enough.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .embedding import SIGMA_SCALE, coordinate_grid, entry_spacing

OVERLAP = 0.5
"""A proposal becomes an instance only if more than this share of its pixels is unclustered."""


def label_dtype(count: int) -> np.dtype:
    """uint16 up to 65535 instances, else uint32."""
    return np.dtype(np.uint16 if count < 2**16 else np.uint32)


def cluster(output: torch.Tensor, spacing: Sequence[float], n_sigma: int, seed_threshold: float = 0.9,
            foreground_threshold: float = 0.5, min_size: int = 32, max_seeds: int | None = None) -> torch.Tensor:
    """Instance ids (*S) int64 (0: background) from activated embeddings `output` (D + n_sigma + 1, *S)
    on any device. `max_seeds` bounds the seeds tried (None: no bound)."""
    shape = tuple(output.shape[1:])
    d = len(shape)
    labels = torch.zeros(shape, dtype=torch.long, device=output.device)
    seed_map = output[d + n_sigma]
    fg = seed_map >= foreground_threshold
    n = int(fg.sum())
    if n <= min_size:
        return labels
    grid = coordinate_grid(shape, spacing, output.device, output.dtype)
    emb = (output[:d] + grid)[:, fg]
    bandwidth = torch.exp(SIGMA_SCALE * output[d:d + n_sigma][:, fg])
    seeds = seed_map[fg]
    unclustered = torch.ones(n, dtype=torch.bool, device=output.device)
    ids = torch.zeros(n, dtype=torch.long, device=output.device)
    count, tried = 1, 0
    while int(unclustered.sum()) > min_size and (max_seeds is None or tried < max_seeds):
        scores = torch.where(unclustered, seeds, torch.zeros_like(seeds))
        i = int(torch.argmax(scores))
        if float(scores[i]) < seed_threshold:
            break
        tried += 1
        unclustered[i] = False
        score = torch.exp(-(((emb - emb[:, i:i + 1]) ** 2) * bandwidth[:, i:i + 1]).sum(0))
        proposal = score > 0.5
        size = int(proposal.sum())
        if size > min_size and int((unclustered & proposal).sum()) / size > OVERLAP:
            ids[proposal] = count
            count += 1
        unclustered &= ~proposal
    labels[fg] = ids
    return labels


def entry_labels(output: Any, entry: Any, seed_threshold: float | None = None, device: Any = "cpu") -> np.ndarray:
    """(1, *S) uint16/uint32 instance labels from one image's activated embeddings (K, *S), clustered
    with the entry's `embedseg` settings (`seed_threshold`, when given, replaces the entry's); what
    `mmv-zoo predict` writes for a run, an entry with weights or a package of ours."""
    return settings_labels(output, entry.mmv.embedseg, entry_spacing(entry), seed_threshold, device)


def settings_labels(output: Any, settings: Any, spacing: Sequence[float], seed_threshold: float | None = None,
                    device: Any = "cpu") -> np.ndarray:
    """`entry_labels` with the `embedseg` settings and coordinate spacing given directly (a package's
    rdf config and axes)."""
    y = torch.from_numpy(np.ascontiguousarray(output, np.float32)).to(device)
    ids = cluster(y, spacing, settings.sigmas(len(spacing)), seed_threshold or settings.seed_threshold,
                  settings.foreground_threshold, settings.min_size).cpu().numpy()
    return ids[None].astype(label_dtype(int(ids.max(initial=0))))


def cluster_reference(output: np.ndarray, spacing: Sequence[float], n_sigma: int, seed_threshold: float = 0.9,
                      foreground_threshold: float = 0.5, min_size: int = 32) -> np.ndarray:
    """The same clustering written as loops over pixels in plain Python (slow; for tests)."""
    shape = output.shape[1:]
    d = len(shape)
    pixels = [p for p in np.ndindex(*shape) if output[(d + n_sigma, *p)] >= foreground_threshold]
    labels = np.zeros(shape, np.int64)
    if len(pixels) <= min_size:
        return labels
    emb = [[float(output[(a, *p)]) + p[a] * spacing[a] for a in range(d)] for p in pixels]
    bw = [[math.exp(SIGMA_SCALE * float(output[(d + j, *p)])) for j in range(n_sigma)] for p in pixels]
    seeds = [float(output[(d + n_sigma, *p)]) for p in pixels]
    unclustered = [True] * len(pixels)
    ids = [0] * len(pixels)
    count = 1
    while sum(unclustered) > min_size:
        best, i = -1.0, -1
        for j, (s, u) in enumerate(zip(seeds, unclustered, strict=True)):
            if u and s > best:
                best, i = s, j
        if best < seed_threshold:
            break
        unclustered[i] = False
        proposal = []
        for j in range(len(pixels)):
            dist = sum((emb[j][a] - emb[i][a]) ** 2 * bw[i][a if n_sigma > 1 else 0] for a in range(d))
            if math.exp(-dist) > 0.5:
                proposal.append(j)
        if len(proposal) > min_size and sum(unclustered[j] for j in proposal) / len(proposal) > OVERLAP:
            for j in proposal:
                ids[j] = count
            count += 1
        for j in proposal:
            unclustered[j] = False
    for p, k in zip(pixels, ids, strict=True):
        labels[p] = k
    return labels
