"""Verified, cached downloads through pooch, plus the little pooch lacks; Zenodo DOI resolution.

pooch does the caching, transfer and verification: `pooch.retrieve` serves a cached file whose sha256
still matches, else streams it (`pooch.HTTPDownloader`) to a temporary name in its final folder and
gives it its final name only once the sha256 matched. The cache under `cache_dir()/downloads/`:

    <sha256>/<file name>                   a verified file (one copy per content)
    <sha256>/<file name>.extracted/        the archive's extracted content (extract=True)
    url-<hash>.<id>/                       staging of a download whose sha256 is not known yet
    index.json                             trust on first use: url -> sha256 of the first download

This module adds: trust on first use; offline mode (`MMV_ZOO_OFFLINE=1`: pooch gets a downloader that
refuses with a clear message, so only the cache serves); local paths and file:// URLs (a copying
downloader, so they are verified and moved like downloads); one-line DownloadErrors naming the URL;
retries of transient failures only (dropped connection, timeout, HTTP 5xx/408/429) waiting
`BACKOFF_SECONDS * n` before retry n — pooch's `retry_if_failed` also retries 404s and hash mismatches.
A retry starts the file again: there is no byte-range resume. `resolve_doi` reads a Zenodo record
itself: pooch's DOIDownloader asks doi.org and accepts only zenodo.org (no `MMV_ZOO_ZENODO_API`, no
local test server) and knows md5 where a record may list sha256.

pooch (and requests with it) is imported inside the functions that download: importing this is cheap.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import logging
import os
import re
import shutil
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..cache import cache_dir, read_record, sha256_of, write_record
from ..errors import DownloadError
from ._pooch import quiet_pooch
from .archives import is_archive, safe_extract

__all__ = ["DownloadError", "Fetched", "fetch", "recorded_sha256", "resolve_doi", "safe_extract"]

log = logging.getLogger(__name__)

#: Seconds to wait before retry n is `BACKOFF_SECONDS * n` (tests make it small).
BACKOFF_SECONDS = 0.5
_HEADERS = {"User-Agent": "mmv_zoo (+https://github.com/MMV-Lab)", "Accept-Encoding": "identity"}
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_INCOMPLETE_RE = re.compile(r"IncompleteRead\((\d+) bytes read, (\d+) more expected\)")
_ZENODO_DOI_RE = re.compile(r"^10\.5281/zenodo\.(\d+)$", re.IGNORECASE)
_DEFAULT_ZENODO_API = "https://zenodo.org/api"

T = TypeVar("T")
Downloader = Callable[[str, Any, Any], None]  # pooch's protocol: (url, output file or path, pooch)


@dataclass
class Fetched:
    path: Path  # the verified file (or the extracted folder for archives when extract=True)
    sha256: str  # of the downloaded file
    from_cache: bool  # True when no network request (or local copy) was made
    url: str
    trusted_on_first_use: bool  # True when no sha256 was given and this call recorded it


class _Retryable(Exception):
    """A transient failure of one attempt (dropped connection, short read, timeout, 5xx)."""


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _is_offline(offline: bool | None) -> bool:
    if offline is not None:
        return offline
    return os.environ.get("MMV_ZOO_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _downloads() -> Path:
    return cache_dir() / "downloads"


def _normalize_sha256(sha256: str | None, url: str) -> str | None:
    if sha256 is None:
        return None
    value = sha256.strip().lower().removeprefix("sha256:")
    if not _SHA256_RE.match(value):
        raise DownloadError(f"{url}: {sha256!r} is not a sha256 (64 hexadecimal digits)")
    return value


def _local_source(url: str) -> Path | None:
    """The local file a `file://` URL or a plain path points at; None for network URLs."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise DownloadError(f"{url}: file:// URLs on another host are not supported")
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme in ("http", "https"):
        return None
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(url).expanduser()
    raise DownloadError(f"{url}: unsupported URL scheme {parsed.scheme!r} (use http, https, file or a path)")


