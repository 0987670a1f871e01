"""Safe extraction of downloaded tar and zip archives.

:func:`safe_extract` unpacks tar/zip archives after checking **every** member against a model of the tree the
archive builds (links resolved against the members before them), into a temporary folder renamed into place,
so a refused archive leaves nothing behind.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

__all__ = ["UnsafeArchiveError", "BadArchiveError", "safe_extract"]


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the extraction folder, or is not a plain file, folder or link.

    ``archive`` and ``member`` name the archive and the first refused member."""

    def __init__(self, archive: str, member: str, why: str):
        self.archive, self.member = archive, member
        super().__init__(f"{archive}: member {member!r} {why}; nothing was extracted")


class BadArchiveError(ValueError):
    """An archive that cannot be read (not a tar or zip file, truncated, corrupt compression)."""


_MAX_LINK_HOPS = 40  # as Linux's MAXSYMLINKS


@dataclass
class _Entry:
    """One archive member, whatever the format: ``kind`` is file, dir, symlink, hardlink or other."""

    name: str
    kind: str
    link: str = ""


class _TreeModel:
    """The tree an archive builds, member by member, with links resolved as the OS would resolve them.

    Validating against this model (not the names alone) catches chains such as ``a -> .``, ``a/b -> ..``,
    ``a/b/x``, whose every name looks harmless but whose last member lands one folder up.
    """

    def __init__(self, archive: str):
        self.archive = archive
        self.nodes: Dict[Tuple[str, ...], _Entry] = {}

    def walk(self, path: str, member: str, follow_last: bool) -> Tuple[str, ...]:
        """Resolve ``path`` (relative to the root) through the links seen so far; refuse leaving the root."""
        todo, stack, hops = [c for c in path.split("/")], [], 0
        while todo:
            part = todo.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if not stack:
                    raise UnsafeArchiveError(self.archive, member, "would be extracted outside the target folder")
                stack.pop()
                continue
            stack.append(part)
            node = self.nodes.get(tuple(stack))
            if node is not None and node.kind == "symlink" and (todo or follow_last):
                hops += 1
                if hops > _MAX_LINK_HOPS:
                    raise UnsafeArchiveError(self.archive, member, "goes through a symlink loop")
                stack.pop()
                todo = node.link.split("/") + todo
            elif node is not None and node.kind != "dir" and todo:
                raise UnsafeArchiveError(self.archive, member, f"uses the non-folder {'/'.join(stack)!r} as a folder")
        return tuple(stack)

    def add(self, e: _Entry) -> None:
        """Check one member against the members before it, then record it."""
        if "\x00" in e.name or not e.name.strip("/"):
            raise UnsafeArchiveError(self.archive, e.name, "has an empty name or a NUL byte")
        if e.name.startswith("/") or re.match(r"^[A-Za-z]:", e.name):
            raise UnsafeArchiveError(self.archive, e.name, "has an absolute path")
        if ".." in e.name.split("/"):
            raise UnsafeArchiveError(self.archive, e.name, "has a '..' component")
        if e.kind == "other":
            raise UnsafeArchiveError(self.archive, e.name, "is a device, fifo or other special file; refused")
        where = self.walk(e.name, e.name, follow_last=False)
        if not where:
            if e.kind == "dir":
                return  # "." or "./": the root itself
            raise UnsafeArchiveError(self.archive, e.name, "would replace the target folder itself")
        for k in range(1, len(where)):  # folders made on the way (tar needs no entry for them)
            self.nodes.setdefault(where[:k], _Entry("/".join(where[:k]), "dir"))
        old = self.nodes.get(where)
        if old is not None and not (old.kind == e.kind == "dir"):
            raise UnsafeArchiveError(self.archive, e.name, f"replaces the earlier {old.kind} {'/'.join(where)!r}")
        if e.kind in ("symlink", "hardlink"):
            if e.link.startswith("/") or re.match(r"^[A-Za-z]:", e.link) or "\x00" in e.link:
                raise UnsafeArchiveError(self.archive, e.name, f"is a link to the absolute path {e.link!r}")
            base = "/".join(where[:-1]) if e.kind == "symlink" else ""  # hard links are relative to the root
            target = self.walk(f"{base}/{e.link}", e.name, follow_last=True)
            if e.kind == "hardlink":
                node = self.nodes.get(target)
                if node is None or node.kind != "file":
                    raise UnsafeArchiveError(
                        self.archive, e.name, f"is a hard link to {e.link!r}, not an earlier file of the archive"
                    )
        self.nodes[where] = e

    def recheck_links(self) -> None:
        """Every symlink must still point inside once the whole tree is built (later links may redirect it)."""
        for where, e in list(self.nodes.items()):
            if e.kind == "symlink":
                self.walk("/".join(where[:-1]) + "/" + e.link, e.name, follow_last=True)


