"""Train a zoo entry with the Lightning Trainer and write a complete run folder."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.module import data_module
from ..entry import Entry
from ..errors import EntryError, OutputError, RunError
from ..io.write import check_writable
from ..registry import framework_class
from ..run import RunFolder
from .callbacks import (
    LastCheckpoint,
    ScaleLearningRate,
    StopOnNonFiniteLoss,
    StopRequested,
    TrainingStopped,
    explain_failure,
    moving_average,
)
from .plots import plot_metrics
from .report import EpochLines

RUN_FOLDER_ENV = "MMV_ZOO_RUN_FOLDER"
"""Set by rank 0 while it trains: DDP processes Lightning starts by re-running the command train into
the same run folder (and write nothing of their own)."""


@dataclass
class TrainResult:
    folder: Path
    best_checkpoint: Path
    last_checkpoint: Path
    metrics_csv: Path
    loss_plot: Path | None
    best_score: float | None
    seconds: float
    rank: int = 0
    """Global rank of this process (DDP); only rank 0 writes the run folder and reports."""
    skipped: list[str] = field(default_factory=list)
    """`path: reason` of input files left out (data.on_bad_file: skip)."""


def process_rank() -> int:
    """This process's global rank as the launcher (Lightning's DDP, SLURM, torchrun) set it; 0 alone."""
    for key in ("RANK", "SLURM_PROCID"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return int(os.environ.get("LOCAL_RANK", "0") or 0) if os.environ.get(RUN_FOLDER_ENV) else 0


def _run_folder(out: Path, slug: str, t: Any) -> RunFolder:
    """The run folder: the one rank 0 announced (a DDP child), one per SLURM job (every node's task
    computes the same name), else a new time-stamped one."""
    if os.environ.get(RUN_FOLDER_ENV):
        return RunFolder(os.environ[RUN_FOLDER_ENV])
    if os.environ.get("SLURM_JOB_ID") and (t.num_nodes > 1 or t.devices != 1):
        return RunFolder(out.resolve() / slug / f"slurm-{os.environ['SLURM_JOB_ID']}")
    return RunFolder.new(out, slug)


def resume(run: Path, data: Path | None = None, overrides: list[str] | None = None,
           progress: bool = True, callbacks: list[Any] | None = None) -> TrainResult:
    """Continue an interrupted run in its own folder from `checkpoints/last.ckpt` (weights, optimizer,
    scheduler, epoch, step, callbacks and random state); `overrides` apply on top of its entry;
    `callbacks` as for `train`."""
    folder = RunFolder(Path(run).resolve())
    info = folder.check_resumable()
    if data is None:
        if not info.get("data"):
            raise RunError(f"{folder.info_path}: does not record the data folder; give --data")
        data = Path(info["data"])
    entry = folder.entry(overrides)
    return train(entry, data, folder.folder.parent.parent, progress=progress, resume=folder.folder,
                 callbacks=callbacks)


def check_devices(entry: Entry) -> None:
    """Devices the machine does not have: one line naming `config.mmv_zoo.training.devices`."""
    t = entry.mmv.training
    if t.devices == "auto":
        return
    import torch

    gpus = torch.cuda.device_count()
    where = f"{entry.source}: config.mmv_zoo.training.devices: {t.devices}"
    if t.accelerator == "gpu" or (t.accelerator == "auto" and gpus):
        if gpus == 0:
            return  # Lightning's own message (no GPU) names the accelerator
        if t.devices > gpus:
            raise EntryError(f"{where} GPUs requested but this machine has {gpus}; use 1 to {gpus}")
    elif t.accelerator in ("auto", "cpu"):
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        if t.devices > cores:
            raise EntryError(f"{where} CPU processes requested but this machine has {cores} CPU core(s); "
                             f"use 1 to {cores}")


def _loggers(entry: Entry, folder: Path) -> list[Any]:
    from importlib.util import find_spec

    from pytorch_lightning.loggers import CSVLogger

    out: list[Any] = [CSVLogger(save_dir=folder, name="logs", version="")]
    for name in entry.mmv.training.loggers:
        if name == "tensorboard":
            if not (find_spec("tensorboard") or find_spec("tensorboardX")):
                raise EntryError(f"{entry.source}: config.mmv_zoo.training.loggers: tensorboard needs the "
                                 "tensorboard package: pip install 'mmv_zoo[tensorboard]'")
            from pytorch_lightning.loggers import TensorBoardLogger

            out.append(TensorBoardLogger(save_dir=folder, name="tensorboard", version=""))
        elif name == "mlflow":
            if not find_spec("mlflow"):
                raise EntryError(f"{entry.source}: config.mmv_zoo.training.loggers: mlflow needs the mlflow "
                                 "package: pip install 'mmv_zoo[mlflow]'")
            from pytorch_lightning.loggers import MLFlowLogger

            out.append(MLFlowLogger(experiment_name=entry.slug, run_name=folder.name,
                                    tracking_uri=os.environ.get("MLFLOW_TRACKING_URI")))
    return out


def check_disk_space(folder: Path, model: Any, entry: Entry, extra_bytes: int = 0) -> None:
    """Fail before training when the run's checkpoints (weights + optimizer state, each kept one plus
    a temporary copy) and `extra_bytes` (a data cache) would not fit on the output's disk."""
    existing = Path(folder).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    n_params = sum(p.numel() * p.element_size() for p in model.parameters())
    keep = max(entry.mmv.training.checkpoint.save_top_k, 1) + 2  # best(s), last, last's temporary copy
    need = n_params * 3 * keep + extra_bytes + (16 << 20)  # weights + two optimizer moments; logs
    free = shutil.disk_usage(existing).free
    if free < need:
        raise OutputError(f"{folder}: too little free disk space ({free / 2**20:.0f} MiB free on {existing}, "
                          f"the run needs about {need / 2**20:.0f} MiB for checkpoints"
                          f"{' and the data cache' if extra_bytes else ''})")


