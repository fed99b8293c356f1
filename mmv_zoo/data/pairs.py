"""Find (source, target) file pairs in a data folder according to the entry's layout, and split them.

A self-supervised layout (`source_folder`) gives pairs without a target; such a pair may stand for one
plane of a stack (`frame`) or one region of a single image (`region`, its train / val parts)."""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..io.read import image_stem, is_image


@dataclass(frozen=True)
class Pair:
    source: Path
    target: Path | None
    """None for a self-supervised image (its own target)."""
    exclusion: Path | None = None
    """Exclusion (cost) mask: non-zero pixels are taken out of the loss."""
    frame: tuple[int, int] | None = None
    """(time point, z plane) of the source read as one 2D image (`data.layout.planes`)."""
    region: tuple[tuple[int, int], ...] | None = None
    """[start, stop) per spatial axis of the source that this pair covers (a single image split in two)."""
    part: str = ""
    """Appended to the name: which plane or region this is."""

    @property
    def name(self) -> str:
        return image_stem(self.source) + self.part


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


def source_images(root: Path, layout: Any, spatial_dims: int) -> list[Pair]:
    """Self-supervised images of `root/source` (no targets); with `planes`, every (t, z) plane of each
    file is one 2D image."""
    from ..io.source import open_image

    files = _images(root / layout.source)
    if not files:
        raise DataError(f"{root / layout.source}: no images (data.layout.source)")
    if not layout.planes:
        return [Pair(f, None) for f in files]
    if spatial_dims != 2:
        raise DataError(f"{root / layout.source}: data.layout.planes cuts stacks into 2D images; the entry is "
                        f"{spatial_dims}D")
    pairs = []
    for f in files:
        info = open_image(f).scene(0)
        if info.T == 1 and info.Z == 1:
            pairs.append(Pair(f, None))
            continue
        pairs += [Pair(f, None, frame=(t, z), part=f"_t{t:03d}_z{z:03d}") for t in range(info.T) for z in range(info.Z)]
    return pairs


def find_pairs(root: Path, layout: Any, spatial_dims: int = 2) -> tuple[list[Pair], list[str] | None]:
    if root.is_file():
        raise DataError(f"{root}: is a file; --data takes the folder that holds the training images")
    if not root.is_dir():
        raise DataError(f"{root}: data folder does not exist")
    if layout.layout == "csv":
        return csv_pairs(root, layout)
    if layout.layout == "source_folder":
        return source_images(root, layout, spatial_dims), None
    return paired_folders(root, layout), None


def split_by_region(pair: Pair, data: Any) -> tuple[Pair, Pair]:
    """One image (self-supervised, or one image with its target) as a training and a validation
    region: the last `val_fraction` of its longest axis (at least one patch) is held back."""
    from ..io.source import open_image

    info = open_image(pair.source).scene(0)
    dims = len(data.patch)
    shape = (info.Y, info.X) if dims == 2 else (info.Z, info.Y, info.X)
    axis = max(range(dims), key=lambda a: shape[a] / data.patch[a])
    n, p = shape[axis], data.patch[axis]
    n_val = max(p, round(n * data.split.val_fraction))
    if n - n_val < p:
        raise DataError(f"{pair.source}: a single image is split by region, but along its longest axis ({n} "
                        f"pixels) it holds no two patches of {p} (data.patch); give more images or a smaller patch")
    whole = [(0, s) for s in shape]
    train = [*whole[:axis], (0, n - n_val), *whole[axis + 1:]]
    val = [*whole[:axis], (n - n_val, n), *whole[axis + 1:]]
    return (replace(pair, region=tuple(train), part="_train_region"),
            replace(pair, region=tuple(val), part="_val_region"))


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
            train, _ = find_pairs(root / "train", data.layout, len(data.patch))
            val, _ = find_pairs(root / "val", data.layout, len(data.patch))
        if not train or not val:
            raise DataError(f"{root}: presplit data needs at least one train and one val pair")
        return train, val
    pairs, _ = find_pairs(root, data.layout, len(data.patch))
    if len(pairs) == 1 and pairs[0].frame is None:  # one image: a training and a validation region
        train_part, val_part = split_by_region(pairs[0], data)
        return [train_part], [val_part]
    if len(pairs) < 2:
        raise DataError(f"{root}: {len(pairs)} pair(s); a random split needs at least 2 (one for validation)")
    order = list(range(len(pairs)))
    random.Random(data.split.seed).shuffle(order)
    n_val = min(len(pairs) - 1, max(1, round(len(pairs) * data.split.val_fraction)))
    val = sorted((pairs[i] for i in order[:n_val]), key=lambda p: p.name)
    train = sorted((pairs[i] for i in order[n_val:]), key=lambda p: p.name)
    return train, val