def _file_name(url: str, local: Path | None) -> str:
    """The name the file is cached under: the last path component (Zenodo's `.../name/content` -> name)."""
    if local is not None:
        name = local.name
    else:
        parts = [p for p in urllib.parse.unquote(urllib.parse.urlparse(url).path).split("/") if p]
        if len(parts) >= 2 and parts[-1] == "content":
            parts = parts[:-1]
        name = parts[-1] if parts else ""
    name = name.replace("\\", "_").strip()
    if name in ("", ".", "..") or name.startswith("."):
        name = f"download{name}" if name not in ("", ".", "..") else "download"
    return name[:200]


# ------------------------------------------------------------------------------ trust on first use


def _index() -> dict[str, str]:
    """The trust-on-first-use record `downloads/index.json`: url -> sha256 of the first download."""
    return {k: v for k, v in read_record("downloads", "index").items() if isinstance(v, str)}


def recorded_sha256(url: str) -> str | None:
    """The sha256 recorded for `url` by a first download without a known hash (trust on first use)."""
    return _index().get(url)


# ---------------------------------------------------------------------------------------------- fetch


def fetch(url: str, sha256: str | None = None, *, extract: bool = False, retries: int = 3,
          timeout: float = 30.0, offline: bool | None = None) -> Fetched:
    """A verified local copy of `url` (http(s), file:// or a path), downloaded once and cached.

    With `sha256` the file must have that hash. Without it the hash of the first download is recorded
    (trust on first use) and later calls require it. `extract=True` also extracts an archive safely
    and returns the extracted folder. `offline=None` reads `MMV_ZOO_OFFLINE` ("1": no network).
    """
    url = str(url)
    expected = _normalize_sha256(sha256, url)
    local = _local_source(url)
    name = _file_name(url, local)
    if extract and not is_archive(name):
        raise DownloadError(f"{url}: cannot extract {name!r}: not a .zip, .tar, .tar.gz or .tgz archive")
    downloads = _downloads()
    recorded = None
    if expected is None and local is not None:
        # A local file may change legitimately: no record, its current content is what is wanted.
        if not local.is_file():
            raise DownloadError(f"{url}: no such file")
        expected = sha256_of(local)
    elif expected is None:
        with contextlib.suppress(DownloadError):  # a damaged record is ignored (and rewritten)
            recorded = _normalize_sha256(_index().get(url), url)
    tofu = expected is None and recorded is None
    want = expected or recorded

    # Without a sha256, a fresh staging folder: pooch would take a file it found there as the download.
    folder = downloads / (want or f"url-{hashlib.sha256(url.encode()).hexdigest()[:24]}.{uuid.uuid4().hex[:8]}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"{url}: cannot create the cache folder {folder}: {_one_line(exc)}") from exc
    if local is not None:
        downloader = _copier(local)
    elif _is_offline(offline):  # pooch calls it only when the cache cannot serve the file
        downloader = _refuse(f"{url} is not in the cache ({downloads / want if want else downloads}) and "
                             f"mmv_zoo is offline ({'MMV_ZOO_OFFLINE=1' if offline is None else 'offline=True'}); "
                             "go online once to download it")
    else:
        downloader = _http(timeout, progressbar=sys.stderr.isatty())
    try:
        got, action = _retrying(url, max(1, int(retries)), lambda: _retrieve(url, want, name, folder, downloader))
        actual = want or sha256_of(got)
        final = downloads / actual / name
        if got != final:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(got, final)
    except ValueError as exc:  # pooch's hash check: the download was deleted
        how = f" (recorded on first use in {downloads / 'index.json'})" if recorded else ""
        got_sha = re.search(r"but got ([0-9a-f]{64})", str(exc))
        if got_sha is None:
            raise DownloadError(f"{url}: {_one_line(exc)}") from exc
        raise DownloadError(f"sha256 mismatch for {url}: expected {want}{how}, got {got_sha.group(1)}; "
                            "the file was not kept") from exc
    except OSError as exc:
        raise DownloadError(f"{url}: cannot write to the cache folder {folder}: {_one_line(exc)}") from exc
    finally:
        for empty in (folder, downloads):  # a failed entry or the emptied staging folder
            with contextlib.suppress(OSError):
                empty.rmdir()
    if tofu:
        write_record("downloads", "index", {**_index(), url: actual})  # atomic; skipped if unwritable
        log.info("trust on first use: recorded sha256 %s for %s", actual, url)
    return _finish(Fetched(final, actual, action == "fetch", url, tofu), extract)


def _retrieve(url: str, sha256: str | None, name: str, folder: Path, downloader: Downloader) -> tuple[Path, str]:
    """One attempt: pooch serves `folder/name` if it has `sha256`, else downloads it there, verifying the
    hash before the file gets its name. Returns the file and pooch's action ("fetch": from the cache)."""
    with quiet_pooch() as pooch:
        known = f"sha256:{sha256}" if sha256 else None
        return pooch.retrieve(url, known_hash=known, fname=name, path=folder, downloader=downloader,
                              processor=lambda path, action, _pooch: (Path(path), action))


def _finish(got: Fetched, extract: bool) -> Fetched:
    if not extract:
        return got
    target = got.path.with_name(got.path.name + ".extracted")
    if not target.is_dir():
        try:
            safe_extract(got.path, target)
        except DownloadError:
            if not target.is_dir():  # another process may have extracted it at the same time
                raise
    got.path = target
    return got


# ----------------------------------------------------------------------------------------- downloaders


def _copier(source: Path) -> Downloader:
    """A pooch downloader for a local file: a copy, verified and moved into place like a download."""
    def copy(url: str, output_file: Any, _pooch: Any) -> None:
        try:
            shutil.copyfile(source, output_file)
        except OSError as exc:
            raise DownloadError(f"{url}: cannot copy {source} into the cache: {_one_line(exc)}") from exc
    return copy


def _refuse(message: str) -> Downloader:
    """A pooch downloader that may not download (offline): a DownloadError with `message`."""
    def refuse(url: str, output_file: Any, _pooch: Any) -> None:
        raise DownloadError(message)
    return refuse


def _http(timeout: float, *, progressbar: bool = False, accept: str = "*/*") -> Downloader:
    """`pooch.HTTPDownloader` (a tqdm bar with `progressbar` when tqdm is installed), its requests
    exceptions sorted into _Retryable and DownloadError."""
    with quiet_pooch() as pooch:
        import requests

        progressbar = progressbar and importlib.util.find_spec("tqdm") is not None
        http = pooch.HTTPDownloader(progressbar=progressbar, chunk_size=1 << 16, timeout=timeout,
                                    headers={**_HEADERS, "Accept": accept})

    def download(url: str, output_file: Any, pooch_: Any) -> None:
        try:
            http(url, output_file, pooch_)
        except requests.HTTPError as exc:
            code, reason = exc.response.status_code, _one_line(exc.response.reason or "")
            if code >= 500 or code in (408, 429):
                raise _Retryable(f"HTTP {code} {reason}") from exc
            raise DownloadError(f"download of {url} failed: HTTP {code} {reason}") from exc
        except requests.exceptions.SSLError as exc:  # a certificate problem does not go away
            raise DownloadError(f"download of {url} failed: {_one_line(exc)}") from exc
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            raise _Retryable(_dropped(exc, output_file)) from exc
        except requests.RequestException as exc:
            raise DownloadError(f"download of {url} failed: {_one_line(exc)}") from exc
    return download


def _dropped(exc: Exception, output_file: Any) -> str:
    """One line on a dropped attempt: "connection closed after N of M bytes", else the root cause."""
    written = os.path.getsize(output_file) if isinstance(output_file, str) and os.path.isfile(output_file) else 0
    short = _INCOMPLETE_RE.search(str(exc))
    if short:  # urllib3 counts the bytes of the failed read only: they were not written yet
        got = written + int(short.group(1))
        return f"connection closed after {got} of {got + int(short.group(2))} bytes"
    cause = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else exc
    cause = getattr(cause, "reason", None) or cause  # urllib3's MaxRetryError -> the refused connection
    return (f"connection lost after {written} bytes: " if written else "") + _one_line(cause)


def _retrying(url: str, attempts: int, attempt: Callable[[], T]) -> T:
    """`attempt()` until it does not raise _Retryable, at most `attempts` times, waiting longer each time."""
    reason = "no attempt made"
    for n in range(1, attempts + 1):
        if n > 1:
            time.sleep(BACKOFF_SECONDS * (n - 1))
        try:
            return attempt()
        except _Retryable as exc:
            reason = str(exc)
            log.info("download of %s: attempt %d/%d failed: %s", url, n, attempts, reason)
    raise DownloadError(f"download of {url} failed after {attempts} attempt{'s' * (attempts > 1)}: {reason}")


# ------------------------------------------------------------------------------------------------ DOI


def resolve_doi(doi: str, *, api: str | None = None) -> list[tuple[str, str | None]]:
    """The files of a Zenodo record by DOI: [(download url, sha256 or None when Zenodo lists md5)]."""
    value = str(doi).strip()
    for prefix in ("https://doi.org/", "http://doi.org/", "https://dx.doi.org/", "doi:"):
        if value.lower().startswith(prefix):
            value = value[len(prefix):]
    match = _ZENODO_DOI_RE.match(value)
    if not match:
        raise DownloadError(f"DOI {doi}: only Zenodo DOIs (10.5281/zenodo.<record>) are supported")
    base = (api or os.environ.get("MMV_ZOO_ZENODO_API") or _DEFAULT_ZENODO_API).rstrip("/")
    url = f"{base}/records/{match.group(1)}"
    if _is_offline(None):
        raise DownloadError(f"DOI {doi}: cannot query {url}: mmv_zoo is offline (MMV_ZOO_OFFLINE=1)")
    record = _get_json(url, f"DOI {doi}")
    files = record.get("files") if isinstance(record, dict) else None
    if isinstance(files, dict):  # newer InvenioRDM shape: {"entries": {name: {...}}}
        entries = files.get("entries")
        files = list(entries.values()) if isinstance(entries, dict) else entries
    if not isinstance(files, list) or not files:
        raise DownloadError(f"DOI {doi}: the Zenodo record {url} lists no files")
    out: list[tuple[str, str | None]] = []
    for item in files:
        if not isinstance(item, dict):
            continue
        links = item.get("links") if isinstance(item.get("links"), dict) else {}
        link = links.get("self") or links.get("content") or links.get("download")
        if not link:
            key = item.get("key") or item.get("filename")
            if not key:
                continue
            link = f"{base}/records/{match.group(1)}/files/{urllib.parse.quote(str(key))}/content"
        checksum = str(item.get("checksum") or "")
        algo, _, digest = checksum.partition(":")
        sha = digest.lower() if algo.lower() == "sha256" and _SHA256_RE.match(digest.lower()) else None
        out.append((str(link), sha))
    if not out:
        raise DownloadError(f"DOI {doi}: the Zenodo record {url} lists no downloadable files")
    return out


def _get_json(url: str, what: str, attempts: int = 3, timeout: float = 30.0) -> object:
    """The JSON document at `url`, read with the downloads' HTTP client and retries."""
    download = _http(timeout, accept="application/json")

    def attempt() -> bytes:
        body = io.BytesIO()
        download(url, body, None)
        return body.getvalue()

    try:
        return json.loads(_retrying(url, attempts, attempt))
    except DownloadError as exc:
        raise DownloadError(f"{what}: {exc}") from None
    except ValueError as exc:
        raise DownloadError(f"{what}: {url} did not return JSON: {_one_line(exc)}") from exc
