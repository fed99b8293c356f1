"""From found pairs to patch datasets: the pre-flight check of every file (fast: headers only when
images are loaded lazily), bad files failing the run or skipped as `data.on_bad_file` says, and the
choice between in-memory, cached and partial loading."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError, OutputError
from ..io.source import open_image
from .dataset import LoadedPair, PatchDataset, load_pair
from .pairs import Pair
from .persistent_cache import PairCache, cache_root


def _header(path: Path, dims: int, role: str) -> tuple[int, tuple[int, ...]]:
    """(channels, spatial shape) of a file from its header, with read_image's checks."""
    info = open_image(path).scene(0)
    if info.T > 1:
        raise DataError(f"{path}: is a time-lapse ({info.T} time points); give single time points")
    if dims == 2 and info.Z > 1:
        raise DataError(f"{path}: is 3D ({info.Z} Z slices) but the entry is 2D")
    if dims == 3 and info.Z == 1:
        raise DataError(f"{path}: is a single 2D plane but the entry is 3D")
    spatial = (info.Y, info.X) if dims == 2 else (info.Z, info.Y, info.X)
    return info.C, spatial


def check_pair(pair: Pair, entry: Any) -> int:
    """Check a pair from the file headers (readable, dimensions, channels, shapes) without reading
    pixels; returns the bytes its cached arrays take."""
    dims = entry.spatial_dims
    if pair.frame is not None:  # one plane of a stack: any Z and T
        info = open_image(pair.source).scene(0)
        c_src, shape = info.C, (info.Y, info.X)
    else:
        c_src, shape = _header(pair.source, dims, "source")
    if c_src != entry.in_channels:
        raise DataError(f"{pair.source}: has {c_src} channel(s) but the entry's inputs[0] takes {entry.in_channels}")
    if pair.target is None:  # a self-supervised image: its region is what is cached
        if pair.region is not None:
            shape = tuple(b - a for a, b in pair.region)
        voxels = 1
        for n in shape:
            voxels *= n
        return voxels * 4 * c_src
    c_tgt, tshape = _header(pair.target, dims, "target")
    if tshape != shape:
        raise DataError(f"{pair.target}: shape {tshape} differs from its source {pair.source.name} {shape}")
    if entry.mmv.task == "segmentation" and c_tgt != 1:
        raise DataError(f"{pair.target}: a label image needs one channel, it has {c_tgt}")
    if entry.mmv.task == "regression" and c_tgt != entry.out_channels:
        raise DataError(f"{pair.target}: has {c_tgt} channel(s) but the entry's outputs[0] takes "
                        f"{entry.out_channels}")
    if pair.exclusion is not None:
        _, mshape = _header(pair.exclusion, dims, "exclusion")
        if mshape != shape:
            raise DataError(f"{pair.exclusion}: exclusion mask shape {mshape} differs from its source "
                            f"{pair.source.name} {shape} (data.layout.exclusion)")
    voxels = 1
    for n in shape:
        voxels *= n
    return voxels * (4 * c_src + 4 * c_tgt + (1 if pair.exclusion else 0))


def bad_files_error(problems: list[str], what: str = "") -> DataError:
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return DataError(f"{len(problems)} bad file(s){what}: " + "; ".join(problems[:5]) + more
                     + " (data.on_bad_file: skip trains without them)")


@dataclass
class PatchSets:
    train_set: PatchDataset
    val_set: PatchDataset
    train_pairs: list[Pair]
    val_pairs: list[Pair]
    skipped: list[str] = field(default_factory=list)
    """`path: reason` of every file left out (data.on_bad_file: skip)."""
    cache: Any = None


def build_patch_sets(train_pairs: list[Pair], val_pairs: list[Pair], entry: Any) -> PatchSets:
    """Check every pair before training and build the training and validation patch datasets."""
    data, training = entry.mmv.data, entry.mmv.training
    lazy = data.cache.enabled or data.partial is not None
    problems: dict[int, str] = {}
    everything = train_pairs + val_pairs
    loaded: list[LoadedPair | Pair] = []
    cache = None
    if lazy:
        cache = PairCache(cache_root(entry), entry) if data.cache.enabled else None
        need = 0
        for i, pair in enumerate(everything):
            try:
                size = check_pair(pair, entry)
                need += 0 if cache is None or cache.cached(pair) else size
            except DataError as e:
                problems[i] = str(e)
        loaded = list(everything)
        if cache is not None and need:
            _check_cache_space(cache.root, need)
    else:
        for i, pair in enumerate(everything):
            try:
                loaded.append(load_pair(pair, entry))
            except DataError as e:
                problems[i] = str(e)
                loaded.append(pair)
    if problems:
        if data.on_bad_file == "fail":
            raise bad_files_error(list(problems.values()))
        if len(problems) == len(everything):
            raise bad_files_error(list(problems.values()), " (every file)")
    keep = [i for i in range(len(everything)) if i not in problems]
    n_train = len(train_pairs)
    train_idx, val_idx = [i for i in keep if i < n_train], [i for i in keep if i >= n_train]
    if not train_idx or not val_idx:
        raise bad_files_error(list(problems.values()), " leaving no " + ("training" if not train_idx else "validation")
                              + " pair")
    if not lazy and entry.mmv.task == "segmentation" and all(int(loaded[i].target.max()) == 0 for i in keep):
        raise DataError(f"{everything[0].target.parent}: no label image has any foreground (all zeros); "
                        "nothing to learn")
    loader = cache if cache is not None else (lambda p: load_pair(p, entry))
    partial = (data.partial.files_per_epoch, data.partial.refresh_every) if data.partial else None
    exclusion = any(p.exclusion is not None for p in everything)
    train_set = PatchDataset([loaded[i] for i in train_idx], data.patch, training.patches_per_image, data.augment,
                             training.seed, loader=loader, partial=partial,
                             foreground_fraction=data.sampling.foreground_fraction, exclusion=exclusion)
    val_set = PatchDataset([loaded[i] for i in val_idx], data.patch, training.val_patches, None,
                           training.seed + 1, loader=loader, exclusion=exclusion)
    return PatchSets(train_set, val_set, [everything[i] for i in train_idx], [everything[i] for i in val_idx],
                     sorted(problems.values()), cache)


def _check_cache_space(root: Path, need: int) -> None:
    existing = root.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if free < need * 1.05:
        raise OutputError(f"{root}: too little free disk space for the dataset cache (data.cache.folder): "
                          f"needs about {need / 2**20:.0f} MiB, {free / 2**20:.0f} MiB free")
