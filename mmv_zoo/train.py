"""Train a zoo entry with the Lightning Trainer and write a complete run folder."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .entry import Entry, entry_to_yaml
from .errors import EntryError, OutputError, RunError
from .io.write import check_writable
from .run import CHECKPOINTS, ENTRY_FILE, RUN_FILE


@dataclass
class TrainResult:
    folder: Path
    best_checkpoint: Path
    last_checkpoint: Path
    metrics_csv: Path
    loss_plot: Path | None
    best_score: float | None
    seconds: float


def new_run_folder(out: Path, slug: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = out.resolve()
    folder = out / slug / stamp
    n = 1
    while folder.exists():
        n += 1
        folder = out / slug / f"{stamp}-{n}"
    return folder


def train(entry: Entry, data: Path, out: Path = Path("runs"), progress: bool = True) -> TrainResult:
    """Check all data, train, and write `out/<entry>/<run-id>/` (run.json says `complete` at the end)."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger

    from .data.module import data_module
    from .registry import framework_class

    t0 = time.time()
    mmv = entry.mmv
    t = mmv.training
    if t.devices != 1:
        raise EntryError(f"{entry.source}: config.mmv_zoo.training.devices: {t.devices!r}; multi-device "
                         "training is not available yet, use 1")
    check_writable(out)
    datamodule = data_module(entry, Path(data))
    datamodule.prepare()  # every file read and checked before the run folder exists
    pl.seed_everything(t.seed, workers=True, verbose=False)
    model = framework_class(mmv.framework)(entry.model_dump(mode="json"), slug=entry.slug)  # checks init_from too

    folder = new_run_folder(out, entry.slug)
    monitor = t.checkpoint_monitor
    checkpoint = ModelCheckpoint(dirpath=folder / CHECKPOINTS, filename="best", monitor=monitor,
                                 mode="min" if monitor == "val_loss" else "max", save_last=True)
    callbacks: list[Any] = [checkpoint]
    if progress:
        from pytorch_lightning.callbacks import RichProgressBar

        callbacks.append(RichProgressBar(leave=False))
    quiet_lightning()
    try:  # settings the machine cannot honour (accelerator: gpu without one, ...) fail here, before any file
        trainer = pl.Trainer(
            accelerator=t.accelerator, devices=t.devices, precision=t.precision, max_epochs=t.max_epochs,
            max_steps=t.max_steps, max_time=None if t.max_time is None else {"seconds": round(t.max_time * 60)},
            check_val_every_n_epoch=t.check_val_every_n_epoch,
            logger=CSVLogger(save_dir=folder, name="logs", version=""), callbacks=callbacks,
            enable_progress_bar=progress, enable_model_summary=False, log_every_n_steps=1,
            reload_dataloaders_every_n_epochs=1, default_root_dir=folder,
        )
    except Exception as e:  # Lightning's MisconfigurationException and friends
        raise EntryError(f"{entry.source}: config.mmv_zoo.training: {str(e).splitlines()[0]}") from None
    try:
        folder.mkdir(parents=True)
        (folder / ENTRY_FILE).write_text(entry_to_yaml(entry))
        (folder / RUN_FILE).write_text(json.dumps({"entry": entry.slug, "status": "running"}))
    except OSError as e:
        raise OutputError(f"{folder}: cannot create run folder ({e.strerror})") from None
    trainer.fit(model, datamodule=datamodule)
    if trainer.interrupted:  # Lightning turns Ctrl-C into a graceful stop: the run is not complete
        raise RunError(f"{folder}: training interrupted after {trainer.global_step} steps; the folder keeps "
                       "its checkpoints but is not a complete run")

    metrics = folder / "metrics.csv"
    shutil.copyfile(folder / "logs" / "metrics.csv", metrics)
    metric_name = getattr(model, "metric_name", None) or (
        "val foreground Dice" if mmv.task == "segmentation" else "val Pearson r")
    plot = plot_metrics(metrics, folder / "loss_curve.png", metric_name)
    last = folder / CHECKPOINTS / "last.ckpt"
    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else last  # no validation ran
    score = checkpoint.best_model_score
    info = {
        "entry": entry.slug,
        "status": "complete",
        "entry_source": str(entry.source) if entry.source else None,
        "data": str(Path(data).resolve()),
        "train_files": datamodule.train_files,
        "val_files": datamodule.val_files,
        "best_checkpoint": str(best.relative_to(folder)),
        "last_checkpoint": str(last.relative_to(folder)),
        "monitor": monitor,
        "best_score": float(score) if score is not None else None,
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "seconds": round(time.time() - t0, 1),
        "versions": _versions(),
    }
    (folder / RUN_FILE).write_text(json.dumps(info, indent=1))
    return TrainResult(folder, best, last, metrics, plot, info["best_score"], info["seconds"])


def quiet_lightning() -> None:
    """Keep Lightning's banners (GPU available, tips) and known deprecation noise off the console."""
    import logging
    import warnings

    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*treespec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("mmv_zoo", "torch", "pytorch-lightning", "monai", "bioimageio.core"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


def plot_metrics(metrics_csv: Path, png: Path, metric_name: str = "val_metric") -> Path | None:
    """Loss curves (train and validation; a GAN's generator and discriminator losses) and the
    validation metric per epoch."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[float, float]]] = {}
    with metrics_csv.open() as f:
        for row in csv.DictReader(f):
            for key in ("train_loss", "train_loss_g", "train_loss_d", "val_loss", "val_metric"):
                if row.get(key):
                    series.setdefault(key, []).append((float(row["epoch"]), float(row[key])))
    if not series:
        return None
    if "train_loss_d" in series:  # a GAN: generator, discriminator and validation on panels of their own
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
        for ax, key, title in zip(axes[:2], ("train_loss_g", "train_loss_d"), ("generator", "discriminator"),
                                  strict=True):
            if key in series:
                ax.plot(*zip(*series[key], strict=True), marker=".", color="tab:blue" if key[-1] == "g" else "tab:red")
            ax.set_title(f"{title} ({key})", fontsize=10)
            ax.set_xlabel("epoch")
        _loss_and_metric(axes[2], series, ("val_loss",), metric_name)
    else:
        fig, ax = plt.subplots(figsize=(6, 4))
        _loss_and_metric(ax, series, ("train_loss", "val_loss"), metric_name)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def _loss_and_metric(ax: Any, series: dict[str, list[tuple[float, float]]], keys: tuple[str, ...],
                     metric_name: str) -> None:
    """Loss curves on `ax`, the validation metric on a twin axis, one legend."""
    lines = []
    for key in keys:
        if key in series:
            lines += ax.plot(*zip(*series[key], strict=True), label=key, marker=".")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if "val_metric" in series:
        ax2 = ax.twinx()
        lines += ax2.plot(*zip(*series["val_metric"], strict=True), color="tab:green", label=metric_name,
                          marker=".")
        ax2.set_ylabel(metric_name)
    ax.legend(lines, [line.get_label() for line in lines], loc="center right")
