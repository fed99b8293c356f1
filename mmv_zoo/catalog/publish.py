"""Publish a trained run into a zoo entry: its tested package, sha256 and validation metrics."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..entry import RDF_NAME, read_entry_yaml, validate_entry_data
from ..errors import EntryError, OutputError
from ..run import open_run


@dataclass
class Published:
    entry: Path
    package: Path
    sha256: str
    created: bool


def publish(run_folder: str | Path, name: str, zoo: Path, sample: Path | None = None,
            formats: tuple[str, ...] | None = None) -> Published:
    """Export `run_folder` into `zoo/<name>/weights/<name>.zip` and write (or update) `zoo/<name>/rdf.yaml`
    so that `config.mmv_zoo.pretrained` points at it with its sha256 and the run's metrics."""
    from ..cache import sha256_of
    from ..export.package import export_package

    if not name.replace("_", "").replace("-", "").isalnum():
        raise EntryError(f"--entry {name!r}: use letters, digits, _ and - only")
    run = open_run(run_folder)
    folder = Path(zoo) / name
    rdf = folder / RDF_NAME
    created = not rdf.exists()
    data = read_entry_yaml(rdf if rdf.exists() else run.entry_path)
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
    cover = _cover(package, folder)
    if cover is not None and cover not in data.get("covers", []):
        data["covers"] = [cover, *data.get("covers", [])]
    validate_entry_data(data, f"{rdf} (published)")
    text = None if created else _replace_block(rdf.read_text(), data["config"]["mmv_zoo"]["pretrained"])
    if text is not None and cover is not None and "\ncovers:" not in "\n" + text and "\ninputs:" in text:
        text = text.replace("\ninputs:", f"\ncovers: [{cover}]\ninputs:", 1)
    if text is None or yaml.safe_load(text) != data:  # keep the file's own formatting when we can
        text = yaml.safe_dump(data, sort_keys=False)
    _write_atomic(rdf, text)
    return Published(rdf, package, digest, created)


def _cover(package: Path, folder: Path) -> str | None:
    """The package's cover image copied next to the entry's rdf.yaml (its name there), if it has one."""
    import zipfile

    with zipfile.ZipFile(package) as z:
        if "cover.png" not in z.namelist():
            return None
        data = z.read("cover.png")
    tmp = folder / ".cover.png.tmp"
    tmp.write_bytes(data)
    tmp.replace(folder / "cover.png")
    return "cover.png"


def _replace_block(text: str, pretrained: dict[str, Any]) -> str | None:
    """`text` with its `pretrained:` block under `mmv_zoo:` replaced (or added) — the rest untouched.
    None when the file's layout is not the plain block layout this understands."""
    import re

    lines = text.splitlines(keepends=True)

    def block_end(start: int, indent: int) -> int:
        end = start + 1
        while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent):
            end += 1
        while end > start + 1 and not lines[end - 1].strip():
            end -= 1
        return end

    top = next((i for i, ln in enumerate(lines) if re.match(r"^\s*mmv_zoo:\s*$", ln)), None)
    if top is None:
        return None
    top_indent = len(lines[top]) - len(lines[top].lstrip())
    top_end = block_end(top, top_indent)
    old = next((i for i in range(top + 1, top_end) if re.match(r"^\s*pretrained:", lines[i])), None)
    indent = (len(lines[old]) - len(lines[old].lstrip())) if old is not None else top_indent + 2
    dumped = yaml.safe_dump({"pretrained": pretrained}, sort_keys=False, width=100)
    new = "".join(" " * indent + ln + "\n" for ln in dumped.splitlines())
    if old is None:
        if top_end > 0 and not lines[top_end - 1].endswith("\n"):
            lines[top_end - 1] += "\n"
        return "".join(lines[:top_end]) + new + "".join(lines[top_end:])
    return "".join(lines[:old]) + new + "".join(lines[block_end(old, indent):])


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
