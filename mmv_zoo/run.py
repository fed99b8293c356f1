"""A run folder: `runs/<entry>/<run-id>/` with the resolved entry, checkpoints, metrics and plots.

This module is the one place that knows the folder's layout: `RunFolder` owns its paths, `run.json`
(written when training starts, `status: running`, and rewritten when it ends, `status: complete`;
only complete runs are used), the metrics of a run resumed several times, its entry and its trained
model. `load_model` accepts a run folder or a checkpoint file and rebuilds the trained framework from
the entry stored in the checkpoint; `load_im2im_checkpoint` builds an entry's framework around the
weights of an MMV_Im2Im checkpoint.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from .entry import RDF_NAME, RUN_INFO, entry_to_yaml, load_entry, validate_entry_data
from .errors import OutputError, RunError
from .registry import framework_class
from .remote.im2im_checkpoint import load_into, read_network_state, to_network_keys
from .settings.framework import framework_spec

RUN_FILE = RUN_INFO
ENTRY_FILE = RDF_NAME
CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
METRICS = "metrics.csv"
LOGS = "logs"


class RunFolder:
    """One run folder (it need not exist yet); every path and file of a run goes through here."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.folder)!r})"

    # ------------------------------------------------------------ finding runs

    @classmethod
    def new(cls, out: str | Path, slug: str) -> RunFolder:
        """A new time-stamped folder `out/<slug>/<YYYYmmdd-HHMMSS>[-n]/` (not created yet)."""
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        base = Path(out).resolve() / slug
        folder, n = base / stamp, 1
        while folder.exists():
            n += 1
            folder = base / f"{stamp}-{n}"
        return cls(folder)

    @staticmethod
    def looks_like(path: str | Path) -> bool:
        """A checkpoint file or an mmv_zoo run folder (complete or not): not a package or an entry."""
        path = Path(path)
        if path.is_file():
            return path.suffix == ".ckpt"
        return (path / RUN_FILE).exists() or (path / CHECKPOINTS).is_dir()

    @classmethod
    def of(cls, path: str | Path) -> RunFolder | None:
        """The run a folder or a checkpoint belongs to (`<run>/checkpoints/x.ckpt`, or a .ckpt kept
        loose in the run folder); None when there is none."""
        path = Path(path)
        candidates = (path.parent, path.parent.parent) if path.is_file() else (path,)
        for folder in candidates:
            if (folder / RUN_FILE).is_file():
                return cls(folder)
        return None

    # ------------------------------------------------------------ paths

    @property
    def info_path(self) -> Path:
        return self.folder / RUN_FILE

    @property
    def entry_path(self) -> Path:
        """The resolved entry the run trained (every default filled in)."""
        return self.folder / ENTRY_FILE

    @property
    def checkpoints(self) -> Path:
        return self.folder / CHECKPOINTS

    @property
    def last_checkpoint(self) -> Path:
        """Written every few steps and at the end, with the random state: what `--resume` continues."""
        return self.checkpoints / LAST_CHECKPOINT

    @property
    def metrics_csv(self) -> Path:
        return self.folder / METRICS

    @property
    def logs(self) -> Path:
        return self.folder / LOGS

    # ------------------------------------------------------------ run.json

    def read_info(self) -> dict[str, Any]:
        """run.json as it is (any status); {} when missing or unreadable."""
        try:
            return json.loads(self.info_path.read_text())
        except (OSError, ValueError):
            return {}

    @property
    def info(self) -> dict[str, Any]:
        """run.json of a complete run; RunError saying what is missing otherwise."""
        if not self.folder.is_dir():
            raise RunError(f"{self.folder}: no such run folder")
        if not self.info_path.is_file():
            raise RunError(f"{self.folder}: not a complete run (no {RUN_FILE}; was training interrupted?)")
        try:
            info = json.loads(self.info_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise RunError(f"{self.info_path}: unreadable ({e})") from None
        if info.get("status", "complete") != "complete":
            raise RunError(f"{self.folder}: not a complete run (status {info.get('status')!r}; was training "
                           "interrupted?)")
        return info

    @property
    def best_checkpoint(self) -> Path:
        return self.folder / self.info["best_checkpoint"]

    def write_info(self, info: dict[str, Any]) -> None:
        """Replace run.json (under a temporary name, then renamed)."""
        tmp = self.info_path.with_name(f".{RUN_FILE}.partial-{os.getpid()}")
        tmp.write_text(json.dumps(info, indent=1))
        os.replace(tmp, self.info_path)

    def update_info(self, **fields: Any) -> None:
        """Set fields of run.json (e.g. status interrupted); a missing or unreadable file is left alone."""
        with contextlib.suppress(OSError, json.JSONDecodeError):
            info = json.loads(self.info_path.read_text())
            info.update(fields)
            self.write_info(info)

    def start(self, entry: Any, data: str | Path, resumed: bool = False, exist_ok: bool = False) -> None:
        """Create the folder, write the resolved entry and run.json (status running); for a resumed run,
        mark it running again. `exist_ok`: the folder may exist (one per SLURM job)."""
        try:
            if resumed:
                info = json.loads(self.info_path.read_text())
                info.update(status="running", resumed=info.get("resumed", 0))
                self.entry_path.write_text(entry_to_yaml(entry))
                self.write_info(info)
                return
            self.folder.mkdir(parents=True, exist_ok=exist_ok)
            self.entry_path.write_text(entry_to_yaml(entry))
            self.write_info({"entry": entry.slug, "status": "running",
                             "entry_source": str(entry.source) if entry.source else None,
                             "data": str(Path(data).resolve()),
                             "started": datetime.now().isoformat(timespec="seconds")})
        except OSError as e:
            raise OutputError(f"{self.folder}: cannot create run folder ({e.strerror})") from None

    def check_resumable(self) -> dict[str, Any]:
        """run.json of an interrupted run that `last.ckpt` can continue; RunError saying why not."""
        if not self.entry_path.is_file() or not self.info_path.is_file():
            raise RunError(f"{self.folder}: not a run folder (no {ENTRY_FILE} / {RUN_FILE})")
        info = json.loads(self.info_path.read_text())
        if info.get("status") == "complete":
            raise RunError(f"{self.folder}: the run is complete; nothing to resume (train a new run, or --set a "
                           "larger training.max_epochs on a new run initialised from it)")
        if not self.last_checkpoint.is_file():
            raise RunError(f"{self.folder}: no {CHECKPOINTS}/{LAST_CHECKPOINT} to resume from (the run stopped "
                           "before its first checkpoint); start it again")
        return info

    # ------------------------------------------------------------ metrics of a run resumed several times

    def keep_earlier_metrics(self) -> None:
        """Lightning's CSV logger starts a resumed run's file afresh: keep the earlier part beside it."""
        logs = self.logs / METRICS
        if logs.is_file():
            n = len(list(self.logs.glob("metrics.part*.csv")))
            os.replace(logs, logs.with_name(f"metrics.part{n}.csv"))

    def merge_metrics(self) -> Path:
        """`metrics.csv` of the whole run: the parts before each resume (rows up to where the next part
        took over) and the last part, columns united."""
        parts = sorted(self.logs.glob("metrics.part*.csv"), key=lambda p: int(p.stem[len("metrics.part"):]))
        parts.append(self.logs / METRICS)
        tables = []
        for part in parts:
            if part.is_file():
                with part.open(newline="") as f:
                    tables.append(list(csv.DictReader(f)))
        rows: list[dict[str, str]] = []
        for i, table in enumerate(tables):
            if i + 1 < len(tables) and tables[i + 1]:  # the next part redid everything after its first step
                first = min(int(r["step"]) for r in tables[i + 1] if r.get("step", "").isdigit())
                table = [r for r in table if r.get("step", "").isdigit() and int(r["step"]) < first]
            rows += table
        columns = list(dict.fromkeys(k for r in rows for k in r))
        with self.metrics_csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns or ["epoch", "step"])
            writer.writeheader()
            writer.writerows(rows)
        return self.metrics_csv

    # ------------------------------------------------------------ its entry and model

    def entry(self, overrides: list[str] | None = None) -> Any:
        """The run's resolved entry (named after the entry the run trained)."""
        return load_entry(self.entry_path, overrides)

    def load_model(self, direction: str | None = None) -> Any:
        """The trained framework of the run's best checkpoint (see `load_model`)."""
        return load_model(self.best_checkpoint, direction)


