"""EmbedSeg: instance segmentation by spatial embeddings (Lalit, Tomancak, Jug, MIDL 2021, after Neven
et al. CVPR 2019), 2D and 3D, with any registered network as backbone.

The network (BranchedERFNet as in the original, or any other with D + n_sigma + 1 outputs: UNet,
DynUNet, ...) predicts per pixel an offset to its instance's centre, a bandwidth sigma and a
seediness (`instances.embedding`); the loss is `instances.loss`; prediction clusters the blended
embeddings of the whole image (`instances.cluster`), so objects crossing tile borders stay whole,
and writes uint16 (uint32 beyond 65535 objects) label images. Voxel anisotropy comes from the
entry's axes `scale`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ...metrics import average_precision
from ...nets.factory import build_network
from ..base import Framework
from .cluster import cluster, entry_labels
from .embedding import EmbeddingModel, entry_spacing
from .loss import LossWeights, spatial_embedding_loss


class EmbedSeg(Framework):
    """Backbone + embedding head; logs `train_loss` (and its terms), `val_loss` and `val_metric` (the
    mean AP at IoU 0.5 of the clustered validation patches)."""

    metric_name = "val AP50 (patches)"

    def __init__(self, entry: dict[str, Any], slug: str | None = None) -> None:
        super().__init__(entry, slug)
        e = self.entry
        self.dims = e.spatial_dims
        self.n_sigma = self.settings.sigmas(self.dims)
        self.spacing = entry_spacing(e)
        s = self.settings
        self.weights = LossWeights(s.instance_weight, s.variance_weight, s.seed_weight, s.foreground_weight)
        net = build_network(e.mmv.network, self.dims, e.in_channels, e.out_channels)
        self.model = EmbeddingModel(net, self.dims, self.n_sigma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def inference_model(self) -> EmbeddingModel:
        return self.model

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss of activated embeddings against a (B, 3, ...) target: ids, centres, exclusion."""
        return spatial_embedding_loss(out, target[:, 0:1], target[:, 1:2], target[:, 2:3], self.spacing,
                                      self.n_sigma, self.weights)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss, terms = self.loss(self(x), y)
        n = x.shape[0]
        self.log("train_loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=n)
        for k, v in terms.items():
            self.log(f"train_{k}", v, on_step=False, on_epoch=True, batch_size=n)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        out = self(x)
        loss, _ = self.loss(out, y)
        aps = []
        for i in range(x.shape[0]):
            pred = self.cluster(out[i], max_seeds=self.settings.max_val_seeds).cpu().numpy()
            truth = y[i, 0].cpu().numpy() * (y[i, 2].cpu().numpy() == 0)
            pred = pred * (y[i, 2].cpu().numpy() == 0)
            aps.append(average_precision(pred, truth, 0.5))
        self.log("val_loss", loss, prog_bar=True, batch_size=x.shape[0])
        self.log("val_metric", float(np.mean(aps)), prog_bar=True, batch_size=x.shape[0])

    # ------------------------------------------------------------ prediction

    def cluster(self, output: torch.Tensor, seed_threshold: float | None = None,
                max_seeds: int | None = None) -> torch.Tensor:
        """Instance ids (*S) from one image's activated embeddings (K, *S), on their device."""
        s = self.settings
        return cluster(output, self.spacing, self.n_sigma, seed_threshold or s.seed_threshold,
                       s.foreground_threshold, s.min_size, max_seeds)

    def postprocess(self, options: Any) -> tuple[Callable[[np.ndarray], np.ndarray], list[str]]:
        """Tiles keep the raw embedding channels; the labels come from `finalize` on the whole image
        (with `--probabilities`: the embeddings themselves are written)."""
        names = list(self.entry.outputs[0].channel_names) if options.probabilities else ["labels"]
        return (lambda y: y.astype(np.float32)), names

    def finalize(self, options: Any) -> Callable[[np.ndarray], np.ndarray] | None:
        """Whole image (K, *S) embeddings -> (1, *S) uint16/uint32 labels; `options.threshold`, when
        given, replaces the seed threshold. None with `options.probabilities` (raw output)."""
        if options.probabilities:
            return None
        device = next(self.model.parameters()).device
        return lambda y: entry_labels(y, self.entry, options.threshold, device)
