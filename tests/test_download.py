"""Downloads against a real HTTP server on 127.0.0.1 (never another host): verify, cache, retry, extract."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mmv_zoo.remote import download
from mmv_zoo.remote.download import DownloadError, fetch, resolve_doi, safe_extract
from tests.archive_bytes import tar_gz as make_tar
from tests.archive_bytes import zip_bytes as make_zip

PAYLOAD = bytes(range(256)) * 400  # 100 KiB
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Server:
    """A local HTTP server whose routes are plain functions; it counts and records every request."""

    def __init__(self) -> None:
        self.routes: dict[str, Callable[[BaseHTTPRequestHandler], None]] = {}
        self.hits: Counter[str] = Counter()
        self.requests: list[tuple[str, dict[str, str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = self.path.split("?")[0]
                server.hits[path] += 1
                server.requests.append((path, dict(self.headers)))
                route = server.routes.get(path)
                if route is None:
                    self.send_error(404)
                    return
                route(self)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def total(self) -> int:
        return sum(self.hits.values())


def send(handler: BaseHTTPRequestHandler, data: bytes, *, claim: int | None = None, status: int = 200,
         headers: dict[str, str] | None = None, stall: float = 0.0) -> None:
    """Send `data`; with `claim` announce that many bytes (more than sent: the connection drops early)."""
    handler.send_response(status)
    handler.send_header("Content-Length", str(len(data) if claim is None else claim))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    if stall:
        handler.wfile.write(data[: len(data) // 2])
        handler.wfile.flush()
        time.sleep(stall)
        data = data[len(data) // 2:]
    handler.wfile.write(data)
    handler.wfile.flush()
    handler.close_connection = True


def serve_bytes(data: bytes) -> Callable[[BaseHTTPRequestHandler], None]:
    return lambda h: send(h, data)


def files_in(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) if folder.exists() else []


# ------------------------------------------------------------------------------------- 1. good download


def test_good_download_is_verified_cached_and_reused(server, cache):
    server.routes["/files/weights.pt"] = serve_bytes(PAYLOAD)
    url = server.url("/files/weights.pt")

    got = fetch(url, PAYLOAD_SHA)
    assert got.path == cache / "downloads" / PAYLOAD_SHA / "weights.pt"
    assert got.path.read_bytes() == PAYLOAD
    assert (got.sha256, got.from_cache, got.url, got.trusted_on_first_use) == (PAYLOAD_SHA, False, url, False)
    assert server.hits["/files/weights.pt"] == 1
    assert files_in(cache / "downloads") == [PAYLOAD_SHA, f"{PAYLOAD_SHA}/weights.pt"]  # no temp files

    again = fetch(url, PAYLOAD_SHA.upper())  # case of the hash does not matter
    assert again.path == got.path and again.from_cache is True
    assert server.total == 1  # no request the second time


def test_corrupted_cache_file_is_downloaded_again(server, cache):
    server.routes["/files/weights.pt"] = serve_bytes(PAYLOAD)
    got = fetch(server.url("/files/weights.pt"), PAYLOAD_SHA)
    got.path.write_bytes(b"bit rot")
    again = fetch(server.url("/files/weights.pt"), PAYLOAD_SHA)
    assert again.from_cache is False and again.path.read_bytes() == PAYLOAD
    assert server.total == 2


# ---------------------------------------------------------------------------------------- 2. wrong hash


def test_wrong_hash_is_refused_and_nothing_stays_in_the_cache(server, cache):
    server.routes["/files/weights.pt"] = serve_bytes(PAYLOAD)
    url = server.url("/files/weights.pt")
    wrong = "0" * 64
    with pytest.raises(DownloadError) as err:
        fetch(url, wrong)
    message = str(err.value)
    assert url in message and wrong in message and PAYLOAD_SHA in message and "\n" not in message
    assert files_in(cache) == []  # no partial file, no empty folder


def test_bad_hash_string_and_http_errors_are_clear(server, cache):
    with pytest.raises(DownloadError, match="not a sha256"):
        fetch(server.url("/files/x.bin"), "abc")
    with pytest.raises(DownloadError, match=r"/files/missing\.bin failed: HTTP 404"):
        fetch(server.url("/files/missing.bin"), PAYLOAD_SHA)
    assert server.hits["/files/missing.bin"] == 1  # a 404 is not retried
    assert files_in(cache) == []


# ------------------------------------------------------------------------------------------- 3. retries


def test_connection_dropped_mid_file_is_retried(server, cache):
    def drop_first(h):
        if server.hits["/files/flaky.bin"] == 1:
            send(h, PAYLOAD[:10_000], claim=len(PAYLOAD))  # announces 100 KiB, sends 10 KB, closes
        else:
            send(h, PAYLOAD)

    server.routes["/files/flaky.bin"] = drop_first
    got = fetch(server.url("/files/flaky.bin"), PAYLOAD_SHA)
    assert got.path.read_bytes() == PAYLOAD
    assert server.hits["/files/flaky.bin"] == 2
    assert files_in(cache / "downloads") == [PAYLOAD_SHA, f"{PAYLOAD_SHA}/flaky.bin"]


def test_always_dropping_server_gives_a_clean_error_after_retries(server, cache, monkeypatch):
    server.routes["/files/broken.bin"] = lambda h: send(h, PAYLOAD[:5000], claim=len(PAYLOAD))
    url = server.url("/files/broken.bin")
    waits: list[float] = []
    monkeypatch.setattr(download.time, "sleep", waits.append)
    with pytest.raises(DownloadError) as err:
        fetch(url, PAYLOAD_SHA, retries=4)
    message = str(err.value)
    assert url in message and "after 4 attempts" in message and "connection closed after 5000" in message
    assert "\n" not in message
    assert server.hits["/files/broken.bin"] == 4
    assert waits == [download.BACKOFF_SECONDS * n for n in (1, 2, 3)]  # a growing wait before each retry
    assert files_in(cache) == []

    with pytest.raises(DownloadError, match="after 1 attempt:"):  # trust-on-first-use path too
        fetch(url, retries=1)
    assert files_in(cache) == []


def test_retry_after_a_drop_downloads_the_whole_file_again(server, cache):
    """pooch has no byte-range resume: the retry starts the file again, even from a server that could
    resume, and the result is the complete, verified file."""
    headers = {"Accept-Ranges": "bytes", "ETag": '"v1"'}

    def drop_first(h):
        if server.hits["/files/big.bin"] == 1:
            send(h, PAYLOAD[:30_000], claim=len(PAYLOAD), headers=headers)
        else:
            send(h, PAYLOAD, headers=headers)

    server.routes["/files/big.bin"] = drop_first
    got = fetch(server.url("/files/big.bin"), PAYLOAD_SHA)
    assert got.path.read_bytes() == PAYLOAD
    ranges = [headers.get("Range") for path, headers in server.requests]
    assert ranges == [None, None]
    assert files_in(cache / "downloads") == [PAYLOAD_SHA, f"{PAYLOAD_SHA}/big.bin"]


def test_stalled_connection_times_out_and_is_retried(server, cache):
    def stall_first(h):
        send(h, PAYLOAD, stall=1.0 if server.hits["/files/slow.bin"] == 1 else 0.0)

    server.routes["/files/slow.bin"] = stall_first
    got = fetch(server.url("/files/slow.bin"), PAYLOAD_SHA, timeout=0.3)
    assert got.path.read_bytes() == PAYLOAD
    assert server.hits["/files/slow.bin"] == 2


# ------------------------------------------------------------------------------------------- 4. archives


def zip_symlink(name: str, target: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        info = zipfile.ZipInfo(name)
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, target)
    return buffer.getvalue()


GOOD = {"model/rdf.yaml": b"type: model\n", "model/weights.pt": PAYLOAD}
EVIL = {"model/rdf.yaml": b"type: model\n", "model/../../escaped.txt": b"gotcha"}


@pytest.mark.parametrize("name, build", [("good.zip", make_zip), ("good.tar.gz", make_tar)])
def test_good_archive_extracts(server, cache, name, build):
    data = build(GOOD)
    server.routes[f"/files/{name}"] = serve_bytes(data)
    sha = hashlib.sha256(data).hexdigest()

    kept = fetch(server.url(f"/files/{name}"), sha)  # extract=False keeps the archive (a BioImage.IO .zip)
    assert kept.path.is_file() and kept.path.name == name

    got = fetch(server.url(f"/files/{name}"), sha, extract=True)
    assert got.path == cache / "downloads" / sha / f"{name}.extracted"
    assert got.sha256 == sha and got.from_cache is True  # the archive came from the cache
    assert (got.path / "model" / "rdf.yaml").read_bytes() == b"type: model\n"
    assert (got.path / "model" / "weights.pt").read_bytes() == PAYLOAD
    assert files_in(cache / "downloads" / sha) == [name, f"{name}.extracted", f"{name}.extracted/model",
                                                   f"{name}.extracted/model/rdf.yaml",
                                                   f"{name}.extracted/model/weights.pt"]
    assert fetch(server.url(f"/files/{name}"), sha, extract=True).path == got.path
    assert server.total == 1


@pytest.mark.parametrize("name, build", [("evil.zip", make_zip), ("evil.tar.gz", make_tar)])
def test_archive_with_parent_member_is_refused_and_nothing_extracted(server, cache, tmp_path, name, build):
    data = build(EVIL)
    server.routes[f"/files/{name}"] = serve_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    with pytest.raises(DownloadError) as err:
        fetch(server.url(f"/files/{name}"), sha, extract=True)
    message = str(err.value)
    assert name in message and "model/../../escaped.txt" in message and "escapes" in message
    assert files_in(cache / "downloads" / sha) == [name]  # the verified archive, nothing extracted
    assert not list(tmp_path.rglob("escaped.txt"))


def test_safe_extract_refuses_absolute_paths_and_outside_links(tmp_path):
    cases = {
        "abs.tar.gz": (make_tar({"/etc/evil": b"x"}), "absolute path"),
        "sym.tar.gz": (make_tar({"a.txt": b"x"}, {"link": (tarfile.SYMTYPE, "../../outside")}), "symlink"),
        "symabs.tar.gz": (make_tar({}, {"link": (tarfile.SYMTYPE, "/etc/passwd")}), "symlink"),
        "hard.tar.gz": (make_tar({}, {"hard": (tarfile.LNKTYPE, "../outside")}), "hard link"),
        "via.tar.gz": (make_tar({"sub/up/x.txt": b"x"}, {"sub/up": (tarfile.SYMTYPE, "..")}), "through the link"),
        "abs.zip": (make_zip({"/abs.txt": b"x"}), "absolute path"),
        "sym.zip": (zip_symlink("model/link", "../../outside"), "symlink pointing outside"),
    }
    for name, (data, why) in cases.items():
        archive = tmp_path / name
        archive.write_bytes(data)
        target = tmp_path / f"{name}.out"
        with pytest.raises(DownloadError, match=why) as err:
            safe_extract(archive, target)
        assert str(archive) in str(err.value)
        assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(cases)  # no temp folders left

    inside = tmp_path / "inside.tar.gz"
    inside.write_bytes(make_tar({"data/a.txt": b"a"}, {"data/b.txt": (tarfile.SYMTYPE, "a.txt")}))
    out = safe_extract(inside, tmp_path / "inside")
    assert (out / "data" / "b.txt").read_bytes() == b"a" and (out / "data" / "b.txt").is_symlink()


# --------------------------------------------------------------------------------------------- 5. offline


def test_offline_with_a_warm_cache_works_and_makes_no_request(server, cache, monkeypatch):
    server.routes["/files/weights.pt"] = serve_bytes(PAYLOAD)
    url = server.url("/files/weights.pt")
    fetch(url, PAYLOAD_SHA)
    fetch(server.url("/files/tofu.pt").replace("tofu", "weights"), offline=False)  # records url -> sha
    assert server.total == 2

    monkeypatch.setenv("MMV_ZOO_OFFLINE", "1")
    got = fetch(url, PAYLOAD_SHA)
    assert got.from_cache is True and got.path.read_bytes() == PAYLOAD
    assert fetch(url).from_cache is True  # via the trust-on-first-use record
    assert server.total == 2


def test_offline_with_a_cold_cache_says_so(server, cache, monkeypatch):
    server.routes["/files/weights.pt"] = serve_bytes(PAYLOAD)
    url = server.url("/files/weights.pt")
    with pytest.raises(DownloadError) as err:
        fetch(url, PAYLOAD_SHA, offline=True)
    message = str(err.value)
    assert url in message and "not in the cache" in message and "offline" in message
    assert str(cache / "downloads" / PAYLOAD_SHA) in message

    monkeypatch.setenv("MMV_ZOO_OFFLINE", "1")
    with pytest.raises(DownloadError, match="not in the cache .* offline"):
        fetch(url)
    assert server.total == 0
    assert files_in(cache) == []


# ------------------------------------------------------------------------------------ 6. trust on first use


def test_trust_on_first_use_records_the_hash_and_reuses_the_file(server, cache):
    server.routes["/files/weights.pt"] = serve_bytes(PAYLOAD)
    url = server.url("/files/weights.pt")

    first = fetch(url)
    assert first.trusted_on_first_use is True and first.from_cache is False and first.sha256 == PAYLOAD_SHA
    assert first.path == cache / "downloads" / PAYLOAD_SHA / "weights.pt"
    assert json.loads((cache / "downloads" / "index.json").read_text()) == {url: PAYLOAD_SHA}
    assert files_in(cache / "downloads") == [PAYLOAD_SHA, f"{PAYLOAD_SHA}/weights.pt", "index.json"]

    second = fetch(url)
    assert second.path == first.path and second.from_cache is True and second.trusted_on_first_use is False
    assert server.total == 1

    # The upstream file changes and the cache is lost: the recorded hash refuses the new content.
    server.routes["/files/weights.pt"] = serve_bytes(PAYLOAD[::-1])
    os.remove(first.path)
    with pytest.raises(DownloadError, match=f"expected {PAYLOAD_SHA} \\(recorded on first use"):
        fetch(url)


def test_local_paths_and_file_urls_are_copied_and_verified(cache, tmp_path):
    source = tmp_path / "weights.pt"
    source.write_bytes(PAYLOAD)
    got = fetch(str(source), PAYLOAD_SHA)
    assert got.path == cache / "downloads" / PAYLOAD_SHA / "weights.pt" and got.path.read_bytes() == PAYLOAD
    assert source.read_bytes() == PAYLOAD  # input untouched
    assert fetch(source.as_uri(), PAYLOAD_SHA).from_cache is True
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        fetch(source.as_uri(), "1" * 64)
    with pytest.raises(DownloadError, match="no such file"):
        fetch(str(tmp_path / "missing.pt"))

    source.write_bytes(b"edited")  # a local file without sha256 is taken as it is now, never recorded
    edited = fetch(str(source), offline=True)
    assert edited.path.read_bytes() == b"edited" and edited.trusted_on_first_use is False
    assert not (cache / "downloads" / "index.json").exists()


# ----------------------------------------------------------------------------------------------- 7. DOI


def test_resolve_zenodo_doi_against_a_fake_api(server, cache, monkeypatch):
    package = make_zip(GOOD)
    sha = hashlib.sha256(package).hexdigest()
    record = {"files": [
        {"key": "model.zip", "links": {"self": server.url("/files/model.zip")},
         "checksum": "md5:" + hashlib.md5(package).hexdigest()},
        {"key": "cover.png", "links": {"self": server.url("/files/cover.png")}, "checksum": "sha256:" + "a" * 64},
    ]}
    server.routes["/api/records/10034416"] = lambda h: send(h, json.dumps(record).encode(),
                                                             headers={"Content-Type": "application/json"})
    server.routes["/files/model.zip"] = serve_bytes(package)
    api = server.url("/api")

    files = resolve_doi("10.5281/zenodo.10034416", api=api)
    assert files == [(server.url("/files/model.zip"), None), (server.url("/files/cover.png"), "a" * 64)]

    monkeypatch.setenv("MMV_ZOO_ZENODO_API", api)
    assert resolve_doi("https://doi.org/10.5281/zenodo.10034416") == files
    assert server.hits["/api/records/10034416"] == 2

    got = fetch(files[0][0], files[0][1])  # md5 only: trust on first use
    assert got.sha256 == sha and got.trusted_on_first_use is True and got.path.name == "model.zip"

    with pytest.raises(DownloadError, match="HTTP 404"):
        resolve_doi("10.5281/zenodo.999")


def test_resolve_doi_refuses_other_dois_and_offline(server, cache, monkeypatch):
    with pytest.raises(DownloadError, match="only Zenodo DOIs"):
        resolve_doi("10.1038/s41592-019-0582-9", api=server.url("/api"))
    monkeypatch.setenv("MMV_ZOO_OFFLINE", "1")
    with pytest.raises(DownloadError, match="offline"):
        resolve_doi("10.5281/zenodo.10034416", api=server.url("/api"))
    assert server.total == 0


def test_zenodo_content_urls_are_cached_under_the_file_name(server, cache):
    server.routes["/api/records/5/files/model.zip/content"] = serve_bytes(PAYLOAD)
    got = fetch(server.url("/api/records/5/files/model.zip/content"), PAYLOAD_SHA)
    assert got.path.name == "model.zip"
