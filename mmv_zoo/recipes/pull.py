"""`mmv-zoo data pull ENTRY --out DIR`: download an entry's public data and arrange it into the
entry's layout, following the entry's recipe (`config.mmv_zoo.recipe`, see `settings/recipe.py`).

Downloads go through `download.fetch` (sha256-verified, cached, retried and resumed; trust on first
use when the recipe gives no hash). The steps write into a hidden sibling folder of `--out`, which is
renamed to `--out` only when every step has finished and the result holds pairs in the entry's
layout: an interrupted pull leaves nothing under `--out`, and pulling again reuses the cached
downloads.
"""

from __future__ import annotations

import contextlib
import csv
import fnmatch
import json
import logging
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, DownloadError, EntryError

log = logging.getLogger(__name__)

RECORD = "mmv_zoo_data.json"
"""Written into --out: the entry, the downloads (url, sha256) and the files per folder."""


@dataclass
class PullResult:
    out: Path
    files: dict[str, int]
    """Output folder -> number of image files written."""
    downloads: list[dict[str, Any]] = field(default_factory=list)
    """url, sha256, from_cache, trusted_on_first_use per download used."""
    train: Path | None = None
    """The folder to give `mmv-zoo train --data`."""


def recipe_of(entry: Any) -> Any:
    recipe = entry.mmv.recipe
    if recipe is None:
        raise EntryError(f"{entry.source}: entry {entry.slug!r} has no data recipe (config.mmv_zoo.recipe); "
                         "its README says where its data comes from")
    return recipe


class _Sources:
    """Each download fetched (and extracted) once, on first use."""

    def __init__(self, recipe: Any, what: str, report: Callable[[str], None]) -> None:
        self.recipe, self.what, self.report = recipe, what, report
        self.done: dict[str, tuple[Path, dict[str, Any]]] = {}

    def get(self, name: str) -> Path:
        if name not in self.done:
            self.done[name] = self._fetch(name, self.recipe.downloads[name])
        return self.done[name][0]

    def _fetch(self, name: str, d: Any) -> tuple[Path, dict[str, Any]]:
        from ..remote.archives import is_archive
        from ..remote.download import fetch

        where = f"{self.what}.downloads.{name}"
        self.report(f"fetching {name}: {d.url or f'doi:{d.doi} {d.file}'}" + (f" ({d.size})" if d.size else ""))
        try:
            if d.doi is not None:
                from ..remote.pretrained import _resolve

                url, record_sha = _resolve(d.doi, d.file)
                sha = d.sha256 or record_sha
            else:
                url, sha = d.url, d.sha256
            got = fetch(url, sha, extract=is_archive(url.split("?")[0].removesuffix("/content")))
        except DownloadError as e:
            raise DownloadError(f"{where}: {e}") from None
        info = {"name": name, "url": url, "sha256": got.sha256, "from_cache": got.from_cache,
                "trusted_on_first_use": got.trusted_on_first_use}
        how = ("from the cache" if got.from_cache else "downloaded") + (
            ", sha256 recorded on first use" if got.trusted_on_first_use else ", sha256 verified")
        self.report(f"  {name}: {how} ({got.sha256[:12]}...)")
        return got.path, info

    @property
    def records(self) -> list[dict[str, Any]]:
        return [info for _, info in self.done.values()]


def _members(root: Path, pattern: str) -> list[Path]:
    """Files under an extracted archive (or the downloaded file itself) matching `pattern`."""
    if root.is_file():
        return [root] if fnmatch.fnmatch(root.name, pattern) or pattern in ("*", ".") else []
    return sorted(p for p in root.glob(pattern) if p.is_file() and not p.name.startswith("."))


