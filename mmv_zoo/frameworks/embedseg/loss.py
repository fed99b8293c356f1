"""The spatial-embedding loss of EmbedSeg (Neven et al. CVPR 2019; Lalit et al. MIDL 2021), 2D and 3D.

For each instance k with centre c_k and mean sigma s_k, every pixel i gets the score
phi_k(i) = exp(-sum_a (e_ia - c_ka)^2 * exp(10 s_ka)) of its embedding e_i = position + offset. The
loss has three terms:

- instance: the Lovász hinge (Berman et al. 2018), a convex surrogate of 1 - IoU, between phi_k
  (as 2 phi - 1) and the instance mask, averaged over instances;
- variance: sigma should be constant within an instance (mean squared deviation from s_k, which
  is detached);
- seed: the seediness regresses phi_k (detached) on instance pixels and 0 on background, summed
  and divided by the number of pixels in the loss.

Pixels under the exclusion mask take part in no term (their outputs receive no gradient), and
labels there are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F  # noqa: N812

from .embedding import SIGMA_SCALE, coordinate_grid


def lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss w.r.t. errors sorted descending, along the
    last axis (one row per instance)."""
    gts = gt_sorted.sum(-1, keepdim=True)
    intersection = gts - gt_sorted.cumsum(-1)
    union = gts + (1 - gt_sorted).cumsum(-1)
    jaccard = 1.0 - intersection / union
    if gt_sorted.shape[-1] > 1:
        jaccard = torch.cat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], -1)
    return jaccard


def lovasz_hinge(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary Lovász hinge of `logits` (any real) against 0/1 `labels`, along the last axis: one value
    per row (a scalar for flat inputs)."""
    if logits.shape[-1] == 0:
        return logits.sum(-1) * 0.0
    labels = labels.to(logits.dtype)
    errors = 1.0 - logits * (2.0 * labels - 1.0)
    errors_sorted, perm = torch.sort(errors, dim=-1, descending=True)
    return (F.relu(errors_sorted) * lovasz_grad(torch.gather(labels, -1, perm))).sum(-1)


@dataclass
class LossWeights:
    instance: float = 1.0
    variance: float = 10.0
    seed: float = 1.0
    foreground: float = 1.0


def spatial_embedding_loss(output: torch.Tensor, labels: torch.Tensor, centres: torch.Tensor | None,
                           exclusion: torch.Tensor | None, spacing: Sequence[float], n_sigma: int,
                           weights: LossWeights | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(loss, its terms) for activated embeddings `output` (B, D + n_sigma + 1, *S) and instance ids
    `labels` (B, 1, *S). `centres` (B, 1, *S) holds each instance's id at its centre pixel (an
    instance without one is centred at the mean position of its pixels); `exclusion` (B, 1, *S) is
    non-zero where pixels are left out of the loss."""
    w = weights or LossWeights()
    b, _, *shape = output.shape
    d = len(shape)
    grid = coordinate_grid(shape, spacing, output.device, output.dtype).reshape(d, -1)
    zero = output.sum() * 0.0
    totals = {"instance": zero, "variance": zero, "seed": zero}
    for i in range(b):
        out = output[i].reshape(output.shape[1], -1)
        lab = labels[i, 0].reshape(-1).long()
        valid = torch.ones_like(lab, dtype=torch.bool) if exclusion is None else exclusion[i, 0].reshape(-1) == 0
        cen = None if centres is None else centres[i, 0].reshape(-1).long()
        idx = torch.nonzero(valid).flatten()
        emb = out[:d, idx] + grid[:, idx]
        sigma = out[d:d + n_sigma, idx]
        seed = out[d + n_sigma, idx]
        lab_v = lab[idx]
        seed_loss = (seed[lab_v == 0] ** 2).sum()
        ids = torch.unique(lab_v)
        ids = ids[ids != 0]
        inst, var = zero, zero
        if len(ids):  # all instances of the image at once: (K, pixels)
            masks = lab_v[None] == ids[:, None]
            counts = masks.sum(1, keepdim=True).to(output.dtype)
            centre = (grid[:, idx] @ masks.T.to(output.dtype)) / counts.T  # (D, K) centroids
            if cen is not None:  # the centre pixel each instance has in `centres`
                at = torch.nonzero(cen[None] == ids[:, None])
                first = torch.full((len(ids),), -1, dtype=torch.long, device=output.device)
                first.scatter_reduce_(0, at[:, 0], at[:, 1], "amin", include_self=False)
                has = first >= 0
                centre[:, has] = grid[:, first[has]]
            w_mask = masks.to(output.dtype)
            s_mean = (sigma @ w_mask.T) / counts.T  # (n_sigma, K)
            var = ((((sigma[:, None, :] - s_mean.detach()[:, :, None]) ** 2) * w_mask[None]).sum(-1)
                   / counts.T).mean(0).sum()
            bandwidth = torch.exp(SIGMA_SCALE * s_mean)  # (n_sigma, K)
            dist = ((emb[:, None, :] - centre[:, :, None]) ** 2 * bandwidth[:, :, None]).sum(0)
            phi = torch.exp(-dist)  # (K, pixels)
            inst = lovasz_hinge(2 * phi - 1, masks).sum()
            seed_loss = seed_loss + w.foreground * (((seed[None] - phi.detach()) ** 2) * w_mask).sum()
        n = max(len(ids), 1)
        totals["instance"] = totals["instance"] + inst / n
        totals["variance"] = totals["variance"] + var / n
        totals["seed"] = totals["seed"] + seed_loss / max(int(idx.numel()), 1)
    terms = {k: v / b for k, v in totals.items()}
    loss = w.instance * terms["instance"] + w.variance * terms["variance"] + w.seed * terms["seed"]
    return loss, terms
