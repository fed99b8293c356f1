"""Verified, cached, retried downloads; safe archive extraction; Zenodo DOI resolution.

Cache layout (under `cache_dir()/downloads/`):

    <sha256>/<file name>                   a verified file, stored under its final name only after its
                                           sha256 matched (content addressed: one copy per content)
    <sha256>/<file name>.extracted/        the archive's extracted content (extract=True)
    <url-hash>/                            transient staging folder of a download whose sha256 is not
                                           known yet (trust on first use); removed once the file moved
    index.json                             trust-on-first-use record: url -> sha256

Downloads are written to a temporary name in the folder they end up in, verified, then renamed with
`os.replace`; on any failure the temporary file and any folder left empty are removed. A dropped
connection (short read, reset, timeout, 5xx) is retried; when the server supports byte ranges and
identifies the content (ETag / Last-Modified) the retry resumes, otherwise it restarts the file.

Only the standard library is imported here (downloads use urllib), so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..cache import cache_dir, sha256_of
from ..errors import DownloadError
from .archives import is_archive, safe_extract

__all__ = ["DownloadError", "Fetched", "fetch", "recorded_sha256", "resolve_doi", "safe_extract"]

log = logging.getLogger(__name__)

#: Seconds to wait before retry n is `BACKOFF_SECONDS * n` (tests make it small).
BACKOFF_SECONDS = 0.5
_CHUNK = 1 << 20
_USER_AGENT = "mmv_zoo (+https://github.com/MMV-Lab)"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_ZENODO_DOI_RE = re.compile(r"^10\.5281/zenodo\.(\d+)$", re.IGNORECASE)
_DEFAULT_ZENODO_API = "https://zenodo.org/api"


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


def _url_key(url: str) -> str:
    return "url-" + hashlib.sha256(url.encode()).hexdigest()[:24]


def _index_path() -> Path:
    return _downloads() / "index.json"


def _read_index() -> dict[str, str]:
    try:
        data = json.loads(_index_path().read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}


def recorded_sha256(url: str) -> str | None:
    """The sha256 recorded for `url` by a first download without a known hash (trust on first use)."""
    return _read_index().get(url)


def _record_index(url: str, sha256: str) -> None:
    """Record url -> sha256 atomically (a cache that cannot be written only loses the record)."""
    path = _index_path()
    data = _read_index()
    data[url] = sha256
    tmp = path.with_name(f".index.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("could not record the sha256 of %s in %s: %s", url, path, exc)
        with contextlib.suppress(OSError):
            tmp.unlink()


def _remove_empty(*folders: Path) -> None:
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _cached_ok(path: Path, sha256: str) -> bool:
    """A cached file that still has its hash (a corrupted one is removed so it is fetched again)."""
    if not path.is_file():
        return False
    if sha256_of(path) == sha256:
        return True
    log.warning("cached file %s no longer matches its sha256 %s; removing it", path, sha256)
    with contextlib.suppress(OSError):
        path.unlink()
    return False


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
            recorded = _normalize_sha256(_read_index().get(url), url)
    tofu = expected is None and recorded is None
    want = expected or recorded

    if want is not None:
        cached = downloads / want / name
        if _cached_ok(cached, want):
            return _finish(Fetched(cached, want, True, url, False), extract)

    if local is None and _is_offline(offline):
        where = downloads / want if want is not None else downloads
        why = "MMV_ZOO_OFFLINE=1" if offline is None else "offline=True"
        raise DownloadError(f"{url} is not in the cache ({where}) and mmv_zoo is offline ({why}); "
                            "go online once to download it")

    folder = downloads / (want if want is not None else _url_key(url))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"{url}: cannot create the cache folder {folder}: {_one_line(exc)}") from exc
    tmp = folder / f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part"
    try:
        if local is not None:
            actual = _copy_local(local, tmp, url)
        else:
            actual = _download(url, tmp, max(1, int(retries)), timeout)
        if want is not None and actual != want:
            how = " (recorded on first use in " + str(_index_path()) + ")" if recorded else ""
            raise DownloadError(f"sha256 mismatch for {url}: expected {want}{how}, got {actual}; "
                                "the file was not kept")
        final_folder = downloads / actual
        final_folder.mkdir(parents=True, exist_ok=True)
        final = final_folder / name
        os.replace(tmp, final)
    except OSError as exc:
        raise DownloadError(f"{url}: cannot write to the cache folder {folder}: {_one_line(exc)}") from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
        _remove_empty(folder, downloads)  # a failed entry or the emptied staging folder
    if tofu:
        _record_index(url, actual)
        log.info("trust on first use: recorded sha256 %s for %s", actual, url)
    return _finish(Fetched(final, actual, False, url, tofu), extract)


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


def _copy_local(source: Path, tmp: Path, url: str) -> str:
    if not source.is_file():
        raise DownloadError(f"{url}: no such file")
    digest = hashlib.sha256()
    try:
        with source.open("rb") as src, tmp.open("wb") as dst:
            while block := src.read(_CHUNK):
                digest.update(block)
                dst.write(block)
    except OSError as exc:
        raise DownloadError(f"{url}: cannot copy {source} into the cache: {_one_line(exc)}") from exc
    return digest.hexdigest()


@dataclass
class _Resume:
    """What the previous attempt learned about the server: can the next attempt resume?"""

    validator: str | None = None  # strong ETag or Last-Modified: the content the partial file holds
    ranges: bool = False  # the server accepts byte ranges

    def offset(self, tmp: Path) -> int:
        if not (self.validator and self.ranges):
            return 0
        try:
            return tmp.stat().st_size
        except OSError:
            return 0


_NETWORK_ERRORS = (http.client.HTTPException, ConnectionError, TimeoutError, ssl.SSLError)


def _download(url: str, tmp: Path, attempts: int, timeout: float) -> str:
    """Download `url` into `tmp` with retries; returns the sha256 of the complete file."""
    resume = _Resume()
    reason = "no attempt made"
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            time.sleep(BACKOFF_SECONDS * (attempt - 1))
        try:
            _attempt(url, tmp, resume, timeout)
            return sha256_of(tmp)
        except _Retryable as exc:
            reason = _one_line(exc)
            log.info("download of %s: attempt %d/%d failed: %s", url, attempt, attempts, reason)
    raise DownloadError(f"download of {url} failed after {attempts} attempt{'s' * (attempts > 1)}: {reason}")


def _attempt(url: str, tmp: Path, resume: _Resume, timeout: float) -> None:
    """One request into `tmp`: appended when the server honours the range request, else rewritten."""
    offset = resume.offset(tmp)
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
        headers["If-Range"] = resume.validator or ""
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset > 0:  # the partial file is no use: restart
            resume.validator = None
            raise _Retryable("HTTP 416 for a range request; restarting") from exc
        if exc.code >= 500 or exc.code in (408, 429):
            raise _Retryable(f"HTTP {exc.code} {_one_line(exc.reason)}") from exc
        raise DownloadError(f"download of {url} failed: HTTP {exc.code} {_one_line(exc.reason)}") from exc
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLCertVerificationError):
            raise DownloadError(f"download of {url} failed: {_one_line(exc.reason)}") from exc
        raise _Retryable(_one_line(exc.reason)) from exc
    except _NETWORK_ERRORS as exc:
        raise _Retryable(f"{type(exc).__name__}: {_one_line(exc)}") from exc

    with response:
        validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
        append = False
        if response.status == 206:
            match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != offset or offset == 0:
                resume.validator = None
                raise _Retryable("the server answered with an unexpected range; restarting")
            append = True
        elif validator and validator.startswith("W/"):
            validator = None  # a weak ETag does not identify the bytes
        resume.validator = validator if not append else resume.validator
        resume.ranges = append or response.headers.get("Accept-Ranges", "").lower() == "bytes"
        length = response.headers.get("Content-Length", "")
        expected = int(length) if length.isdigit() else None
        received = 0
        with tmp.open("ab" if append else "wb") as out:
            while True:
                try:
                    block = response.read(_CHUNK)
                except _NETWORK_ERRORS as exc:
                    raise _Retryable(f"connection lost after {received} bytes: "
                                     f"{type(exc).__name__}: {_one_line(exc)}") from exc
                if not block:
                    break
                out.write(block)
                received += len(block)
        if expected is not None and received < expected:
            raise _Retryable(f"connection closed after {received} of {expected} bytes")


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
    headers = {"User-Agent": _USER_AGENT, "Accept": "application/json"}
    reason = ""
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            time.sleep(BACKOFF_SECONDS * (attempt - 1))
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code >= 500 or exc.code == 429:
                reason = f"HTTP {exc.code} {_one_line(exc.reason)}"
                continue
            raise DownloadError(f"{what}: {url} answered HTTP {exc.code} {_one_line(exc.reason)}") from exc
        except urllib.error.URLError as exc:
            reason = _one_line(exc.reason)
            continue
        except _NETWORK_ERRORS as exc:
            reason = f"{type(exc).__name__}: {_one_line(exc)}"
            continue
        try:
            return json.loads(body)
        except ValueError as exc:
            raise DownloadError(f"{what}: {url} did not return JSON: {_one_line(exc)}") from exc
    raise DownloadError(f"{what}: {url} failed after {attempts} attempts: {reason}")