def write_tiff(path: Path, data: np.ndarray) -> Path:
    """`data` (C, Z, Y, X) as a TIFF: RGB when 3 uint8 channels in 2D, else squeezed ZYX / YX, or CZYX."""
    import tifffile

    c, z = data.shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    if c == 3 and z == 1 and data.dtype == np.uint8:
        tifffile.imwrite(path, np.moveaxis(data[:, 0], 0, -1), photometric="rgb")
    elif c == 1:  # minisblack: tifffile would store a stack of 3 or 4 slices as RGB(A) samples
        tifffile.imwrite(path, data[0, 0] if z == 1 else data[0], photometric="minisblack")
    else:
        tifffile.imwrite(path, data[:, 0] if z == 1 else data, photometric="minisblack",
                         metadata={"axes": "CYX" if z == 1 else "CZYX"})
    return path


def read_czyx(path: Path) -> np.ndarray:
    """The first scene and time point of an image file as (C, Z, Y, X)."""
    from ..io.source import open_image

    with open_image(path) as source:
        return np.asarray(source.read_block(t=0))


def _reduce(data: np.ndarray, channel: int | None, project: str | None, where: str, path: Path) -> np.ndarray:
    if channel is not None:
        if channel >= data.shape[0]:
            raise DataError(f"{path}: has {data.shape[0]} channel(s), {where} asks for channel {channel}")
        data = data[channel:channel + 1]
    if project == "max":
        data = data.max(axis=1, keepdims=True)
    return data


def _files(step: Any, src: Path, out: Path, where: str) -> int:
    from ..io.read import IMAGE_SUFFIXES, image_stem

    paths = _members(src, step.glob)
    if step.limit:
        paths = paths[: step.limit]
    if not paths:
        raise DataError(f"{where}.glob: no file matches {step.glob!r} in the download")
    if step.has_ops():  # crop, grey, time points, names, labels, matching: recipe_ops.py
        from .ops import files_with_ops

        return files_with_ops(step, paths, out, where, read_czyx, write_tiff, _reduce)
    for path in paths:
        stem = image_stem(path)
        if step.strip:
            stem = stem.replace(step.strip, "")
        copy = step.channel is None and step.project is None and path.name.lower().endswith(IMAGE_SUFFIXES)
        if copy:  # keep the file (and its metadata) as it is
            target = out / step.to / (stem + path.name[len(image_stem(path)):])
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        else:
            write_tiff(out / step.to / f"{stem}.tif", _reduce(read_czyx(path), step.channel, step.project, where, path))
    return len(paths)


def _npz(step: Any, src: Path, out: Path, where: str) -> int:
    found = _members(src, step.member) if step.member != "." else [src]
    if not found or found[0].suffix != ".npz":
        raise DataError(f"{where}.member: no .npz file {step.member!r} in the download")
    with np.load(found[0], mmap_mode="r", allow_pickle=False) as arrays:
        missing = [k for k in step.arrays if k not in arrays.files]
        if missing:
            raise DataError(f"{found[0]}: has arrays {arrays.files}, {where}.arrays asks for {missing}")
        counts = {k: arrays[k].shape[0] for k in step.arrays}
        if len(set(counts.values())) != 1:
            raise DataError(f"{found[0]}: the arrays have different sample counts {counts} ({where}.arrays)")
        n = min(next(iter(counts.values())), step.limit or 1 << 62)
        import tifffile

        for key, folder in step.arrays.items():
            (out / folder).mkdir(parents=True, exist_ok=True)
            data = arrays[key]
            for i in range(n):
                sample = np.asarray(data[i])
                if step.channel is not None:
                    if sample.ndim < 3 or step.channel >= sample.shape[0]:
                        raise DataError(f"{found[0]}: {key}[{i}] has shape {sample.shape}; "
                                        f"{where}.channel {step.channel} is not an index of its first axis")
                    sample = sample[step.channel]
                tifffile.imwrite(out / folder / f"{step.name.format(i=i)}.tif", sample)
    return n