def open_run(folder: str | Path) -> RunFolder:
    """A complete run folder (RunError saying what is missing otherwise)."""
    run = RunFolder(folder)
    run.info  # noqa: B018 - raises for anything but a complete run
    return run


def looks_like_run(path: str | Path) -> bool:
    """A checkpoint file or an mmv_zoo run folder (complete or not): not a package or an entry."""
    return RunFolder.looks_like(path)


def find_checkpoint(source: str | Path) -> Path:
    """A checkpoint file, or the best checkpoint of a run folder."""
    p = Path(source)
    if p.is_file():
        return p
    return open_run(p).best_checkpoint


def load_model(source: str | Path, direction: str | None = None) -> Any:
    """The trained framework (eval mode, CPU) from a run folder or a .ckpt file.

    `direction` (a2b or b2a) picks one direction of a framework that has several (a CycleGAN): the
    result then has that direction's `entry` and `inference_model()`. Other frameworks refuse one.
    """
    import torch

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
    entry = validate_entry_data(entry_dict, f"{ckpt_path} (stored entry)")
    kind = entry.mmv.framework
    directions = framework_spec(kind).directions
    if direction is not None and not directions:
        raise RunError(f"{source}: a direction ({direction}) is for CycleGAN runs; this run's framework "
                       f"{kind} translates one way only")
    if direction is not None and direction not in directions:
        raise RunError(f"{source}: direction {direction!r}; valid: {', '.join(directions)}")
    model = framework_class(kind)(entry_dict, slug=ckpt["hyper_parameters"].get("slug"))
    model.load_state_dict(state, strict=True)
    model.eval()
    return model if direction is None else model.for_direction(direction).eval()


