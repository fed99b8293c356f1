"""Pretrained weights of zoo entries: find, fetch and verify the file an entry points at.

The file is a BioImage.IO package or an MMV_Im2Im checkpoint, by path, URL or Zenodo DOI, possibly
one `member` of an archive (only that member is extracted, into the cache next to the archive:
`downloads/<archive sha256>/<archive name>.members/<member>`). A DOI is resolved once: the file URL
it led to is kept in the cache (`doi/<key>.json`), so later pulls, and offline use, need no request.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cache import cache_dir, read_record, sha256_of, write_record
from ..errors import DownloadError, EntryError, RunError
from .archives import MissingMember, extract_member
from .download import fetch, resolve_doi


@dataclass
class PretrainedPackage:
    path: Path
    """The weights file: the package, the checkpoint, or the extracted `member` of an archive."""
    sha256: str
    """sha256 of the file fetched (the archive when `member` is set)."""
    source: str
    from_cache: bool
    trusted_on_first_use: bool
    local: bool = False
    checked: bool = True
    """False when no sha256 was known to check the file against (a local file without one)."""
    member: str | None = None
    archive: Path | None = None
    """The verified archive `path` was extracted from (with `member`)."""


def is_doi(source: str) -> bool:
    return source.startswith(("10.", "doi:", "https://doi.org/"))


def _doi(source: str) -> str:
    return source.removeprefix("doi:").removeprefix("https://doi.org/")


def _doi_key(source: str, file: str | None) -> str:
    return hashlib.sha256(f"{_doi(source).lower()}|{file or ''}".encode()).hexdigest()[:24]


def _resolved_doi(source: str, file: str | None) -> dict[str, Any]:
    """What an earlier pull resolved this DOI (and file) to: {url, sha256}; empty when never resolved."""
    return read_record("doi", _doi_key(source, file))


def _resolve(source: str, file: str | None) -> tuple[str, str | None]:
    """The download URL (and sha256 when the record lists one) of a DOI's package file; remembered."""
    files = resolve_doi(_doi(source))
    if file is not None:
        files = [f for f in files if f[0].rstrip("/").split("/")[-1].split("?")[0] == file or
                 f[0].rstrip("/").endswith(f"/{file}/content")]
    zips = [f for f in files if ".zip" in f[0]] or files
    if len(zips) != 1:
        names = ", ".join(u for u, _ in files[:10])
        raise RunError(f"DOI {source}: {len(zips)} candidate package files ({names}); name one with `file:`")
    url, record_sha = zips[0]
    write_record("doi", _doi_key(source, file), {"doi": source, "file": file, "url": url, "sha256": record_sha})
    return url, record_sha


def _fetch_doi(source: str, sha256: str | None, file: str | None) -> tuple[str, Any]:
    """Fetch a DOI's file: from the cache without any request when an earlier pull resolved it."""
    known = _resolved_doi(source, file)
    if isinstance(known.get("url"), str):
        try:
            return known["url"], fetch(known["url"], sha256 or known.get("sha256"), offline=True)
        except DownloadError:
            pass  # not cached (or no longer valid): resolve the DOI again
    url, record_sha = _resolve(source, file)
    return url, fetch(url, sha256 or record_sha)


def recorded_sha256(source: str, file: str | None = None) -> str | None:
    """The sha256 the first pull of a URL or DOI recorded (trust on first use); None if never pulled."""
    from .download import recorded_sha256 as recorded

    url = source if "://" in source and not source.startswith("https://doi.org/") else None
    if is_doi(source):
        url = _resolved_doi(source, file).get("url")
    return recorded(url) if isinstance(url, str) else None


def pull_source(source: str, sha256: str | None = None, base: Path | None = None,
                file: str | None = None, member: str | None = None) -> PretrainedPackage:
    """A package or checkpoint from a local path (relative to `base`), URL or Zenodo DOI, verified and
    cached; with `member`, that file of the archive `source`, extracted into the cache."""
    if "://" not in source and not is_doi(source):
        path = (base / source) if base is not None and not Path(source).is_absolute() else Path(source)
        if not path.is_file():
            raise RunError(f"{path}: pretrained {'archive' if member else 'package'} not found")
        digest = sha256_of(path)
        if sha256 is not None and digest != sha256:
            raise RunError(f"{path}: sha256 {digest} does not match the entry's {sha256}; refusing it")
        got = PretrainedPackage(path, digest, str(path), False, False, local=True, checked=sha256 is not None)
    else:
        if is_doi(source):
            url, fetched = _fetch_doi(source, sha256, file)
        else:
            url, fetched = source, fetch(source, sha256)
        got = PretrainedPackage(fetched.path, fetched.sha256, url, fetched.from_cache,
                                fetched.trusted_on_first_use)
    return _with_member(got, member) if member is not None else got


def _with_member(got: PretrainedPackage, member: str) -> PretrainedPackage:
    """`got` (a verified archive) -> its extracted `member`, cached next to the archive."""
    folder = cache_dir() / "downloads" / got.sha256 / f"{got.path.name}.members"
    got.archive, got.member = got.path, member
    got.path = extract_member(got.path, member, folder.joinpath(*member.split("/")))
    return got


def entry_package(entry: Any) -> PretrainedPackage:
    """The verified weights file of an entry with `config.mmv_zoo.pretrained`."""
    pre = entry.mmv.pretrained
    if pre is None:
        raise EntryError(f"{entry.source}: entry {entry.slug!r} has no pretrained weights "
                         f"(config.mmv_zoo.pretrained); train it: mmv-zoo train {entry.slug} --data DIR")

    base = entry.source.parent if entry.source is not None else None
    try:
        return pull_source(pre.source, pre.sha256, base, pre.file, pre.member)
    except MissingMember as e:
        raise MissingMember(f"{entry.source}: config.mmv_zoo.pretrained.member: {e}") from None