def _tar_entries(tf: tarfile.TarFile) -> List[_Entry]:
    out = []
    for m in tf.getmembers():
        kind = (
            "file"
            if m.isfile()
            else "dir"
            if m.isdir()
            else "symlink"
            if m.issym()
            else "hardlink"
            if m.islnk()
            else "other"
        )
        out.append(_Entry(m.name.replace("\\", "/"), kind, m.linkname.replace("\\", "/")))
    return out


def _zip_entries(zf: zipfile.ZipFile) -> List[_Entry]:
    out = []
    for info in zf.infolist():
        mode = info.external_attr >> 16
        name = info.filename.replace("\\", "/")
        if stat.S_ISLNK(mode):
            out.append(_Entry(name, "symlink", zf.read(info).decode("utf-8", "replace").replace("\\", "/")))
        elif info.is_dir():
            out.append(_Entry(name, "dir"))
        elif stat.S_IFMT(mode) and not stat.S_ISREG(mode):  # zips often hold permission bits only: a file
            out.append(_Entry(name, "other"))
        else:
            out.append(_Entry(name, "file"))
    return out


def _plain_member(m: tarfile.TarInfo) -> tarfile.TarInfo:
    """A copy without set-uid/set-gid/sticky bits, world-writability or foreign owners (what the ``data`` filter
    does on Pythons that have it; checked members need no more)."""
    m = copy.copy(m)
    m.mode = (m.mode & 0o755) | (0o700 if m.isdir() else 0o600)
    m.uid, m.gid, m.uname, m.gname = os.getuid() if hasattr(os, "getuid") else 0, 0, "", ""
    return m


def _extract_tar(tf: tarfile.TarFile, members: List[tarfile.TarInfo], root: str, archive: str) -> None:
    kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    filter_error = getattr(tarfile, "FilterError", None)
    try:
        tf.extractall(root, members=[_plain_member(m) for m in members], **kwargs)
    except Exception as e:  # the data filter, as a second line: should never fire after our checks
        if filter_error is not None and isinstance(e, filter_error):
            raise UnsafeArchiveError(archive, getattr(getattr(e, "tarinfo", None), "name", "?"), str(e)) from None
        raise


def safe_extract(archive: os.PathLike | str, dest: os.PathLike | str) -> List[Path]:
    """Extract a tar (any compression) or zip archive into ``dest``; returns the extracted paths.

    Every member is checked before anything is written (:class:`_TreeModel`), on every Python (with or without
    tarfile's ``data`` filter). The archive is unpacked into a temporary folder next to ``dest`` that is renamed
    into place whole, so a refused or failed extraction leaves nothing behind. ``dest`` must not exist or be an
    empty folder.

    Raises:
        UnsafeArchiveError: naming the archive and the first member with an absolute path, a ``..`` escape, a
            path or link leading outside ``dest`` (also through earlier links), a hard link to anything but an
            earlier file, a duplicate, or a device/fifo.
        BadArchiveError: the archive cannot be read (also part-way: nothing is left then either).
        FileExistsError: ``dest`` exists and is not an empty folder.
    """
    archive = str(archive)
    dest_p = Path(dest)
    if dest_p.exists() and (not dest_p.is_dir() or any(dest_p.iterdir())):
        raise FileExistsError(
            f"{dest_p}: the extraction folder of {archive} already exists and is not empty; "
            "expected a new or empty folder"
        )
    try:
        return _extract_checked(archive, dest_p)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as e:
        raise BadArchiveError(
            f"{archive}: not a readable tar or zip archive ({type(e).__name__}: {e}); nothing was extracted"
        ) from None


def _extract_checked(archive: str, dest_p: Path) -> List[Path]:
    """:func:`safe_extract` once ``dest_p`` is known to be new or empty."""
    model = _TreeModel(archive)
    is_zip = zipfile.is_zipfile(archive)
    with zipfile.ZipFile(archive) if is_zip else tarfile.open(archive, "r:*") as arc:
        entries = _zip_entries(arc) if is_zip else _tar_entries(arc)
        for e in entries:
            model.add(e)
        model.recheck_links()
        dest_p.parent.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{dest_p.name}.", suffix=".extract", dir=dest_p.parent)
        try:
            if is_zip:
                arc.extractall(tmp)  # Quirk: zipfile writes symlink members as small files holding the target
            else:
                _extract_tar(arc, arc.getmembers(), tmp, archive)
            os.chmod(tmp, 0o755)  # mkdtemp makes it private
            if dest_p.exists():
                dest_p.rmdir()  # empty (checked above)
            os.replace(tmp, dest_p)
        finally:
            if os.path.exists(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
    return [dest_p / e.name for e in entries]
