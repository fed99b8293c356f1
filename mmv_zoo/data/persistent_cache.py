"""The persistent dataset cache: the deterministic part of loading a pair (read, check, normalize)
stored as `.npy` files that later epochs and runs memory-map, reading only the patches they take.

An entry's key hashes each file's path, size and modification time together with everything that
changes the arrays (normalization, channels, label mode, task, dimensions), so editing a file or a
setting gives a new key and the pair is computed again; unchanged ones are reused."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from ..cache import cache_dir
from ..errors import OutputError
from .dataset import LoadedPair, load_pair
from .pairs import Pair

FORMAT = 1


def cache_root(entry: Any) -> Path:
    """`data.cache.folder`, else `$MMV_ZOO_CACHE/datasets`."""
    folder = entry.mmv.data.cache.folder
    if folder:
        return Path(folder).expanduser()

    return cache_dir() / "datasets"


def _stat(path: Path | None) -> list[Any] | None:
    if path is None:
        return None
    st = Path(path).stat()
    return [str(Path(path).resolve()), st.st_size, st.st_mtime_ns]


def pair_key(pair: Pair, entry: Any) -> str:
    """The cache key of a pair under the entry's loading settings."""
    mmv = entry.mmv
    what = {
        "format": FORMAT,
        "files": [_stat(pair.source), _stat(pair.target), _stat(pair.exclusion)],
        **({"part": [pair.frame, pair.region]} if pair.frame or pair.region else {}),
        "normalization": mmv.data.normalization.model_dump(mode="json"),
        "labels": mmv.data.labels,
        "task": mmv.task,
        "dims": entry.spatial_dims,
        "channels": [entry.in_channels, entry.out_channels],
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]


def _compact_labels(target: np.ndarray) -> np.ndarray:
    if not np.issubdtype(target.dtype, np.integer):
        return target.astype(np.float32, copy=False)
    top = int(target.max()) if target.size else 0
    return target.astype(np.uint8 if top < 256 else np.uint16 if top < 65536 else np.int32)


class PairCache:
    """Pairs loaded through the cache folder `root` (created when the first pair is stored)."""

    def __init__(self, root: Path, entry: Any) -> None:
        self.root = Path(root)
        self.entry = entry
        self.hits = 0
        self.misses = 0

    def folder(self, pair: Pair) -> Path:
        key = pair_key(pair, self.entry)
        return self.root / key[:2] / key

    def cached(self, pair: Pair) -> bool:
        return (self.folder(pair) / "meta.json").is_file()

    def __call__(self, pair: Pair) -> LoadedPair:
        folder = self.folder(pair)
        if not (folder / "meta.json").is_file():
            self.misses += 1
            self._store(folder, load_pair(pair, self.entry))
        else:
            self.hits += 1
        meta = json.loads((folder / "meta.json").read_text())
        arrays = {n: np.load(folder / f"{n}.npy", mmap_mode="r") for n in meta["arrays"]}
        return LoadedPair(meta["name"], arrays["source"], arrays["target"], arrays.get("exclusion"))

    def _store(self, folder: Path, loaded: LoadedPair) -> None:
        tmp = folder.parent / f".{folder.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        try:
            tmp.mkdir(parents=True)
            arrays = {"source": loaded.source.astype(np.float32, copy=False),
                      "target": _compact_labels(loaded.target)}
            if loaded.exclusion is not None:
                arrays["exclusion"] = loaded.exclusion
            for name, a in arrays.items():
                np.save(tmp / f"{name}.npy", np.ascontiguousarray(a))
            (tmp / "meta.json").write_text(json.dumps({"name": loaded.name, "arrays": list(arrays)}))
            try:
                os.rename(tmp, folder)
            except OSError:  # another process stored it first
                if not (folder / "meta.json").is_file():
                    raise
        except OSError as e:
            raise OutputError(f"{self.root}: cannot write the dataset cache (data.cache.folder; "
                              f"{e.strerror or e})") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
