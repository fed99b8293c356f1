"""Publish a trained run into a zoo entry: its tested package, sha256 and validation metrics."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .entry import RDF_NAME, read_entry_yaml, validate_entry_data
from .errors import EntryError, OutputError
from .run import ENTRY_FILE, open_run


@dataclass
class Published:
    entry: Path
    package: Path
    sha256: str
    created: bool


def publish(run_folder: str | Path, name: str, zoo: Path, sample: Path | None = None,
            formats: tuple[str, ...] = ("torchscript", "pytorch_state_dict")) -> Published:
    """Export `run_folder` into `zoo/<name>/weights/<name>.zip` and write (or update) `zoo/<name>/rdf.yaml`
    so that `config.mmv_zoo.pretrained` points at it with its sha256 and the run's metrics."""
    from .cache import sha256_of
    from .export.package import export_package

    if not name.replace("_", "").replace("-", "").isalnum():
        raise EntryError(f"--entry {name!r}: use letters, digits, _ and - only")
    run = open_run(run_folder)
    folder = Path(zoo) / name
    rdf = folder / RDF_NAME
    created = not rdf.exists()
    data = read_entry_yaml(rdf if rdf.exists() else run.folder / ENTRY_FILE)
    package = folder / "weights" / f"{name}.zip"
    export_package(run.folder, package, sample=sample, formats=formats, overwrite=True)
    digest = sha256_of(package)
    info = run.info
    metrics: dict[str, float] = {}
    if info.get("best_score") is not None:
        metrics[str(info.get("monitor", "best_score"))] = round(float(info["best_score"]), 6)
    data.setdefault("config", {}).setdefault("mmv_zoo", {})["pretrained"] = {
        "source": f"weights/{name}.zip",
        "sha256": digest,
        "metrics": metrics,
        "trained_on": _trained_on(info),
    }
    validate_entry_data(data, f"{rdf} (published)")
    _write_atomic(rdf, yaml.safe_dump(data, sort_keys=False))
    return Published(rdf, package, digest, created)


def _trained_on(info: dict[str, Any]) -> str:
    return (f"{len(info.get('train_files', []))} training and {len(info.get('val_files', []))} validation images, "
            f"{info.get('epochs', '?')} epochs ({info.get('steps', '?')} steps), {info.get('seconds', '?')} s")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
