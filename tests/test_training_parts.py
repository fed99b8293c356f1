"""Losses, optimizers and schedulers by kind; the pre-split folder layout."""

from __future__ import annotations

import shutil

import pytest
import torch
from pydantic import TypeAdapter

from mmv_zoo.data.pairs import split_pairs
from mmv_zoo.entry import load_entry
from mmv_zoo.errors import DataError
from mmv_zoo.frameworks.losses import build_loss
from mmv_zoo.frameworks.optim import build_optimizer, build_scheduler
from mmv_zoo.settings.training import LossSettings, OptimizerSettings, SchedulerSettings


@pytest.mark.parametrize("kind", ["cross_entropy", "dice", "dice_ce"])
def test_segmentation_losses_prefer_the_truth(kind):
    loss = build_loss(TypeAdapter(LossSettings).validate_python({"kind": kind}))
    target = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    target[:, :, 2:6, 2:6] = 1
    good = torch.cat([(target == 0).float(), (target == 1).float()], 1) * 10 - 5
    bad = -good
    assert loss(good, target) < loss(bad, target)
    logits = torch.zeros(2, 2, 8, 8, requires_grad=True)
    loss(logits, target).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("kind", ["mse", "l1"])
def test_regression_losses(kind):
    loss = build_loss(TypeAdapter(LossSettings).validate_python({"kind": kind}))
    y = torch.randn(2, 1, 4, 8, 8)
    assert loss(y, y) == 0 and loss(y + 1, y) > 0


def test_class_weights_change_cross_entropy():
    plain = build_loss(TypeAdapter(LossSettings).validate_python({"kind": "cross_entropy"}))
    weighted = build_loss(TypeAdapter(LossSettings).validate_python(
        {"kind": "cross_entropy", "class_weights": [0.1, 10.0]}))
    logits, target = torch.randn(1, 2, 8, 8), torch.randint(0, 2, (1, 1, 8, 8))
    assert not torch.isclose(plain(logits, target), weighted(logits, target))


@pytest.mark.parametrize("opt", ["adam", "adamw", "sgd"])
@pytest.mark.parametrize("sched", ["none", "cosine", "step", "plateau"])
def test_optimizers_and_schedulers(opt, sched):
    p = torch.nn.Parameter(torch.ones(3))
    o = build_optimizer(TypeAdapter(OptimizerSettings).validate_python({"kind": opt, "lr": 0.1}), [p])
    s = build_scheduler(TypeAdapter(SchedulerSettings).validate_python({"kind": sched}), o, max_epochs=10)
    (p**2).sum().backward()
    o.step()
    assert not torch.equal(p.detach(), torch.ones(3))
    assert (s is None) == (sched == "none")
    if s is not None:
        assert ("monitor" in s) == (sched == "plateau")


def test_presplit_folders(data_2d, tmp_path):
    names = sorted(p.name for p in (data_2d / "images").iterdir())
    for part, chosen in (("train", names[1:]), ("val", names[:1])):
        for sub in ("images", "labels"):
            (tmp_path / part / sub).mkdir(parents=True)
            for n in chosen:
                shutil.copy(data_2d / sub / n, tmp_path / part / sub / n)
    data = load_entry("nuclei_semseg_2d", ["data.split={kind: presplit}"]).mmv.data
    train, val = split_pairs(tmp_path, data)
    assert [p.source.name for p in val] == names[:1] and len(train) == 2
    shutil.rmtree(tmp_path / "val")
    with pytest.raises(DataError, match="val"):
        split_pairs(tmp_path, data)