def _manifest(step: Any, src: Path, out: Path, where: str, report: Callable[[str], None]) -> int:
    from ..remote.download import fetch

    found = _members(src, "*.csv")
    if len(found) != 1:
        raise DataError(f"{where}.source: the download must be (or hold) one CSV manifest, found {len(found)}")
    needed = [step.path_column, step.name_column, *step.where,
              *(c for c in step.channels.values() if isinstance(c, str))] + ([step.unique] if step.unique else [])
    if step.unlisted is not None:
        unlisted = step.unlisted
        needed += [unlisted.id_column] + ([unlisted.channel] if isinstance(unlisted.channel, str) else [])
    if step.slice is not None:
        cut = step.slice
        needed += [cut.mask_column] + ([cut.mask_channel] if isinstance(cut.mask_channel, str) else [])
    if step.mean_between is not None and isinstance(step.mean_between.channel, str):
        needed.append(step.mean_between.channel)
    if step.dot_mask is not None:
        dot = step.dot_mask
        needed += ([dot.channel] if isinstance(dot.channel, str) else []) + ([dot.times.column] if dot.times else [])

    def keep(row: dict[str, str]) -> bool:
        return all(row[c] in ([v] if isinstance(v, str) else v) for c, v in step.where.items())

    with found[0].open(newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        missing = [c for c in needed if c not in columns]
        if missing:
            raise DataError(f"{found[0]}: no column(s) {missing} ({where}); it has {columns}")
        rows = [r for r in reader if keep(r)]  # filtered while reading: the Allen manifest is 1.7 GB
    listed = _listed_ids(rows, step, found[0], where) if step.unlisted is not None else {}
    if step.unique:
        seen: set[str] = set()
        rows = [r for r in rows if not (r[step.unique] in seen or seen.add(r[step.unique]))]  # first per value
    if step.mean_between is None:  # otherwise the limit counts the rows kept
        rows = rows[: step.limit or None]
    if not rows:
        raise DataError(f"{found[0]}: no row matches {where}.where {step.where}")
    def get(row: dict[str, str], column: str) -> Path:
        path = row[column]
        url = path if "://" in path else (step.base_url or "") + path.lstrip("/")
        if "://" not in url:
            raise DataError(f"{found[0]}: {column}={path!r} is not a URL and {where}.base_url is not set")
        try:
            return fetch(url).path
        except DownloadError as e:
            raise DownloadError(f"{where}: {e}") from None

    kept = 0
    for k, row in enumerate(rows, 1):
        if step.mean_between is not None and step.limit and kept >= step.limit:
            break
        report(f"  row {k}/{len(rows)}: {row[step.path_column].rsplit('/', 1)[-1]}")
        image = get(row, step.path_column)
        data = read_czyx(image)
        if step.mean_between is not None:
            test = step.mean_between
            index = _row_index(row, test.channel, found[0], f"{where}.mean_between.channel")
            mean = float(_reduce(data, index, None, f"{where}.mean_between.channel", image).mean())
            if not test.range[0] <= mean <= test.range[1]:
                report(f"    skipped: mean {mean:.1f} outside {test.range} ({where}.mean_between)")
                continue
        kept += 1
        if step.slice is not None:
            data = _slice_of(step.slice, row, data, image, get, found[0], f"{where}.slice")
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in row[step.name_column])
        for folder, channel in step.channels.items():
            index = _row_index(row, channel, found[0], f"{where}.channels.{folder}")
            reduced = _reduce(data, index, step.project, f"{where}.channels.{folder}", image)
            write_tiff(out / folder / f"{name}.tif", reduced)
        if step.unlisted is not None:
            _write_unlisted(step, row, data, listed[row[step.unique]], out / step.unlisted.to / f"{name}.tif",
                            found[0], f"{where}.unlisted", image)
        if step.dot_mask is not None:
            write_tiff(out / step.dot_mask.to / f"{name}.tif",
                   _dot_mask(step.dot_mask, row, data, image, get, found[0], f"{where}.dot_mask")[None])
    if not kept:
        raise DataError(f"{found[0]}: no row of {where} is kept by mean_between {step.mean_between.range}")
    return kept


