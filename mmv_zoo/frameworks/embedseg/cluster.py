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
from torch import nn

from ...transforms.torch_normalize import normalize_region
from .embedding import SIGMA_SCALE, coordinate_grid, entry_spacing

OVERLAP = 0.5
"""A proposal becomes an instance only if more than this share of its pixels is unclustered."""
UINT16_LABELS = 2**16 - 1
"""The most instances a uint16 label image holds (a label package refuses more)."""


def label_dtype(count: int) -> np.dtype:
    """uint16 up to 65535 instances, else uint32."""
    return np.dtype(np.uint16 if count < 2**16 else np.uint32)


def cluster(output: torch.Tensor, spacing: list[float], n_sigma: int, seed_threshold: float = 0.9,
            foreground_threshold: float = 0.5, min_size: int = 32, max_seeds: int | None = None,
            max_labels: int | None = None, sigma_scale: float = SIGMA_SCALE, overlap: float = OVERLAP) -> torch.Tensor:
    """Instance ids (*S) int64 (0: background) from activated embeddings `output` (D + n_sigma + 1, *S)
    on any device. `max_seeds` bounds the seeds tried (None: no bound); more than `max_labels`
    instances raise a RuntimeError (None: no bound). The constants are arguments with their
    module values as defaults, since TorchScript reads no module globals. TorchScript-compilable: the label packages run
    this very function inside their model (`LabelModel`)."""
    shape = output.shape[1:]
    d = len(shape)
    labels = torch.zeros(shape, dtype=torch.long, device=output.device)
    seed_map = output[d + n_sigma]
    fg = seed_map >= foreground_threshold
    n = int(fg.sum())
    if n <= min_size:
        return labels
    grid = coordinate_grid(shape, spacing, output.device, output.dtype)
    emb = (output[:d] + grid)[:, fg]
    bandwidth = torch.exp(sigma_scale * output[d:d + n_sigma][:, fg])
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
        if size > min_size and int((unclustered & proposal).sum()) / size > overlap:
            if max_labels is not None and count > max_labels:
                raise RuntimeError(f"more than {max_labels} instances, more than these labels can hold; "
                                   "mmv-zoo predict writes uint32 labels for such images")
            ids[proposal] = count
            count += 1
        unclustered &= ~proposal
    labels[fg] = ids
    return labels


def padded_side(x: torch.Tensor, dim: int, halo: int, low: bool) -> bool:
    """Whether the `halo` outermost pixels of `x` along `dim` (the low or the high side) are padding of
    the pixels next to them: their mirror (symmetric or reflect), the edge pixel repeated, or one
    constant -- what consumers pad an image with. Real neighbouring image data is none of these."""
    n = x.shape[dim]
    if low:
        strip = x.narrow(dim, 0, halo)
        symmetric = x.narrow(dim, halo, halo).flip([dim])
        reflect = x.narrow(dim, halo + 1, halo).flip([dim])
        edge = x.narrow(dim, halo, 1)
    else:
        strip = x.narrow(dim, n - halo, halo)
        symmetric = x.narrow(dim, n - 2 * halo, halo).flip([dim])
        reflect = x.narrow(dim, n - 2 * halo - 1, halo).flip([dim])
        edge = x.narrow(dim, n - halo - 1, 1)
    if torch.equal(strip, symmetric) or torch.equal(strip, reflect) or torch.equal(strip, edge.expand_as(strip)):
        return True
    return bool((strip == strip.flatten()[0]).all())


def image_region(x: torch.Tensor, halo: list[int]) -> list[list[int]]:
    """[start, stop) per space axis of one input (C, *S): what lies inside the padding a consumer put
    around the image. A side is cut by the halo where those pixels are padding (`padded_side`), kept
    where they are not (an image given as it is, or a tile's real neighbourhood)."""
    region: list[list[int]] = []
    for a in range(len(halo)):
        n, h = x.shape[1 + a], halo[a]
        start, stop = 0, n
        if h > 0 and n > 2 * h + 1:
            if padded_side(x, 1 + a, h, True):
                start = h
            if padded_side(x, 1 + a, h, False):
                stop = n - h
        region.append([start, stop])
    return region


