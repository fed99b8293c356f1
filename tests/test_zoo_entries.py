"""Every zoo entry — every folder of mmv_zoo/zoo with an rdf.yaml, collected at import time so new
entries are tested without touching this file — validates, builds its network at its declared size
and trains for two batches through `mmv_zoo.training.train.train` (what `mmv-zoo train` runs) on tiny
synthetic data of its own layout and axes (`mmv_zoo.testing`)."""

from __future__ import annotations

import csv
import json
import math

import pytest
import pytorch_lightning as pl
import torch

from mmv_zoo.entry import bundled_entries, load_entry
from mmv_zoo.testing import GAN, tiny_data, tiny_overrides

ENTRIES = bundled_entries()
STEPS = 2
"""Training batches per entry (a GAN batch steps the generator and the discriminator optimizer)."""
FULL_FORWARD_VOXELS = 16 * 64 * 64
"""Largest patch the full-size network runs on here: the 3D networks at 32 x 128 x 128 take 4-6 s
each on one core (fnet depth 4, DynUNet), so larger patches are checked at the network's second
smallest valid size (at least 16) per axis: every level, 2 pixels at the bottom (instance norm needs
more than one), the declared widths."""
XFAIL: dict[str, str] = {}
"""Entries that cannot train tiny, with the reason (none at present)."""


def _xfail(name: str) -> None:
    if name in XFAIL:
        pytest.xfail(XFAIL[name])


def test_the_zoo_is_collected():
    assert len(ENTRIES) >= 12 and "nuclei_semseg_2d" in ENTRIES


@pytest.mark.parametrize("name", ENTRIES)
def test_entry_builds_at_declared_size(name):
    """Valid; the framework (network, discriminators) builds as declared; the network maps a patch
    of the inputs' channels to the outputs' channels at the same size."""
    from mmv_zoo.nets.factory import build_network
    from mmv_zoo.registry import framework_class

    entry = load_entry(name)
    mmv, dims = entry.mmv, entry.spatial_dims
    model = framework_class(mmv.framework)(entry.model_dump(mode="json"), slug=name)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) > 0
    net = build_network(mmv.network, dims, entry.in_channels, entry.out_channels).eval()
    patch = list(mmv.data.patch)
    if math.prod(patch) > FULL_FORWARD_VOXELS:
        patch = [min(p, rule.fit(max(16, 2 * rule.min))) for p, rule in zip(patch, mmv.network.size_rule(dims),
                                                                             strict=True)]
    with torch.no_grad():
        out = net(torch.rand(1, entry.in_channels, *patch))
    assert tuple(out.shape) == (1, entry.out_channels, *patch)
    assert torch.isfinite(out).all()


class _Recorder(pl.Callback):
    """Training batches seen, and each optimizer's parameters (state_dict names) with their values at
    the start of training."""

    def __init__(self) -> None:
        self.batches = 0
        self.start: dict[str, torch.Tensor] = {}
        self.optimizer_params: list[list[str]] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        names = {id(p): n for n, p in pl_module.named_parameters()}
        self.optimizer_params = [[names[id(p)] for g in opt.param_groups for p in g["params"]]
                                 for opt in trainer.optimizers]

    def on_train_batch_end(self, *args, **kwargs) -> None:
        self.batches += 1


@pytest.mark.parametrize("name", ENTRIES)
def test_entry_trains_two_steps(name, tmp_path):
    """Two batches on tiny data in the entry's layout: the run completes, its last checkpoint is at
    step 2 (4 for a GAN's two optimizers), every optimizer changed its weights, losses are finite."""
    from mmv_zoo.training.train import train

    _xfail(name)
    entry = load_entry(name, tiny_overrides(load_entry(name), steps=STEPS))
    data, _ = tiny_data(entry, tmp_path / "data")
    recorder = _Recorder()
    result = train(entry, data, tmp_path / "runs", progress=False, callbacks=[recorder])

    steps = STEPS * (2 if entry.mmv.framework in GAN else 1)
    info = json.loads((result.folder / "run.json").read_text())
    assert info["status"] == "complete" and info["steps"] == steps
    assert recorder.batches == STEPS
    ckpt = torch.load(result.last_checkpoint, map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == steps
    trained = ckpt["state_dict"]
    assert len(recorder.optimizer_params) == (2 if entry.mmv.framework in GAN else 1)
    for params in recorder.optimizer_params:  # each optimizer moved some of its weights
        assert any(not torch.equal(trained[n], recorder.start[n]) for n in params), params[:3]
    with result.metrics_csv.open() as f:
        rows = list(csv.DictReader(f))
    losses = {k: float(v) for row in rows for k, v in row.items() if "loss" in k and v}
    assert "train_loss" in losses and "val_loss" in losses
    assert all(math.isfinite(v) for v in losses.values()), losses


REGRESSION_3D = next(n for n in ENTRIES if (e := load_entry(n)).spatial_dims == 3 and e.mmv.framework == "fcn"
                     and e.mmv.task == "regression" and e.in_channels == 1)
VARIANTS = {
    "csv_presplit_exclusion": ("nuclei_semseg_2d", [
        "data.layout={layout: csv, file: lists/pairs.csv, split_column: split, exclusion_column: mask}",
        "data.split={kind: presplit}"]),
    "presplit_two_channels_3d": (REGRESSION_3D, [
        "inputs.0.axes.1.channel_names=[a, b]", "data.split={kind: presplit}",
        "data.layout={layout: paired_folders, source: low, target: high, target_suffix: _gt}"]),
    "three_classes": ("nuclei_semseg_2d", ["outputs.0.axes.1.channel_names=[background, a, b]",
                                           "data.labels=classes"]),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_tiny_data_fits_other_layouts(variant, tmp_path):
    """The generator also writes the layouts and axes no bundled entry has yet (CSV with split and
    exclusion columns, presplit folders, suffixes, several input channels, several classes)."""
    from mmv_zoo.data.module import data_module

    name, extra = VARIANTS[variant]
    base = load_entry(name, extra)
    entry = load_entry(name, extra + tiny_overrides(base))
    data, image = tiny_data(entry, tmp_path / "data")
    assert image.shape[:2] == (1, entry.in_channels)
    module = data_module(entry, data)
    module.prepare()
    assert len(module.train_files) >= 1 and len(module.val_files) >= 1
    x, y, *_ = next(iter(module.train_dataloader()))
    assert tuple(x.shape[1:]) == (entry.in_channels, *entry.mmv.data.patch)
    if entry.mmv.task == "segmentation":
        assert set(torch.unique(y).tolist()) <= set(range(entry.out_channels))