def _dot_mask(dot: Any, row: dict[str, str], data: np.ndarray, image: Path, get: Callable[..., Path],
              manifest: Path, where: str) -> np.ndarray:
    """The (Z, Y, X) dot-filter mask of the row (see DotMask), times the `times` labels as uint8."""
    from .ops import dot_mask

    index = _row_index(row, dot.channel, manifest, f"{where}.channel")
    channel = _reduce(data, index, None, f"{where}.channel", image)[0]
    try:
        mask = dot_mask(channel, tuple(dot.scaling), dot.smooth_sigma, dot.log_sigma, dot.cutoff, dot.min_size)
    except ValueError as e:
        raise DataError(f"{image}: {e} ({where}.scaling)") from None
    if dot.times is None:
        return mask
    other = get(row, dot.times.column)
    labels = _reduce(read_czyx(other), dot.times.channel, None, f"{where}.times.channel", other)[0]
    if labels.shape != mask.shape:
        raise DataError(f"{other}: shape {labels.shape} differs from {image}'s {mask.shape} ({where}.times)")
    return mask * labels.astype(np.uint8)  # the notebook's cell segmentation was cast to uint8


def middle_of_foreground(mask: np.ndarray) -> int | None:
    """(first + last Z slice holding a value above 0) // 2 of a (Z, Y, X) mask; None when it is empty."""
    z = np.flatnonzero((np.asarray(mask) > 0).reshape(mask.shape[0], -1).any(axis=1))
    return None if z.size == 0 else int(z[0] + z[-1]) // 2


def _slice_of(cut: Any, row: dict[str, str], data: np.ndarray, image: Path, get: Callable[..., Path],
              manifest: Path, where: str) -> np.ndarray:
    """The (C, 1, Y, X) slice of `data` that `cut` (SliceAt) chooses from the row's mask."""
    mask_file = get(row, cut.mask_column)
    source = data if mask_file == image else read_czyx(mask_file)
    channel = _row_index(row, cut.mask_channel, manifest, f"{where}.mask_channel")
    mask = _reduce(source, channel, None, f"{where}.mask_channel", mask_file)[0]
    if mask.shape[0] != data.shape[1]:
        raise DataError(f"{mask_file}: the mask has {mask.shape[0]} Z slice(s), {image} has {data.shape[1]} ({where})")
    z = middle_of_foreground(mask)
    if z is None:
        raise DataError(f"{mask_file}: channel {channel} has no foreground to choose a slice from ({where})")
    return data[:, z:z + 1]


def _listed_ids(rows: list[dict[str, str]], step: Any, manifest: Path, where: str) -> dict[str, set[int]]:
    """`unique` value -> the object ids (`unlisted.id_column`) its rows list."""
    listed: dict[str, set[int]] = {}
    column = step.unlisted.id_column
    for row in rows:
        value = row[column].strip()
        try:
            listed.setdefault(row[step.unique], set()).add(int(float(value)))
        except ValueError:
            raise DataError(f"{manifest}: {column}={value!r} is not an object id "
                            f"({where}.unlisted.id_column)") from None
    return listed


def _write_unlisted(step: Any, row: dict[str, str], data: np.ndarray, ids: set[int], path: Path,
                    manifest: Path, where: str, image: Path) -> None:
    """0/1 mask of the objects of the row's label channel whose ids are not in `ids` (see UnlistedObjects)."""
    channel = step.unlisted.channel
    index = _row_index(row, channel, manifest, f"{where}.channel")
    labels = _reduce(data, index, None, f"{where}.channel", image)
    mask = (labels > 0) & ~np.isin(labels, sorted(ids))
    if step.project == "max":
        mask = mask.max(axis=1, keepdims=True)
    write_tiff(path, mask.astype(np.uint8))


def _row_index(row: dict[str, str], channel: int | str, manifest: Path, where: str) -> int:
    """A channel given as an index, or as the column holding the row's index."""
    if isinstance(channel, int):
        return channel
    value = row[channel].strip()
    try:
        index = int(float(value))
    except ValueError:
        index = -1
    if index < 0:
        raise DataError(f"{manifest}: {channel}={value!r} is not a channel index ({where})")
    return index