def load_im2im_checkpoint(entry: Any, path: Path) -> Any:
    """The entry's framework (eval mode, CPU) with its network's weights from the MMV_Im2Im checkpoint
    `path`; the network is the one `config.mmv_zoo.network` declares, loaded strictly."""
    model = framework_class(entry.mmv.framework)(entry.model_dump(mode="json"), slug=entry.slug)
    try:
        net = model.network()
    except RunError:
        raise RunError(f"{entry.source}: framework {entry.mmv.framework!r} keeps no single network; MMV_Im2Im "
                       "checkpoints load only into such frameworks (fcn, pix2pix)") from None
    kind = entry.mmv.network.kind
    pre = entry.mmv.pretrained
    name = (pre.member if pre is not None and pre.member else None) or Path(path).name
    state = to_network_keys(read_network_state(path, f"{entry.source}: config.mmv_zoo.pretrained ({name})"), kind)
    load_into(net, state, f"{entry.source}: entry {entry.slug!r}: the MMV_Im2Im checkpoint {name} does not fit "
                          f"the entry's network ({kind}; config.mmv_zoo.network must match the network it was "
                          "trained with)")
    return model.eval()


def load_package_weights(entry: Any, package: Path) -> tuple[Any, dict[str, Any]]:
    """The entry's framework (eval mode, CPU) with its inference network's weights from the
    `pytorch_state_dict` of the mmv_zoo package `package` (an entry's shipped package), loaded strictly,
    and the training facts the package recorded (`config.mmv_zoo.run`, as run.json has them)."""
    import io
    import zipfile

    import torch
    import yaml

    where = f"{entry.source}: config.mmv_zoo.pretrained ({Path(package).name})"
    try:
        with zipfile.ZipFile(package) as z:
            rdf = yaml.safe_load(z.read("rdf.yaml"))
            member = ((rdf.get("weights") or {}).get("pytorch_state_dict") or {}).get("source")
            if not isinstance(member, str):
                raise RunError(f"{where}: the package has no pytorch_state_dict weights to load into the "
                               "entry's network (an instance package that outputs labels has TorchScript only); "
                               "export from the trained run instead")
            state = torch.load(io.BytesIO(z.read(member)), map_location="cpu", weights_only=True)
    except (OSError, KeyError, zipfile.BadZipFile, yaml.YAMLError) as e:
        raise RunError(f"{where}: not a readable BioImage.IO package ({type(e).__name__})") from None
    model = framework_class(entry.mmv.framework)(entry.model_dump(mode="json"), slug=entry.slug)
    load_into(model.inference_model(), state, f"{where}: its weights do not fit the entry's network "
                                              f"({entry.mmv.network.kind})")
    run = ((rdf.get("config") or {}).get("mmv_zoo") or {}).get("run")
    return model.eval(), run if isinstance(run, dict) else {}
