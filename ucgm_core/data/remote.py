"""Where a download comes from and what it may be called: :class:`RemoteFile`, its mirrors and its file name.

A file lands only in its folder, under a plain file name (:func:`check_file_name`; a name taken from a URL is
percent-decoded first, so ``..%2Fx`` is refused, not written one folder up). Mirrors may be ``file://`` URLs,
plain local paths or ``http(s)://`` URLs; one ending in ``/`` (or naming an existing local directory) is a base
location, to which the file name is appended (:func:`resolve_mirror`).
"""

from __future__ import annotations

import os
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

__all__ = ["RemoteFile", "UnsafeNameError", "check_file_name", "name_from_url", "resolve_mirror", "local_path"]


_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+%=@,~-]*")
_NAME_RULE = "a plain file name: letters, digits and _ . + % = @ , ~ -, not starting with '.' or '-'"


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file.

    Attributes:
        name: file name on disk (and appended to base-location mirrors); a plain name (:func:`check_file_name`).
        mirrors: ordered mirrors; base locations end with ``/``.
        sha256: hex sha256 of the decompressed content if ``name`` ends in ``.gz``, else of the
            raw file. ``None`` skips this check.
        md5: optional hex md5 of the raw file (as published upstream; mirror-specific for .gz).
    """

    name: str
    mirrors: Tuple[str, ...]
    sha256: Optional[str] = None
    md5: Optional[str] = None

    def sources(self, extra_mirrors: Sequence[str] = ()) -> List[str]:
        """Concrete source locations, ``extra_mirrors`` first, then :attr:`mirrors`."""
        return [resolve_mirror(m, self.name) for m in (*extra_mirrors, *self.mirrors)]


class UnsafeNameError(ValueError):
    """A download's file name could land outside its folder (separators, ``..``, NUL, leading dot or dash)."""


def check_file_name(name: str, source: str) -> str:
    """Return ``name`` if it is a plain file name, else raise :class:`UnsafeNameError` naming ``source``.

    A download is written to ``<folder>/<name>``: a separator, ``..``, a NUL byte or a hidden/option-like name
    (leading ``.`` or ``-``) could put it elsewhere or confuse a later command, so they are refused, not fixed.
    """
    why = ""
    if not name:
        why = "it is empty"
    elif "\x00" in name:
        why = "it contains a NUL byte"
    elif "/" in name or "\\" in name:
        why = "it contains a path separator"
    elif name[0] in ".-":
        why = f"it starts with {name[0]!r}"
    elif len(name.encode("utf-8", "surrogatepass")) > 255:
        why = "it is longer than 255 bytes"
    elif not _SAFE_NAME.fullmatch(name):
        why = "it contains other characters"
    if why:
        raise UnsafeNameError(f"{source}: file name {name!r} is refused ({why}); expected {_NAME_RULE}")
    return name


def name_from_url(url: str) -> str:
    """The file name a URL or path ends with, percent-decoded and checked by :func:`check_file_name`."""
    path = urllib.parse.urlparse(url).path if "://" in url else url
    return check_file_name(urllib.parse.unquote(path.rsplit("/", 1)[-1]), url)


def resolve_mirror(mirror: str, name: str) -> str:
    """Turn a mirror (base location or full location) into the location of ``name``."""
    if mirror.endswith("/"):
        if "://" in mirror:
            return mirror + urllib.parse.quote(name)
        return os.path.join(mirror, name)
    if "://" not in mirror and os.path.isdir(mirror):
        return os.path.join(mirror, name)
    if mirror.startswith("file://") and os.path.isdir(local_path(mirror)):
        return mirror.rstrip("/") + "/" + urllib.parse.quote(name)
    return mirror


def local_path(src: str) -> str:
    """The local file a ``file://`` URL or plain path names (a ``file://`` URL with a remote host is refused)."""
    if src.startswith("file://"):
        parsed = urllib.parse.urlparse(src)
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"file URL with a remote host is not supported: {src}")
        return urllib.request.url2pathname(parsed.path)
    return src
