"""Lightning callbacks that make a run safe to kill and to resume: `last.ckpt` written often and
atomically (with the random state), a non-finite loss stopping the run with its epoch and step, and
failures (out of memory) explained in one line."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from ..errors import RunError


class NonFiniteLoss(RunError):
    """The training loss became NaN or infinite."""


def _rng_state() -> dict[str, Any]:
    """torch, numpy and Python random states as plain values (loadable with weights_only=True)."""
    import random

    import numpy as np

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, state, gauss = random.getstate()
    return {"torch": torch.get_rng_state(), "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
            "python": [version, list(state), gauss],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(s: dict[str, Any]) -> None:
    import random

    import numpy as np

    torch.set_rng_state(s["torch"])
    kind, keys, pos, has_gauss, cached = s["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, state, gauss = s["python"]
    random.setstate((version, tuple(state), gauss))
    if s.get("cuda") and torch.cuda.is_available() and len(s["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(s["cuda"])


class LastCheckpoint(pl.Callback):
    """Rewrite `path` every `every_n_steps` optimizer steps, at each epoch end, at the end of training
    and when the run is stopped (Ctrl-C, SIGTERM): written to a temporary name and renamed, so a kill
    while writing leaves the previous one intact. The checkpoint carries the random state."""

    def __init__(self, path: Path, every_n_steps: int) -> None:
        self.path = Path(path)
        self.every = every_n_steps
        self._saved_step = -1

    @property
    def state_key(self) -> str:
        return "LastCheckpoint"

    def state_dict(self) -> dict[str, Any]:
        return {"rng": _rng_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "rng" in state_dict:
            _set_rng_state(state_dict["rng"])

    def save(self, trainer: pl.Trainer) -> None:
        if trainer.global_step == self._saved_step or trainer.sanity_checking:
            return
        tmp = self.path.with_name(f".{self.path.name}.partial")
        trainer.save_checkpoint(tmp, weights_only=False)  # every rank takes part; rank 0 writes
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
        trainer.strategy.barrier("last_checkpoint")
        self._saved_step = trainer.global_step

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._saved_step = trainer.global_step  # a resumed run does not rewrite what it resumed from

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step > 0 and trainer.global_step // self.every > max(self._saved_step, 0) // self.every:
            self.save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.save(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        # SIGTERM stops every DDP rank at the same batch (Lightning broadcasts it); Ctrl-C only this one
        if isinstance(exception, SIGTERMException | StopRequested) or (isinstance(exception, KeyboardInterrupt)
                                                                       and trainer.world_size == 1):
            self.save(trainer)


class StopRequest(pl.Callback):
    """A stop asked for from outside the training loop (a Cancel button, another thread): the run stops
    after the current batch, writes its last.ckpt there, as SIGTERM does, and is left resumable (`train`
    raises `TrainingStopped`). `request()` is safe from any thread (Ctrl-C's handler is main-thread only)."""

    def __init__(self) -> None:
        self.requested = False

    def request(self) -> None:
        self.requested = True

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.requested:
            raise StopRequested(trainer.global_step)


class StopRequested(Exception):
    """Raised inside the loop by `StopRequest`; `train` turns it into `TrainingStopped`."""


class TrainingStopped(RunError):
    """Training stopped on request; the run folder resumes from its last.ckpt."""


class ScaleLearningRate(pl.Callback):
    """A resumed run given another `training.optimizer.lr`: the restored optimizer and scheduler carry
    the old one, so scale their learning rates (current, initial and the scheduler's base) by new/old."""

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for opt in trainer.optimizers:
            for group in opt.param_groups:
                for key in ("lr", "initial_lr"):
                    if key in group:
                        group[key] *= self.factor
        for config in trainer.lr_scheduler_configs:
            sched = config.scheduler
            if hasattr(sched, "base_lrs"):
                sched.base_lrs = [lr * self.factor for lr in sched.base_lrs]
            if hasattr(sched, "min_lrs"):  # ReduceLROnPlateau
                sched.min_lrs = [lr * self.factor for lr in sched.min_lrs]


class WarmEMA:
    """The moving average of a weight with a warm-up: after n updates the average keeps
    min(decay, (1 + n) / (10 + n)) of itself. Integer buffers (batch-norm counters) take the current value."""

    def __init__(self, decay: float) -> None:
        self.decay = decay

    def __call__(self, average: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        if not average.is_floating_point():
            return current
        keep = torch.clamp((1 + n) / (10 + n), max=self.decay).to(average.dtype)
        return average + (current - average) * (1 - keep)


def moving_average(decay: float) -> pl.Callback:
    """Lightning's weight averaging with `WarmEMA` after every optimizer step: validation runs on the
    average, checkpoints hold it as their weights (and the raw weights for resuming), and the model
    ends training with it."""
    from pytorch_lightning.callbacks import WeightAveraging

    return WeightAveraging(avg_fn=WarmEMA(decay))


class StopOnNonFiniteLoss(pl.Callback):
    """Stop at the first NaN or infinite training loss, naming the epoch and the step."""

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        """Before the gradients: the weights keep their last finite values."""
        if not torch.isfinite(loss.detach()).all():
            self._stop(trainer, float(loss.detach().float().mean()), trainer.fit_loop.epoch_loop.batch_idx)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for key, value in trainer.callback_metrics.items():  # frameworks that step their own optimizers
            if key.startswith("train_loss") and not math.isfinite(float(value)):
                self._stop(trainer, float(value), None, key)

    @staticmethod
    def _stop(trainer: pl.Trainer, value: float, batch_idx: int | None, key: str = "training loss") -> None:
        where = f" (batch {batch_idx} of the epoch)" if batch_idx is not None else ""
        raise NonFiniteLoss(
            f"{key} is {value} at epoch {trainer.current_epoch}, step {trainer.global_step}{where}: training "
            "stopped. Lower training.optimizer.lr, set training.gradient_clip_val, or check the data "
            "(normalization of constant images); last.ckpt holds the last finite state")


def explain_failure(e: BaseException, trainer: Any, entry: Any, folder: Path) -> BaseException | None:
    """A one-line error for failures a user can act on (out of memory), else None (re-raise as is)."""
    if isinstance(e, RunError):
        return e
    text = str(e)
    oom = isinstance(e, torch.OutOfMemoryError) or "DefaultCPUAllocator: can't allocate memory" in text
    if oom:
        t = entry.mmv.training
        return RunError(
            f"{folder}: out of memory at epoch {trainer.current_epoch}, step {trainer.global_step} with "
            f"training.batch_size {t.batch_size} and data.patch {entry.mmv.data.patch}; find the largest batch "
            f"that fits with: mmv-zoo tune batch-size {entry.slug} --data DATA (or lower training.batch_size / "
            f"data.patch, or use training.precision: 16-mixed)")
    return None