def train(entry: Entry, data: Path, out: Path = Path("runs"), progress: bool = True,
          resume: Path | None = None, callbacks: list[Any] | None = None) -> TrainResult:
    """Check all data, train, and write `out/<entry>/<run-id>/` (run.json says `complete` at the end).

    `resume`: a run folder to continue from its `checkpoints/last.ckpt` (see `resume()`);
    `callbacks`: extra Lightning callbacks (e.g. timers)."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint, StochasticWeightAveraging

    t0 = time.time()
    mmv = entry.mmv
    t = mmv.training
    check_devices(entry)
    check_writable(out)
    datamodule = data_module(entry, Path(data))
    datamodule.prepare()  # every file checked before the run folder exists
    pl.seed_everything(t.seed, workers=True, verbose=False)
    model = framework_class(mmv.framework)(entry.model_dump(mode="json"), slug=entry.slug)  # checks init_from too

    rank = process_rank()
    run = RunFolder(resume) if resume is not None else _run_folder(out, entry.slug, t)
    folder = run.folder
    if rank == 0:
        check_disk_space(folder, model, entry)
    monitor = t.checkpoint_monitor
    mode = "min" if monitor == "val_loss" else "max"
    latest = monitor == "last"  # best.ckpt: the end of the latest epoch
    checkpoint = ModelCheckpoint(dirpath=run.checkpoints, filename="best", monitor=None if latest else monitor,
                                 mode=mode, save_top_k=1 if latest else t.checkpoint.save_top_k,
                                 every_n_epochs=t.checkpoint.every_n_epochs, save_last=False)
    last = LastCheckpoint(run.last_checkpoint, t.checkpoint.last_every_n_steps)
    # the weight average first: it updates after a step before `last` saves that step
    averaging = [moving_average(t.ema.decay)] if t.ema is not None else []
    callbacks = [*averaging, checkpoint, last, StopOnNonFiniteLoss(), *(callbacks or [])]
    early = None
    if t.early_stopping is not None:
        es = t.early_stopping
        early = EarlyStopping(monitor=es.monitor, patience=es.patience, min_delta=es.min_delta,
                              mode="min" if es.monitor == "val_loss" else "max", check_finite=True)
        callbacks.append(early)
    if t.swa is not None:
        callbacks.append(StochasticWeightAveraging(
            swa_lrs=t.swa.swa_lrs, swa_epoch_start=t.swa.swa_epoch_start,
            annealing_epochs=t.swa.annealing_epochs, annealing_strategy=t.swa.annealing_strategy))
    bar = progress and rank == 0 and sys.stdout.isatty()
    if bar:
        from pytorch_lightning.callbacks import RichProgressBar

        callbacks.append(RichProgressBar(leave=False))
    elif progress and rank == 0:  # a log file, a notebook, a cluster job: one line per epoch
        callbacks.append(EpochLines())
    quiet_lightning()
    loggers = _loggers(entry, folder)
    try:  # settings the machine cannot honour (accelerator: gpu without one, ...) fail here, before any file
        trainer = pl.Trainer(
            accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=t.strategy,
            precision=t.precision, max_epochs=t.max_epochs, max_steps=t.max_steps,
            max_time=None if t.max_time is None else {"seconds": round(t.max_time * 60)},
            accumulate_grad_batches=t.accumulate_grad_batches, gradient_clip_val=t.gradient_clip_val,
            gradient_clip_algorithm=t.gradient_clip_algorithm if t.gradient_clip_val else None,
            deterministic=t.deterministic or None, check_val_every_n_epoch=t.check_val_every_n_epoch,
            logger=loggers, callbacks=callbacks, enable_progress_bar=bar,
            enable_model_summary=False, log_every_n_steps=1, reload_dataloaders_every_n_epochs=1,
            default_root_dir=folder,
        )
    except Exception as e:  # Lightning's MisconfigurationException and friends
        raise EntryError(f"{entry.source}: config.mmv_zoo.training: {str(e).splitlines()[0]}") from None
    if resume is not None:
        old_lr = run.entry().mmv.training.optimizer.lr  # before it is rewritten
        if old_lr != t.optimizer.lr:
            trainer.callbacks.append(ScaleLearningRate(t.optimizer.lr / old_lr))
    if rank == 0:
        run.start(entry, data, resumed=resume is not None, exist_ok=bool(os.environ.get("SLURM_JOB_ID")))
        if resume is not None:
            run.keep_earlier_metrics()
    previous = os.environ.get(RUN_FOLDER_ENV)
    os.environ[RUN_FOLDER_ENV] = str(folder)  # DDP processes started by re-running the command find it
    try:
        ckpt = str(run.last_checkpoint) if resume is not None else None
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=False if ckpt else None)
    except SystemExit:  # Ctrl-C (Lightning exits after a graceful stop) or SIGTERM: last.ckpt is saved
        if rank == 0:
            run.update_info(status="interrupted", steps=trainer.global_step)
        raise RunError(f"{folder}: training interrupted at epoch {trainer.current_epoch}, step "
                       f"{trainer.global_step}; continue it with: mmv-zoo train --resume {folder}") from None
    except StopRequested:  # a StopRequest callback (a Cancel button): last.ckpt is saved
        if rank == 0:
            run.update_info(status="interrupted", steps=trainer.global_step)
        raise TrainingStopped(f"{folder}: training stopped after step {trainer.global_step}; continue it with: "
                              f"mmv-zoo train --resume {folder}") from None
    except Exception as e:
        explained = explain_failure(e, trainer, entry, folder)
        if explained is None:
            raise
        if rank == 0:
            run.update_info(status="failed", error=str(explained))
        raise explained from None
    finally:
        if previous is None:
            os.environ.pop(RUN_FOLDER_ENV, None)
        else:
            os.environ[RUN_FOLDER_ENV] = previous
    if trainer.interrupted:
        raise RunError(f"{folder}: training interrupted after {trainer.global_step} steps; continue it with: "
                       f"mmv-zoo train --resume {folder}")
    last_path = run.last_checkpoint
    if trainer.global_rank != 0 or rank != 0:
        return TrainResult(folder, last_path, last_path, run.metrics_csv, None, None,
                           round(time.time() - t0, 1), rank=max(rank, trainer.global_rank))

    metrics = run.merge_metrics()
    plot = plot_metrics(metrics, folder / "loss_curve.png", model.metric_name)
    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else last_path  # no validation ran
    score = checkpoint.best_model_score
    previous_info = run.read_info()
    info = {
        "entry": entry.slug,
        "status": "complete",
        "entry_source": str(entry.source) if entry.source else None,
        "data": str(Path(data).resolve()),
        "train_files": datamodule.train_files,
        "val_files": datamodule.val_files,
        "skipped_files": datamodule.skipped_files,
        "best_checkpoint": str(best.relative_to(folder)),
        "last_checkpoint": str(last_path.relative_to(folder)),
        "monitor": monitor,
        "best_score": float(score) if score is not None else None,
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "stopped_early": bool(early is not None and early.stopped_epoch > 0),
        "devices": trainer.world_size,
        "resumed": previous_info.get("resumed", 0) + (resume is not None),
        "seconds": round(time.time() - t0, 1),
        "versions": _versions(),
    }
    run.write_info(info)
    return TrainResult(folder, best, last_path, metrics, plot, info["best_score"], info["seconds"],
                       skipped=list(info["skipped_files"]))


def quiet_lightning() -> None:
    """Keep Lightning's banners (GPU available, tips) and known deprecation noise off the console."""
    import logging
    import warnings

    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero",
                 "pytorch_lightning.trainer.connectors.checkpoint_connector"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*treespec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*exists and is not empty.*")  # a resumed run's own folder


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("mmv_zoo", "torch", "pytorch-lightning", "monai", "bioimageio.core"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out