def _split(step: Any, out: Path, where: str) -> int:
    from ..io.read import image_stem, is_image

    stems: dict[str, dict[str, Path]] = {}
    for folder in step.folders:
        if not (out / folder).is_dir():
            raise DataError(f"{where}.folders: {folder!r} was not written by an earlier step")
        stems[folder] = {image_stem(p): p for p in (out / folder).iterdir() if is_image(p)}
    common = sorted(set.intersection(*(set(s) for s in stems.values())))
    if not common:
        raise DataError(f"{where}: the folders {step.folders} share no file names")
    n = step.count if step.count is not None else max(1, round(step.fraction * len(common)))
    if n >= len(common):
        raise DataError(f"{where}: moving {n} of {len(common)} pairs would leave none to train on")
    rng = np.random.default_rng(step.seed)
    chosen = sorted(rng.choice(common, size=n, replace=False).tolist())
    for folder in step.folders:
        (out / step.to / folder).mkdir(parents=True, exist_ok=True)
        for stem in chosen:
            p = stems[folder][stem]
            p.rename(out / step.to / folder / p.name)
    return n


def _check_layout(entry: Any, train: Path) -> None:
    """The pulled folder holds what `mmv-zoo train ENTRY --data train` expects."""
    layout = entry.mmv.data.layout
    if layout.layout == "unpaired_folders":
        from ..data.pairs import _images

        for folder in (layout.source, layout.target):
            if not _images(train / folder):
                raise DataError(f"{train / folder}: the recipe wrote no images here (data.layout)")
        return
    from ..data.loading import check_pair
    from ..data.pairs import find_pairs

    pairs, _ = find_pairs(train, layout)
    check_pair(pairs[0], entry)  # readable, with the entry's dimensionality and channel count


def pull_data(entry: Any, out: Path, *, overwrite: bool = False,
              report: Callable[[str], None] = log.info) -> PullResult:
    """Run the entry's recipe into `out` (see the module docstring)."""
    recipe = recipe_of(entry)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: is a file; --out takes a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DataError(f"{out}: is not empty; choose another --out or pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.parent / f".{out.name}.pulling-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    what = f"{entry.source}: config.mmv_zoo.recipe"
    sources = _Sources(recipe, what, report)
    counts: dict[str, int] = {}
    try:
        for i, step in enumerate(recipe.steps):
            where = f"{what}.steps[{i}] ({step.kind})"
            report(f"step {i + 1}/{len(recipe.steps)}: {step.kind}")
            try:
                if step.kind == "files":
                    counts[step.to] = counts.get(step.to, 0) + _files(step, sources.get(step.source), work, where)
                elif step.kind == "npz":
                    n = _npz(step, sources.get(step.source), work, where)
                    counts.update({folder: counts.get(folder, 0) + n for folder in step.arrays.values()})
                elif step.kind == "manifest":
                    n = _manifest(step, sources.get(step.source), work, where, report)
                    folders = [*step.channels, *([step.unlisted.to] if step.unlisted is not None else []),
                               *([step.dot_mask.to] if step.dot_mask is not None else [])]
                    counts.update({folder: counts.get(folder, 0) + n for folder in folders})
                else:
                    n = _split(step, work, where)
                    for folder in step.folders:
                        counts[folder] -= n
                        counts[f"{step.to}/{folder}"] = counts.get(f"{step.to}/{folder}", 0) + n
            except OSError as e:
                raise DataError(f"{where}: {' '.join(str(e).split())}") from None
        train = work / recipe.train
        try:
            _check_layout(entry, train)
        except DataError as e:
            raise DataError(f"{what}: the result does not fit the entry's data.layout: {e}") from None
        record = {"entry": entry.slug, "recipe": recipe.description, "downloads": sources.records,
                  "files": counts, "train": recipe.train}
        (work / RECORD).write_text(json.dumps(record, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(work)
    return PullResult(out, counts, sources.records, out / recipe.train)
