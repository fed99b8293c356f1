"""Batch prediction over several processes (devices, nodes) through Lightning's predict loop.

Files are split across processes by position (process r of w takes files r, r + w, ...), each
process predicts and writes its own files with the same engine as a single process, so the outputs
are the same files with the same bytes; `--devices N` on CPU starts N processes (gloo), on GPUs one
per GPU, and `--num-nodes` spans nodes the way Lightning does (e.g. under SLURM).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Sampler

from ..errors import DataError, DownloadError, EntryError, MmvZooError, OutputError, RunError
from ..training.train import quiet_lightning
from .files import Prediction, predict_file
from .sources import open_predictor

_ERRORS = {e.__name__: e for e in (DataError, DownloadError, EntryError, OutputError, RunError)}
"""A worker's one-line error, raised again in the main process as the same kind."""


class _Shard(Sampler[int]):
    """Indices r, r + w, ... of `n` for this process (rank and world size read when iterated)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def _rank_world(self) -> tuple[int, int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def __iter__(self):
        rank, world = self._rank_world()
        return iter(range(rank, self.n, world))

    def __len__(self) -> int:
        rank, world = self._rank_world()
        return len(range(rank, self.n, world))


class FilePrediction(pl.LightningModule):
    """predict_step(i) predicts file i with the engine; results are written to a per-process manifest."""

    def __init__(self, source: str, paths: list[str], out: str, options: Any, selection: Any, overwrite: bool,
                 trust_code: bool, weight_format: str | None, manifest: str) -> None:
        super().__init__()
        self.args = dict(source=source, paths=paths, out=out, options=options, selection=selection,
                         overwrite=overwrite, trust_code=trust_code, weight_format=weight_format, manifest=manifest)
        self.anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)  # lets Lightning place the module
        self.predictor: Any = None
        self.done: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []

    def on_predict_start(self) -> None:
        a = self.args
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, self.trainer.world_size)))
        self.predictor = open_predictor(a["source"], trust_code=a["trust_code"], weight_format=a["weight_format"],
                                        options=a["options"])

    def predict_step(self, batch: Any, batch_idx: int) -> None:
        a = self.args
        for i in batch.tolist():
            try:
                for r in predict_file(self.predictor, Path(a["paths"][i]), Path(a["out"]), a["selection"],
                                      a["overwrite"]):
                    self.done.append({**asdict(r), "input": str(r.input), "output": str(r.output), "index": i})
            except MmvZooError as e:  # reported by the main process as the same one-line error
                self.errors.append({"kind": type(e).__name__, "message": str(e), "index": i})
                break

    def on_predict_end(self) -> None:
        path = Path(self.args["manifest"]) / f"rank{self.global_rank}.json"
        path.write_text(json.dumps({"done": self.done, "errors": self.errors}))


def predict_distributed(source: str | Path, paths: list[Path], out: Path, options: Any, selection: Any,
                        overwrite: bool, trust_code: bool, weight_format: str | None, devices: int,
                        num_nodes: int = 1) -> list[Prediction]:
    """Predict `paths` on `devices` processes per node (and `num_nodes` nodes); results in input order."""
    quiet_lightning()
    with tempfile.TemporaryDirectory(prefix="mmv_zoo_predict_") as manifest:
        module = FilePrediction(str(source), [str(p) for p in paths], str(out), options, selection, overwrite,
                                trust_code, weight_format, manifest)
        loader = DataLoader(list(range(len(paths))), batch_size=1, sampler=_Shard(len(paths)))
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
        strategy = "ddp_spawn" if accelerator == "cpu" else "ddp"
        trainer = pl.Trainer(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy,
                             use_distributed_sampler=False, logger=False, enable_progress_bar=False,
                             enable_checkpointing=False, enable_model_summary=False)
        trainer.predict(module, dataloaders=loader, return_predictions=False)
        rows, errors = [], []
        for f in sorted(Path(manifest).glob("rank*.json")):
            got = json.loads(f.read_text())
            rows += got["done"]
            errors += got["errors"]
    if errors:
        first = min(errors, key=lambda e: e["index"])
        raise _ERRORS.get(first["kind"], DataError)(first["message"])
    rows.sort(key=lambda r: (r.pop("index"), r["scene"] or ""))
    return [Prediction(**{**r, "input": Path(r["input"]), "output": Path(r["output"]) if r["output"] else None})
            for r in rows]
