"""A run folder: `runs/<entry>/<run-id>/` with the resolved entry, checkpoints, metrics and plots.

`run.json` is written when training starts (`status: running`) and rewritten when it ends
(`status: complete`); only complete runs are used. `load_model` accepts a run folder or a checkpoint
file and rebuilds the trained framework from the entry stored in the checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import RunError

RUN_FILE = "run.json"
ENTRY_FILE = "rdf.yaml"
CHECKPOINTS = "checkpoints"


@dataclass
class Run:
    folder: Path
    info: dict[str, Any]

    @property
    def best_checkpoint(self) -> Path:
        return self.folder / self.info["best_checkpoint"]


def looks_like_run(path: Path) -> bool:
    """A checkpoint file or an mmv_zoo run folder (complete or not) — not a package or an entry."""
    if path.is_file():
        return path.suffix == ".ckpt"
    return (path / RUN_FILE).exists() or (path / CHECKPOINTS).is_dir()


def open_run(folder: str | Path) -> Run:
    folder = Path(folder)
    if not folder.is_dir():
        raise RunError(f"{folder}: no such run folder")
    info_path = folder / RUN_FILE
    if not info_path.is_file():
        raise RunError(f"{folder}: not a complete run (no {RUN_FILE}; was training interrupted?)")
    try:
        info = json.loads(info_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RunError(f"{info_path}: unreadable ({e})") from None
    if info.get("status", "complete") != "complete":
        raise RunError(f"{folder}: not a complete run (status {info.get('status')!r}; was training interrupted?)")
    return Run(folder, info)


def find_checkpoint(source: str | Path) -> Path:
    """A checkpoint file, or the best checkpoint of a run folder."""
    p = Path(source)
    if p.is_file():
        return p
    return open_run(p).best_checkpoint


def load_model(source: str | Path, direction: str | None = None) -> Any:
    """The trained LightningModule (eval mode, CPU) from a run folder or a .ckpt file.

    `direction` (a2b or b2a) picks one direction of a model that has several (a CycleGAN): the result
    then has that direction's `entry` and `inference_model()`. Other models refuse a direction.
    """
    import torch

    from .entry import EntryError, validate_entry_data
    from .registry import framework_class

    ckpt_path = find_checkpoint(source)
    if not ckpt_path.is_file():
        raise RunError(f"{ckpt_path}: checkpoint missing")
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception:  # torch's own text suggests weights_only=False, which we never do for files
        raise RunError(f"{ckpt_path}: not a PyTorch checkpoint of mmv_zoo (cannot be loaded safely)") from None
    try:
        entry_dict = ckpt["hyper_parameters"]["entry"]
        state = ckpt["state_dict"]
    except (KeyError, TypeError):
        raise RunError(f"{ckpt_path}: not an mmv_zoo checkpoint (no entry in hyper_parameters)") from None
    try:
        entry = validate_entry_data(entry_dict, f"{ckpt_path} (stored entry)")
    except EntryError:
        raise
    cls = framework_class(entry.mmv.framework)
    model = cls(entry_dict, slug=ckpt["hyper_parameters"].get("slug"))
    model.load_state_dict(state, strict=True)
    model.eval()
    if direction is None:
        return model
    if not hasattr(model, "for_direction"):
        raise RunError(f"{source}: a direction ({direction}) is for CycleGAN runs; this run's framework "
                       f"{entry.mmv.framework} translates one way only")
    try:
        return model.for_direction(direction).eval()
    except ValueError as e:
        raise RunError(f"{source}: {e}") from None
