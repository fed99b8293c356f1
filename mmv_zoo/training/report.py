"""Progress without a terminal (a log file, a notebook, a cluster job): one line per epoch, flushed,
instead of a progress bar that such outputs show only at the end, if at all."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import pytorch_lightning as pl

SHOWN = ("train_loss", "train_loss_g", "train_loss_d", "val_loss", "val_metric")
"""Logged values an epoch line shows, when the framework logs them."""


class EpochLines(pl.Callback):
    """`epoch 3/40  steps 24  train_loss 0.4120  val_loss 0.3981  val_metric 0.8710  12 s` after each
    epoch (its validation included)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self.start = time.perf_counter()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        print(epoch_line(trainer.current_epoch, trainer.max_epochs, trainer.global_step, trainer.callback_metrics,
                         time.perf_counter() - self.start), file=self.stream or sys.stdout, flush=True)


def epoch_line(epoch: int, max_epochs: int | None, steps: int, metrics: dict[str, Any], seconds: float) -> str:
    total = f"/{max_epochs}" if max_epochs and max_epochs > 0 else ""
    values = [f"{k} {float(metrics[k]):.4f}" for k in SHOWN if k in metrics]
    return "  ".join([f"epoch {epoch + 1}{total}", f"steps {steps}", *values, f"{seconds:.0f} s"])
