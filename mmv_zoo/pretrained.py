"""Pretrained weights of zoo entries: find, fetch and verify the package an entry points at."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import EntryError, RunError


@dataclass
class PretrainedPackage:
    path: Path
    sha256: str
    source: str
    from_cache: bool
    trusted_on_first_use: bool
    local: bool = False
    checked: bool = True
    """False when no sha256 was known to check the file against (a local file without one)."""


def is_doi(source: str) -> bool:
    return source.startswith(("10.", "doi:", "https://doi.org/"))


def _doi(source: str) -> str:
    return source.removeprefix("doi:").removeprefix("https://doi.org/")


def pull_source(source: str, sha256: str | None = None, base: Path | None = None,
                file: str | None = None) -> PretrainedPackage:
    """A package from a local path (relative to `base`), URL or Zenodo DOI, verified and cached."""
    from .cache import sha256_of

    if "://" not in source and not is_doi(source):
        path = (base / source) if base is not None and not Path(source).is_absolute() else Path(source)
        if not path.is_file():
            raise RunError(f"{path}: pretrained package not found")
        digest = sha256_of(path)
        if sha256 is not None and digest != sha256:
            raise RunError(f"{path}: sha256 {digest} does not match the entry's {sha256}; refusing it")
        return PretrainedPackage(path, digest, str(path), False, False, local=True, checked=sha256 is not None)
    from .download import fetch, resolve_doi

    url = source
    if is_doi(source):
        files = resolve_doi(_doi(source))
        if file is not None:
            files = [f for f in files if f[0].rstrip("/").split("/")[-1].split("?")[0] == file or
                     f[0].rstrip("/").endswith(f"/{file}/content")]
        zips = [f for f in files if ".zip" in f[0]] or files
        if len(zips) != 1:
            names = ", ".join(u for u, _ in files[:10])
            raise RunError(f"DOI {source}: {len(zips)} candidate package files ({names}); name one with `file:`")
        url, record_sha = zips[0]
        sha256 = sha256 or record_sha
    got = fetch(url, sha256)
    return PretrainedPackage(got.path, got.sha256, url, got.from_cache, got.trusted_on_first_use)


def entry_package(entry: Any) -> PretrainedPackage:
    """The verified package of an entry with `config.mmv_zoo.pretrained`."""
    pre = entry.mmv.pretrained
    if pre is None:
        raise EntryError(f"{entry.source}: entry {entry.slug!r} has no pretrained weights "
                         f"(config.mmv_zoo.pretrained); train it: mmv-zoo train {entry.slug} --data DIR")
    base = entry.source.parent if entry.source is not None else None
    return pull_source(pre.source, pre.sha256, base, pre.file)
