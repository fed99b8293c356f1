"""Settings of the EmbedSeg framework (instance segmentation by spatial embeddings, Lalit et al. 2021):
the `config.mmv_zoo.embedseg` block, the `embedseg` loss kind, the rules that span sections and the
framework's spec. Nothing here imports torch."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from .framework import Accepts, FrameworkSpec
from .strict import Strict


class EmbedSegLoss(Strict):
    """The spatial-embedding loss of EmbedSeg: a Lovász hinge per instance on the Gaussian of the
    pixels' embeddings around the instance centre, a sigma smoothness (variance) term and a
    seediness regression; its weights are in `config.mmv_zoo.embedseg`."""

    kind: Literal["embedseg"]


class EmbedSegSettings(Strict):
    """EmbedSeg: the network predicts per pixel an offset to its instance's centre (one channel per
    space axis, tanh), a clustering bandwidth sigma (`n_sigma` channels) and a seediness (sigmoid);
    prediction clusters the embeddings of the whole image around the seeds into label images."""

    n_sigma: int | None = Field(default=None, ge=1, le=3)
    """Sigma channels: 1 (one bandwidth for all axes) or one per space axis (the default)."""
    seed_threshold: float = Field(default=0.9, gt=0, lt=1)
    """Prediction: a pixel starts a new instance only if its seediness is at least this."""
    foreground_threshold: float = Field(default=0.5, gt=0, lt=1)
    """Prediction: pixels with a seediness below this are background."""
    min_size: int = Field(default=32, ge=1)
    """Prediction: instances of fewer pixels (voxels) are dropped."""
    centre: Literal["centroid", "medoid"] = "medoid"
    """Centre each instance's embeddings point to, computed per training patch: `centroid` (the mean
    position; may lie outside an object with a hole or of several parts) or `medoid` (the pixel of
    the object closest to all its others, with the axes' physical scale)."""
    instance_weight: float = Field(default=1.0, ge=0)
    """Weight of the Lovász-hinge instance term."""
    variance_weight: float = Field(default=10.0, ge=0)
    """Weight of the sigma smoothness term (sigma constant within an instance)."""
    seed_weight: float = Field(default=1.0, ge=0)
    """Weight of the seediness term."""
    foreground_weight: float = Field(default=1.0, gt=0)
    """Weight of instance pixels relative to background pixels in the seediness term."""
    foreground_sampling: bool = True
    """Training patches are centred on a random foreground pixel (so that small objects are seen);
    false: every patch at a uniformly random position."""
    background_share: float = Field(default=0.1, ge=0, le=1)
    """With foreground sampling: this share of the patches is drawn at uniformly random positions
    anyway, so that the background (debris, empty areas) is not starved."""
    max_val_seeds: int = Field(default=256, ge=1)
    """Validation metric (AP at IoU 0.5 of the clustered patches): at most this many seeds tried per
    patch, so that an untrained network's noisy seediness cannot stall validation."""

    def sigmas(self, spatial_dims: int) -> int:
        return self.n_sigma if self.n_sigma is not None else spatial_dims


def output_names(spatial_dims: int, n_sigma: int) -> list[str]:
    """Channel names of the network output: offsets per axis, sigma(s), seed."""
    axes = ["z", "y", "x"][3 - spatial_dims:]
    sig = ["sigma"] if n_sigma == 1 else [f"sigma_{a}" for a in axes]
    return [f"offset_{a}" for a in axes] + sig + ["seed"]


def embedseg_rules(entry: Any) -> None:
    """Rules of EmbedSeg that span sections (sigma and output channels, labels as they are); ValueError
    whose message starts with the field concerned. Task and loss are checked by `EmbedSegAccepts`."""
    mmv = entry.mmv
    dims = entry.spatial_dims
    es = mmv.framework_settings
    n_sigma = es.sigmas(dims)
    if n_sigma not in (1, dims):
        raise ValueError(f"config.mmv_zoo.embedseg.n_sigma: {n_sigma} sigma channels for {dims} space axes; "
                         f"use 1 (isotropic) or {dims} (one per axis)")
    names = output_names(dims, n_sigma)
    if entry.out_channels != len(names):
        raise ValueError(f"outputs[0].axes: embedseg with {dims} space axes and n_sigma {n_sigma} outputs "
                         f"{len(names)} channels, e.g. channel_names: [{', '.join(names)}]; the entry has "
                         f"{entry.out_channels}")
    if mmv.data.labels != "classes":
        raise ValueError("config.mmv_zoo.data.labels: instance labels are read as they are; remove "
                         "`labels: foreground` (it would merge every object into one)")
    if mmv.data.normalization.target.kind != "none":
        raise ValueError("config.mmv_zoo.data.normalization.target: instance labels are ids, use kind: none")


class EmbedSegAccepts(Accepts):
    task: Literal["instance"]
    loss: Literal["embedseg"]
    layout: Literal["paired_folders", "csv"]


EMBEDSEG = FrameworkSpec(
    kind="embedseg",
    model="mmv_zoo.frameworks.embedseg.framework:EmbedSeg",
    accepts=EmbedSegAccepts,
    settings=EmbedSegSettings,
    default_loss="embedseg",
    data_module="mmv_zoo.data.instances:InstanceDataModule",
    exclusion_masks=True,
    rules=embedseg_rules,
    description="Instance segmentation by spatial embeddings, 2D and 3D (Lalit et al. 2021).",
)
