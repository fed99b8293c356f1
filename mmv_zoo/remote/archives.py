"""Safe extraction of downloaded archives (.zip, .tar[.gz|.bz2|.xz]) by pooch's Unzip / Untar.

pooch's processors refuse nothing (zipfile silently rewrites `..` and absolute names; Untar filters
tar members only on Python >= 3.12), so every member is checked first: absolute paths, `..`, writing
through a symlink member, links pointing outside, special files refuse the archive before anything
is written. pooch extracts into a temporary sibling folder, renamed into place when complete.
`extract_member` takes one regular file out of an archive (e.g. one checkpoint of a models.zip).
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import shutil
import stat
import tarfile
import uuid
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import DownloadError
from ._pooch import quiet_pooch

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
        _refuse_unsafe(archive, kind)
        _pooch_extract(archive, kind, tmp)
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


def _refuse_unsafe(archive: Path, kind: str) -> None:
    """A DownloadError naming the first member that could land outside the target; nothing is written."""
    if kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            problems = _check_zip(zf)
    else:
        with tarfile.open(archive, "r:*") as tf:
            problems = _check_tar(tf)
    if problems:
        member, why = problems[0]
        raise DownloadError(f"refusing to extract {archive}: member {member!r} {why}")


def _pooch_extract(archive: Path, kind: str, folder: Path, members: list[str] | None = None) -> None:
    """pooch's Unzip / Untar: `members` (all when None) of a checked archive into the new `folder`."""
    with quiet_pooch() as pooch:
        processor = pooch.Unzip if kind == "zip" else pooch.Untar
        folder.mkdir(parents=True)
        # An absolute extract_dir: pooch joins a relative one to the archive's folder.
        processor(members=members, extract_dir=str(folder.absolute()))(str(archive), "download", None)


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


# ------------------------------------------------------------------------------------- one member


class MissingMember(DownloadError):
    """The archive has no regular file of the requested name (the message lists a few it has)."""


def _regular_files(archive: Path, kind: str) -> dict[str, Any]:
    """Normalized name -> zip info / tar member of every regular file of the archive (safe names only)."""
    out: dict[str, Any] = {}
    if kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                norm, why = _member_problem(info.filename, set())
                if not why and not info.is_dir() and not stat.S_ISLNK(info.external_attr >> 16):
                    out[norm] = info
    else:
        with tarfile.open(archive, "r:*") as tf:
            for member in tf.getmembers():
                norm, why = _member_problem(member.name, set())
                if not why and member.isfile():
                    out[norm] = member
    return out


def _suggest(member: str, names: list[str], n: int = 5) -> str:
    """A few existing members: the names closest to `member`, else those in its folder, else the first."""
    base = member.rsplit("/", 1)[-1]
    close = difflib.get_close_matches(member, names, n=n, cutoff=0.5)
    close += [m for m in names if m.rsplit("/", 1)[-1] == base and m not in close]
    folder = member.rsplit("/", 1)[0] + "/" if "/" in member else ""
    close += [m for m in names if folder and m.startswith(folder) and m not in close]
    picked = (close or sorted(names))[:n]
    return ", ".join(picked) + (" ..." if len(names) > len(picked) else "")


def extract_member(archive: Path, member: str, target: Path) -> Path:
    """Extract the regular file `member` of `archive` (.zip or .tar[.gz|.bz2|.xz]) to the file `target`.

    The member name must be a safe relative path; a member that is missing (the error lists a few that
    exist), a folder or a link is a DownloadError, and so is an archive with any unsafe member. pooch
    (`members=`) extracts it into a temporary folder next to `target`; it is moved to `target` when
    complete (zip CRCs checked); on failure nothing is left behind. An existing `target` of the
    member's size is reused.
    """
    archive, target = Path(archive), Path(target)
    norm, why = _member_problem(member, set())
    if why or norm in (".", ""):
        raise DownloadError(f"{archive}: member {member!r} {why or 'is empty'}")
    if not archive.is_file():
        raise DownloadError(f"{archive}: no such archive")
    kind = _archive_kind(archive)
    try:
        files = _regular_files(archive, kind)
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise DownloadError(f"{archive}: unreadable archive: {_one_line(exc)}") from exc
    info = files.get(norm)
    if info is None:
        raise MissingMember(f"{archive.name}: no file {member!r} in the archive ({len(files)} files; "
                            f"e.g. {_suggest(norm, sorted(files))})")
    size = info.file_size if kind == "zip" else info.size
    if target.is_file() and target.stat().st_size == size:
        return target
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    created = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
    try:
        _refuse_unsafe(archive, kind)
        name = info.filename if kind == "zip" else info.name  # as the archive spells it
        _pooch_extract(archive, kind, tmp, [name])
        extracted = tmp.joinpath(*norm.split("/"))
        if not extracted.is_file():  # a name with backslashes stays one name outside Windows
            extracted = tmp / name
        if extracted.stat().st_size != size:
            raise DownloadError(f"{archive}: member {member!r} is truncated "
                                f"({extracted.stat().st_size} of {size} bytes)")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(extracted, target)
    except DownloadError:
        raise
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise DownloadError(f"{archive}: cannot extract {member!r} to {target}: {_one_line(exc)}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not target.exists():
            for folder in created:  # innermost first: only the folders this call made, if left empty
                with contextlib.suppress(OSError):
                    folder.rmdir()
    return target
