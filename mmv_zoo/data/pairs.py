"""Find (source, target) file pairs in a data folder according to the entry's layout, and split them."""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..io.read import image_stem, is_image


@dataclass(frozen=True)
class Pair:
    source: Path
    target: Path
    exclusion: Path | None = None
    """Exclusion (cost) mask: non-zero pixels are taken out of the loss."""

    @property
    def name(self) -> str:
        return image_stem(self.source)


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    return sorted(p for p in folder.iterdir() if is_image(p))


def _strip(stem: str, suffix: str) -> str | None:
    if not suffix:
        return stem
    return stem[: -len(suffix)] if stem.endswith(suffix) else None


def paired_folders(root: Path, layout: Any) -> list[Pair]:
    """Pairs from `root/source` and `root/target`, matched by file name (minus the suffixes)."""
    src_dir, tgt_dir = root / layout.source, root / layout.target
    sources = {k: p for p in _images(src_dir) if (k := _strip(image_stem(p), layout.source_suffix)) is not None}
    targets = {k: p for p in _images(tgt_dir) if (k := _strip(image_stem(p), layout.target_suffix)) is not None}
    if src_dir == tgt_dir:  # one folder holding both: a file is a target if it carries the target suffix
        sources = {k: p for k, p in sources.items() if p not in targets.values()}
    if not sources:
        raise DataError(f"{src_dir}: no images (looked for {', '.join(('.tif', '.png', '.zarr'))} ...)")
    unmatched_src = sorted(set(sources) - set(targets))
    unmatched_tgt = sorted(set(targets) - set(sources))
    if unmatched_src or unmatched_tgt:
        parts = []
        if unmatched_src:
            parts.append(f"no target in {tgt_dir} for: {', '.join(sources[k].name for k in unmatched_src)}")
        if unmatched_tgt:
            parts.append(f"no source in {src_dir} for: {', '.join(targets[k].name for k in unmatched_tgt)}")
        raise DataError(f"{root}: unmatched files ({'; '.join(parts)})")
    masks: dict[str, Path] = {}
    if layout.exclusion:
        mask_dir = root / layout.exclusion
        masks = {k: p for p in _images(mask_dir) if (k := _strip(image_stem(p), layout.source_suffix)) is not None}
        stray = sorted(set(masks) - set(sources))
        if stray:
            raise DataError(f"{mask_dir}: exclusion masks without a source image (data.layout.exclusion): "
                            f"{', '.join(masks[k].name for k in stray[:10])}")
    return [Pair(sources[k], targets[k], masks.get(k)) for k in sorted(sources)]


def csv_pairs(root: Path, layout: Any) -> tuple[list[Pair], list[str] | None]:
    """Pairs listed in a CSV (paths relative to the CSV's folder), with the split column if any."""
    path = root / layout.file
    if not path.is_file():
        raise DataError(f"{path}: no such file (data.layout.file)")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        columns = reader.fieldnames or []
    exclusion = layout.exclusion_column
    needed = [layout.source_column, layout.target_column] + [c for c in (layout.split_column, exclusion) if c]
    missing = [c for c in needed if c not in columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; it has {columns}")
    if not rows:
        raise DataError(f"{path}: no rows")
    pairs, splits, absent = [], [], []
    for i, row in enumerate(rows, start=2):
        src, tgt = path.parent / row[layout.source_column], path.parent / row[layout.target_column]
        mask = path.parent / row[exclusion] if exclusion and row[exclusion].strip() else None
        absent += [f"line {i}: {p}" for p in (src, tgt, mask) if p is not None and not p.exists()]
        pairs.append(Pair(src, tgt, mask))
        if layout.split_column:
            value = row[layout.split_column].strip().lower()
            if value not in ("train", "val"):
                raise DataError(f"{path}: line {i}: {layout.split_column}={value!r}, expected train or val")
            splits.append(value)
    if absent:
        raise DataError(f"{path}: listed files do not exist ({'; '.join(absent[:10])})")
    return pairs, (splits or None)


def find_pairs(root: Path, layout: Any) -> tuple[list[Pair], list[str] | None]:
    if root.is_file():
        raise DataError(f"{root}: is a file; --data takes the folder that holds the training images")
    if not root.is_dir():
        raise DataError(f"{root}: data folder does not exist")
    if layout.layout == "csv":
        return csv_pairs(root, layout)
    return paired_folders(root, layout), None


def split_pairs(root: Path, data: Any) -> tuple[list[Pair], list[Pair]]:
    """Training and validation pairs for the entry's `data` settings."""
    if data.split.kind == "presplit":
        if data.layout.layout == "csv":
            pairs, splits = find_pairs(root, data.layout)
            if splits is None:
                raise DataError(f"{root / data.layout.file}: split kind presplit needs data.layout.split_column")
            train = [p for p, s in zip(pairs, splits, strict=True) if s == "train"]
            val = [p for p, s in zip(pairs, splits, strict=True) if s == "val"]
        else:
            train, _ = find_pairs(root / "train", data.layout)
            val, _ = find_pairs(root / "val", data.layout)
        if not train or not val:
            raise DataError(f"{root}: presplit data needs at least one train and one val pair")
        return train, val
    pairs, _ = find_pairs(root, data.layout)
    if len(pairs) < 2:
        raise DataError(f"{root}: {len(pairs)} pair(s); a random split needs at least 2 (one for validation)")
    order = list(range(len(pairs)))
    random.Random(data.split.seed).shuffle(order)
    n_val = min(len(pairs) - 1, max(1, round(len(pairs) * data.split.val_fraction)))
    val = sorted((pairs[i] for i in order[:n_val]), key=lambda p: p.name)
    train = sorted((pairs[i] for i in order[n_val:]), key=lambda p: p.name)
    return train, val
