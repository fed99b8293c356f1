"""`mmv-zoo tune lr|batch-size`: Lightning's learning-rate finder (a short run over a rising learning
rate) and batch-size scaler (doubling until out of memory, or until `max_batch_size`), written into a
resolved entry that `mmv-zoo train` takes as it is."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.module import data_module
from ..entry import Entry, entry_to_yaml
from ..errors import EntryError, OutputError
from ..registry import framework_class
from ..settings.framework import framework_spec
from .train import quiet_lightning

WHAT = ("lr", "batch-size")


@dataclass
class TuneResult:
    what: str
    field: str
    before: float
    value: float
    entry_file: Path


def tune(what: str, entry: Entry, data: Path, out: Path | None = None, num_training: int = 60,
         max_batch_size: int = 256) -> TuneResult:
    """Find the learning rate (`lr`) or the largest batch size that fits (`batch-size`) for `entry` on
    `data`; write the entry with the value into `out` (default `tuned/<entry>/rdf.yaml`)."""
    import pytorch_lightning as pl
    from pytorch_lightning.tuner import Tuner

    if what not in WHAT:
        raise EntryError(f"tune {what!r}: choose lr or batch-size")
    if framework_spec(entry.mmv.framework).manual_optimization:
        raise EntryError(f"{entry.source}: config.mmv_zoo.framework: tune needs a framework with one optimizer "
                         f"(fcn); {entry.mmv.framework} steps its own")
    t = entry.mmv.training
    before = t.optimizer.lr if what == "lr" else t.batch_size
    out = Path(out) if out is not None else Path("tuned") / entry.slug / "rdf.yaml"
    if out.exists() and out.resolve() == (entry.source.resolve() if entry.source else None):
        raise OutputError(f"{out}: is the entry itself; write the tuned entry elsewhere (--out)")
    datamodule = data_module(entry, Path(data))
    datamodule.prepare()
    pl.seed_everything(t.seed, workers=True, verbose=False)
    model = framework_class(entry.mmv.framework)(entry.model_dump(mode="json"), slug=entry.slug)
    quiet_lightning()
    with tempfile.TemporaryDirectory(prefix="mmv_zoo_tune_") as tmp:
        trainer = pl.Trainer(accelerator=t.accelerator, devices=1, precision=t.precision, max_epochs=t.max_epochs,
                             logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, default_root_dir=tmp, num_sanity_val_steps=0,
                             reload_dataloaders_every_n_epochs=1)
        tuner = Tuner(trainer)
        if what == "lr":
            finder = tuner.lr_find(model, datamodule=datamodule, num_training=num_training, update_attr=False,
                                   min_lr=1e-6, max_lr=1.0, early_stop_threshold=None)
            value = finder.suggestion() if finder is not None else None
            if value is None:
                raise EntryError(f"{entry.source}: the learning-rate finder found no clear minimum in "
                                 f"{num_training} steps; try a larger --steps")
            field = "training.optimizer.lr"
        else:
            datamodule.max_batch_size = max_batch_size
            value = tuner.scale_batch_size(model, datamodule=datamodule, mode="power", init_val=t.batch_size,
                                           steps_per_trial=2, max_trials=25, max_val=max_batch_size)
            field = "training.batch_size"
    data_dict = entry.model_dump(mode="json")
    node: Any = data_dict["config"]["mmv_zoo"]
    keys = field.split(".")
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = float(f"{value:.3g}") if what == "lr" else int(value)
    tuned = Entry.model_validate(data_dict)
    _write(out, entry_to_yaml(tuned))
    return TuneResult(what, field, before, node[keys[-1]], out)


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        raise OutputError(f"{path}: cannot write the tuned entry ({e.strerror or e})") from None