class LabelModel(nn.Module):
    """An embedding network and the clustering in one module, for TorchScript: (B, C, *S) input ->
    (B, 1, *S) int32 instance labels (0: background), each image clustered whole with fixed settings.
    What an instance package's weights run, so that any consumer gets labels, not embeddings.

    `halo` (pixels per space axis) is the context a consumer pads around the image and crops from the
    output (the package's output halo). Where an input's outer `halo` pixels are padding (mirrored,
    repeated or constant: `image_region`), only the embeddings inside are clustered, as `mmv-zoo predict`
    clusters only the image's, so objects of the padding never leave fragments in the image, and the
    padding is labelled 0; an image given without padding (bioimageio.core 0.9.6 predicts whole images
    so) is clustered to its edge. With `norm` (`normalize_region`'s arguments) the module takes raw
    images and normalizes them itself with the statistics of that same region, the image's, whatever
    padding a consumer added. More than `max_labels` instances in an image raise a RuntimeError
    saying so (the package's labels are uint16; `mmv-zoo predict` on the run or on an embeddings
    package writes uint32 then)."""

    def __init__(self, net: nn.Module, spacing: Sequence[float], n_sigma: int, seed_threshold: float,
                 foreground_threshold: float, min_size: int, halo: Sequence[int] | None = None,
                 max_labels: int = UINT16_LABELS, norm: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.net = net
        norm = norm or {"kind": "none"}
        self.norm_kind = str(norm["kind"])
        self.norm_lower, self.norm_upper = float(norm.get("lower", 1.0)), float(norm.get("upper", 99.8))
        self.norm_clip, self.norm_signed = bool(norm.get("clip", False)), bool(norm.get("signed", False))
        self.norm_z_chunk = int(norm.get("z_chunk", 32))
        self.spacing = [float(s) for s in spacing]
        self.halo = [int(h) for h in halo] if halo is not None else [0] * len(self.spacing)
        self.n_sigma, self.min_size, self.max_labels = int(n_sigma), int(min_size), int(max_labels)
        self.seed_threshold, self.foreground_threshold = float(seed_threshold), float(foreground_threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros([x.shape[0], 1] + x.shape[2:], dtype=torch.int32, device=x.device)
        for b in range(x.shape[0]):
            region = image_region(x[b], self.halo)
            xb = normalize_region(x[b], region, self.norm_kind, self.norm_lower, self.norm_upper, self.norm_clip,
                                  self.norm_signed, self.norm_z_chunk)
            inner, core = self.net(xb.unsqueeze(0))[0], out[b, 0]
            for a in range(len(region)):
                start, stop = region[a][0], region[a][1]
                inner = inner.narrow(1 + a, start, stop - start)
                core = core.narrow(a, start, stop - start)
            labels = cluster(inner, self.spacing, self.n_sigma, self.seed_threshold, self.foreground_threshold,
                             self.min_size, None, self.max_labels)
            core.copy_(labels.to(torch.int32))
        return out


def label_module(net: nn.Module, settings: Any, spacing: Sequence[float], halo: Sequence[int], example: torch.Tensor,
                 max_labels: int = UINT16_LABELS, norm: dict[str, Any] | None = None) -> torch.jit.ScriptModule:
    """`LabelModel` as one TorchScript module: `net` traced on `example` (a normalized input), the
    clustering (with the entry's `embedseg` settings) and, with `norm`, the normalization compiled
    around it."""
    traced = torch.jit.trace(net.eval(), example, check_trace=False)
    model = LabelModel(traced, spacing, settings.sigmas(len(spacing)), settings.seed_threshold,
                       settings.foreground_threshold, settings.min_size, halo, max_labels, norm)
    return torch.jit.script(model.eval())


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
