"""Safe extraction of downloaded archives (.zip, .tar[.gz|.bz2|.xz]): nothing may land outside the
target folder — absolute paths, `..`, escaping symlinks or hard links are refused before writing."""

from __future__ import annotations

import os
import re
import shutil
import stat
import tarfile
import uuid
import zipfile
from pathlib import Path, PurePosixPath

from .errors import DownloadError

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


# -------------------------------------------------------------------------------------------- extract


def _member_problem(name: str, links: set[str]) -> tuple[str, str]:
    """(normalized name, "") for a safe member name, else (name, why it is refused).

    `links` holds the archive's symlink members: writing through one of them is refused.
    """
    raw = name.replace("\\", "/")
    if raw.startswith("/") or re.match(r"^[A-Za-z]:", raw):
        return name, "is an absolute path"
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    depth = 0
    for part in parts:
        depth += -1 if part == ".." else 1
        if depth < 0:
            return name, "escapes the target folder (..)"
    norm = os.path.normpath("/".join(parts)) if parts else "."
    norm = norm.replace(os.sep, "/")
    prefix = ""
    for part in norm.split("/")[:-1]:
        prefix = f"{prefix}/{part}" if prefix else part
        if prefix in links:
            return name, f"is written through the link {prefix!r}"
    return norm, ""


def _link_escapes(member: str, link: str, *, relative_to_member: bool) -> bool:
    link = link.replace("\\", "/")
    if link.startswith("/") or re.match(r"^[A-Za-z]:", link):
        return True
    base = str(PurePosixPath(member).parent) if relative_to_member else ""
    joined = f"{base}/{link}" if base not in ("", ".") else link
    depth = 0
    for part in joined.split("/"):
        if part in ("", "."):
            continue
        depth += -1 if part == ".." else 1
        if depth < 0:
            return True
    return False


def _link_names(names_and_flags: list[tuple[str, bool]]) -> set[str]:
    """The normalized names of the symlink members (whatever their position in the archive)."""
    out = set()
    for name, is_link in names_and_flags:
        if is_link:
            norm, why = _member_problem(name, set())
            if not why:
                out.add(norm)
    return out


def _check_tar(tar: tarfile.TarFile) -> list[tuple[str, str]]:
    """Problems with a tar archive's members: [(member, why)] (empty when it is safe)."""
    members = tar.getmembers()
    links = _link_names([(m.name, m.issym()) for m in members])
    for member in members:
        norm, why = _member_problem(member.name, links)
        if why:
            return [(member.name, why)]
        if member.issym():
            if _link_escapes(norm, member.linkname, relative_to_member=True):
                return [(member.name, f"is a symlink pointing outside the target ({member.linkname})")]
        elif member.islnk():
            if _link_escapes(norm, member.linkname, relative_to_member=False):
                return [(member.name, f"is a hard link pointing outside the target ({member.linkname})")]
        elif not (member.isfile() or member.isdir()):
            return [(member.name, "is a device, fifo or other special file")]
    return []


def _check_zip(archive: zipfile.ZipFile) -> list[tuple[str, str]]:
    infos = archive.infolist()
    links = _link_names([(i.filename, stat.S_ISLNK(i.external_attr >> 16)) for i in infos])
    for info in infos:
        norm, why = _member_problem(info.filename, links)
        if why:
            return [(info.filename, why)]
        if stat.S_ISLNK(info.external_attr >> 16):
            target = archive.read(info).decode("utf-8", "replace")
            if _link_escapes(norm, target, relative_to_member=True):
                return [(info.filename, f"is a symlink pointing outside the target ({target})")]
    return []


def _archive_kind(archive: Path) -> str:
    name = archive.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if is_archive(name):
        return "tar"
    if zipfile.is_zipfile(archive):
        return "zip"
    if tarfile.is_tarfile(archive):
        return "tar"
    raise DownloadError(f"{archive}: not a .zip, .tar, .tar.gz or .tgz archive")


def safe_extract(archive: Path, target: Path) -> Path:
    """Extract `archive` (.zip or .tar[.gz|.bz2|.xz]) into the new folder `target` and return it.

    Members with absolute paths, with `..` leaving the target, written through a symlink member, or
    symlinks / hard links pointing outside the target are refused (DownloadError naming the archive
    and the member) before anything is written. Extraction goes to a temporary sibling folder that is
    renamed to `target` only when complete; on any failure nothing is left behind.
    """
    archive, target = Path(archive), Path(target)
    if target.exists():
        raise DownloadError(f"{archive}: cannot extract into {target}: it already exists")
    if not archive.is_file():
        raise DownloadError(f"{archive}: no such archive")
    kind = _archive_kind(archive)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                problems = _check_zip(zf)
                if problems:
                    member, why = problems[0]
                    raise DownloadError(f"refusing to extract {archive}: member {member!r} {why}")
                tmp.mkdir(parents=True)
                zf.extractall(tmp)  # zipfile writes a symlink member as a small file, never a link
        else:
            with tarfile.open(archive, "r:*") as tf:
                problems = _check_tar(tf)
                if problems:
                    member, why = problems[0]
                    raise DownloadError(f"refusing to extract {archive}: member {member!r} {why}")
                tmp.mkdir(parents=True)
                if hasattr(tarfile, "data_filter"):  # also checks the real paths while writing
                    tf.extractall(tmp, filter="data")
                else:  # pragma: no cover - Python < 3.11.4
                    tf.extractall(tmp)  # noqa: S202 - members checked above
        _check_inside(tmp, archive)
        os.rename(tmp, target)
    except DownloadError:
        raise
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise DownloadError(f"{archive}: cannot extract into {target}: {_one_line(exc)}") from exc
    finally:
        if tmp.exists() or tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _check_inside(root: Path, archive: Path) -> None:
    """After extraction: every path and link target resolves inside `root` (defence in depth)."""
    real_root = root.resolve()
    for path in root.rglob("*"):
        if path.is_symlink():
            resolved = path.resolve()
            if resolved != real_root and real_root not in resolved.parents:
                member = path.relative_to(root).as_posix()
                raise DownloadError(f"refusing to extract {archive}: member {member!r} "
                                    "is a symlink pointing outside the target")
