"""Where mmv_zoo keeps what it may reuse: `MMV_ZOO_CACHE`, else the platform's user cache folder."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def cache_dir() -> Path:
    env = os.environ.get("MMV_ZOO_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs  # what pooch.os_cache uses, without importing pooch (and requests) here

    return Path(platformdirs.user_cache_dir("mmv_zoo"))


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_record(kind: str, key: str) -> dict[str, Any]:
    """A small JSON record (empty when absent or unreadable)."""
    path = cache_dir() / kind / f"{key}.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_record(kind: str, key: str, data: dict[str, Any]) -> None:
    """Write a record atomically; a cache that cannot be written is skipped, never an error."""
    folder = cache_dir() / kind
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{key}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, folder / f"{key}.json")
    except OSError:
        pass
