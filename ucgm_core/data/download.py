"""Mirrored, resumable, checksum-verified downloads and safe archive extraction.

A :class:`RemoteFile` names one file, an ordered list of mirrors and its expected checksums.
:func:`fetch` tries the mirrors in order (each up to ``retries`` times with exponential backoff),
writes into ``<dest>.part`` (resuming an interrupted HTTP transfer with a ``Range`` request),
verifies the checksum and only then renames the file atomically into place.

Mirrors may be ``file://`` URLs, plain local paths or ``http(s)://`` URLs. A mirror ending in ``/``
(or naming an existing local directory) is a base location: the file name is appended to it.

What a download may do is bounded:

* the file lands only in its folder, under a plain file name (:func:`check_file_name`; a name taken from a
  URL is percent-decoded first, so ``..%2Fx`` is refused, not written one folder up);
* a size cap (``max_bytes``, config ``download.max_bytes``) on what one mirror may send;
* an overall deadline (``deadline`` seconds, config ``download.deadline_s``) over all mirrors, retries and
  back-off sleeps, besides the per-read socket ``timeout``;
* a redirect from ``https`` to anything but ``https`` (or to a scheme other than http/https) is refused;
* a file with neither ``sha256`` nor ``md5`` is refused unless ``allow_unverified``: then its first-seen
  sha256 is written next to it (``<name>.sha256``) and the log says which config key to copy it into.

Checksums: ``sha256`` is taken over the **decompressed** content for ``.gz`` files (Debian
re-compresses Fashion-MNIST, so the ``.gz`` bytes differ between mirrors while the IDX bytes do
not) and over the raw bytes otherwise; ``md5`` (optional) is over the raw bytes, as upstream
projects often publish it.

:func:`safe_extract` unpacks tar/zip archives after checking **every** member against a model of the tree the
archive builds (links resolved against the members before them), into a temporary folder renamed into place,
so a refused archive leaves nothing behind. The command-line tool is ``workflow/scripts/download.py``.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import http.client
import os
import re
import shutil
import socket
import stat
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from ..io import atomic_write, atomic_write_bytes

__all__ = [
    "RemoteFile",
    "DownloadError",
    "ChecksumError",
    "ChecksumRequiredError",
    "UnsafeNameError",
    "UnsafeArchiveError",
    "BadArchiveError",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_DEADLINE_S",
    "check_file_name",
    "name_from_url",
    "fetch",
    "fetch_all",
    "file_digest",
    "verify_file",
    "resolve_mirror",
    "safe_extract",
]

USER_AGENT = "ucgm-core-data/0.1 (+python urllib)"
_CHUNK = 1 << 20
DEFAULT_MAX_BYTES = 32 * 1024**3  # 32 GiB: the largest paper file (a released XXL checkpoint) is a few GiB
DEFAULT_DEADLINE_S = 12 * 3600.0  # 12 h for one file, all mirrors and retries together
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+%=@,~-]*")
_NAME_RULE = "a plain file name: letters, digits and _ . + % = @ , ~ -, not starting with '.' or '-'"


# ---------------------------------------------------------------------------------------------
# Specs and errors
# ---------------------------------------------------------------------------------------------


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


class DownloadError(RuntimeError):
    """All mirrors failed for one file (or its deadline passed); the message lists every attempt and why."""

    def __init__(self, name: str, failures: Sequence[str], expected: str = "", headline: str = "every mirror failed"):
        self.name = name
        self.failures = list(failures)
        lines = [f"could not fetch {name!r}: {headline}{(' (' + expected + ')') if expected else ''}"]
        lines += [f"  - {f}" for f in self.failures] or ["  - no mirrors configured"]
        super().__init__("\n".join(lines))


class ChecksumError(ValueError):
    """A file's content does not match its expected checksum."""


class ChecksumRequiredError(ValueError):
    """A file with no configured checksum, and unverified downloads not allowed."""


class UnsafeNameError(ValueError):
    """A download's file name could land outside its folder (separators, ``..``, NUL, leading dot or dash)."""


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the extraction folder, or is not a plain file, folder or link.

    ``archive`` and ``member`` name the archive and the first refused member."""

    def __init__(self, archive: str, member: str, why: str):
        self.archive, self.member = archive, member
        super().__init__(f"{archive}: member {member!r} {why}; nothing was extracted")


class BadArchiveError(ValueError):
    """An archive that cannot be read (not a tar or zip file, truncated, corrupt compression)."""


class _Incomplete(IOError):
    """The server closed the connection before sending the announced number of bytes."""


class _Permanent(Exception):
    """Wraps an error that retrying the same mirror cannot fix (404, missing local file, size cap, redirect)."""

    def __init__(self, err: BaseException):
        super().__init__(str(err))
        self.err = err


class _Refused(ValueError):
    """A mirror refused by policy (a redirect that downgrades https); its message is complete as it is."""


class _TooBig(_Refused):
    """A mirror sent (or announced) more than the size cap."""


class _DeadlineExceeded(Exception):
    """The overall deadline of one file passed; no further attempt is made."""


# ---------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Checksums
# ---------------------------------------------------------------------------------------------


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def file_digest(path: os.PathLike | str, algorithm: str = "sha256", decompress: bool = False) -> str:
    """Hex digest of a file, of its gzip-decompressed content when ``decompress``."""
    h = hashlib.new(algorithm)
    opener = gzip.open if decompress else open
    with opener(path, "rb") as f:  # type: ignore[operator]
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


def verify_file(path: os.PathLike | str, spec: RemoteFile) -> Optional[str]:
    """Check ``path`` against ``spec``'s checksums.

    Returns:
        ``None`` when every given checksum matches, else a description of the mismatch
        (``"sha256 of decompressed content: expected X, got Y"``).
    """
    path = Path(path)
    if spec.sha256:
        decompress = spec.name.endswith(".gz")
        what = "sha256 of decompressed content" if decompress else "sha256"
        if decompress and not _is_gzip(path):
            return f"{what}: expected {spec.sha256}, but the file is not gzip data"
        try:
            got = file_digest(path, "sha256", decompress=decompress)
        except (OSError, EOFError, zlib.error) as e:  # truncated or corrupt gzip stream
            return f"{what}: expected {spec.sha256}, but decompression failed ({e})"
        if got.lower() != spec.sha256.lower():
            return f"{what}: expected {spec.sha256}, got {got}"
    if spec.md5:
        got = file_digest(path, "md5")
        if got.lower() != spec.md5.lower():
            return f"md5: expected {spec.md5}, got {got}"
    return None


# ---------------------------------------------------------------------------------------------
# Transfers
# ---------------------------------------------------------------------------------------------


def resolve_mirror(mirror: str, name: str) -> str:
    """Turn a mirror (base location or full location) into the location of ``name``."""
    if mirror.endswith("/"):
        if "://" in mirror:
            return mirror + urllib.parse.quote(name)
        return os.path.join(mirror, name)
    if "://" not in mirror and os.path.isdir(mirror):
        return os.path.join(mirror, name)
    if mirror.startswith("file://") and os.path.isdir(_local_path(mirror)):
        return mirror.rstrip("/") + "/" + urllib.parse.quote(name)
    return mirror


def _local_path(src: str) -> str:
    if src.startswith("file://"):
        parsed = urllib.parse.urlparse(src)
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"file URL with a remote host is not supported: {src}")
        return urllib.request.url2pathname(parsed.path)
    return src


@dataclass
class _Limits:
    """What one :func:`fetch` may spend: bytes per mirror, seconds overall (``clock`` is injectable for tests)."""

    max_bytes: Optional[int]
    deadline: Optional[float]
    timeout: float
    clock: Callable[[], float] = time.monotonic
    start: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.start = self.clock()

    def remaining(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - (self.clock() - self.start)

    def check(self, src: str, seen: int) -> None:
        """Raise :class:`_DeadlineExceeded` naming ``src`` and the bytes seen once the deadline has passed."""
        if self.remaining() <= 0:
            raise _DeadlineExceeded(
                f"{src}: overall deadline of {self.deadline:g} s (download.deadline_s, --deadline) passed "
                f"after {seen} bytes")

    def socket_timeout(self) -> float:
        return max(0.001, min(self.timeout, self.remaining()))

    def cap(self, src: str, seen: int, how: str = "sent more than the cap, {} bytes seen") -> None:
        """Raise (permanently for this mirror) when ``seen`` bytes exceed the size cap; ``how`` words it."""
        if self.max_bytes is not None and seen > self.max_bytes:
            raise _Permanent(_TooBig(f"{src}: {how.format(seen)}; the size cap is {self.max_bytes} bytes "
                                     "(download.max_bytes, --max-bytes)"))


def _pump(read: Callable[[int], bytes], out, src: str, offset: int, limits: _Limits) -> int:
    """Copy ``read`` into ``out`` until EOF, checking the deadline and the size cap; returns the bytes copied."""
    written = 0
    while True:
        limits.check(src, offset + written)
        try:
            chunk = read(_CHUNK)
        except http.client.IncompleteRead as e:
            out.write(e.partial)
            written += len(e.partial)
            raise _Incomplete(f"connection closed after {offset + written} bytes") from e
        if not chunk:
            return written
        limits.cap(src, offset + written + len(chunk))
        out.write(chunk)
        written += len(chunk)


def _copy_local(src: str, part: Path, limits: _Limits) -> None:
    path = _local_path(src)
    if not os.path.isfile(path):
        raise _Permanent(FileNotFoundError(f"no such file: {path}"))
    limits.cap(src, os.path.getsize(path), how="is {} bytes")
    with open(path, "rb") as f, open(part, "wb") as out:
        _pump(f.read, out, src, 0, limits)


class _NoDowngradeRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http(s), and from https only to https: a checksum-less file must not be served
    over plain HTTP because a server said so."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102 (urllib's signature)
        old, new = urllib.parse.urlparse(req.full_url).scheme, urllib.parse.urlparse(newurl).scheme
        why = ""
        if new not in ("http", "https"):
            why = f"the {new or 'empty'} scheme is not http(s)"
        elif old == "https" and new != "https":
            why = "it downgrades https to http"
        if why:
            if fp is not None:
                fp.close()
            raise _Permanent(_Refused(f"{req.full_url}: redirect ({code}) to {newurl} refused: {why}; "
                                        "expected https -> https (or http -> http(s))"))
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _http_transfer(url: str, part: Path, limits: _Limits) -> int:
    """Download ``url`` into ``part``, resuming from its current size. Returns the resume offset."""
    offset = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    opener = urllib.request.build_opener(_NoDowngradeRedirects)
    try:
        resp = opener.open(req, timeout=limits.socket_timeout())
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing left to send: the partial file is complete
            return offset
        if e.code in (400, 401, 403, 404, 405, 410, 451):
            raise _Permanent(e) from e
        raise
    with resp:
        status = getattr(resp, "status", 200)
        mode = "wb"
        if offset and status == 206:
            content_range = resp.headers.get("Content-Range", "")
            start = content_range.split()[-1].split("-")[0] if content_range else ""
            if start.isdigit() and int(start) == offset:
                mode = "ab"
        if mode == "wb":
            offset = 0  # server ignored the range: start over
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        if expected is not None:
            limits.cap(url, offset + expected, how="announces {} bytes (Content-Length)")
        read = getattr(resp, "read1", resp.read)  # read1: one socket read, so the deadline is checked in between
        with open(part, mode) as f:
            written = _pump(read, f, url, offset, limits)
        if expected is not None and written < expected:
            raise _Incomplete(f"connection closed after {offset + written} of {offset + expected} bytes")
    return offset


def _describe(err: BaseException) -> str:
    if isinstance(err, _Permanent):
        err = err.err
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return f"{type(err.reason).__name__}: {err.reason}"
    if isinstance(err, _Refused):
        return str(err)
    return f"{type(err).__name__}: {err}"


def _checksum_hint(spec: RemoteFile, dest: Path, sha256_key: Optional[str]) -> str:
    where = sha256_key or "the file's sha256 (--sha256 by hand)"
    return (f"set {where}, or allow one unverified download (config download.allow_unverified: true, by hand "
            f"--allow-unverified) to record its first-seen sha256 in {dest}.sha256")


def _record_first_seen(dest: Path, spec: RemoteFile, sha256_key: Optional[str], say: Callable[[str], None]) -> str:
    """Write the sha256 :func:`verify_file` would check (``.gz``: of the content) to ``<dest>.sha256``; say where
    it belongs in the config."""
    digest = file_digest(dest, "sha256", decompress=spec.name.endswith(".gz") and _is_gzip(dest))
    atomic_write_bytes(f"{dest}.sha256", f"{digest}  {spec.name}\n".encode())
    say(f"[download] warning: {spec.name} is NOT verified (download.allow_unverified); its first-seen sha256 is "
        f"{digest} (written to {dest}.sha256): put it in {sha256_key or 'the config entry of this file'} "
        "and set download.allow_unverified back to false")
    return digest


def _try_mirror(src: str, part: Path, spec: RemoteFile, limits: _Limits, retries: int, backoff: float,
                sleep: Callable[[float], None], failures: List[str]) -> Optional[int]:
    """Fetch ``src`` into ``part`` and verify it; returns the resume offset on success, ``None`` to move on."""
    is_http = src.startswith(("http://", "https://"))
    attempt, restarted = 0, False
    while attempt < max(1, retries):
        attempt += 1
        tag = f"{src} (attempt {attempt}/{retries})"
        limits.check(src, part.stat().st_size if part.exists() else 0)
        try:
            if is_http:
                resumed_from = _http_transfer(src, part, limits)
            else:
                resumed_from = 0
                _copy_local(src, part, limits)
        except _Permanent as e:
            failures.append(f"{tag}: {_describe(e)}")
            if isinstance(e.err, _TooBig):
                part.unlink(missing_ok=True)
            return None
        except (OSError, ValueError, http.client.HTTPException, socket.timeout) as e:
            failures.append(f"{tag}: {_describe(e)}")
            if attempt < retries:
                sleep(max(0.0, min(backoff * 2 ** (attempt - 1), limits.remaining())))
            continue
        problem = verify_file(part, spec)
        if problem is None:
            return resumed_from
        part.unlink(missing_ok=True)
        failures.append(f"{tag}: checksum mismatch: {problem}")
        if resumed_from and not restarted:
            restarted = True  # the stale partial may be to blame: once more from scratch
            continue
        return None
    return None


def fetch(
    spec: RemoteFile,
    dest_dir: os.PathLike | str,
    *,
    extra_mirrors: Sequence[str] = (),
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float = 60.0,
    max_bytes: Optional[int] = DEFAULT_MAX_BYTES,
    deadline: Optional[float] = DEFAULT_DEADLINE_S,
    allow_unverified: bool = False,
    sha256_key: Optional[str] = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    log: Optional[Callable[[str], None]] = None,
) -> Path:
    """Fetch ``spec`` into ``dest_dir/spec.name`` and return that path.

    An existing destination that verifies is kept. Each mirror is tried up to ``retries`` times
    (sleeping ``backoff * 2**(attempt-1)`` seconds in between); an interrupted HTTP transfer is
    resumed from ``<dest>.part`` with a ``Range`` request. A checksum mismatch after a resumed
    transfer restarts that mirror from scratch once; otherwise it moves on to the next mirror.
    ``max_bytes`` caps what one mirror may send (``None``: no cap); ``deadline`` bounds the whole call in
    seconds (``None``: none). ``sha256_key`` names where the checksum belongs (for messages).

    Raises:
        UnsafeNameError: ``spec.name`` is not a plain file name.
        ChecksumRequiredError: ``spec`` has no checksum and ``allow_unverified`` is false.
        DownloadError: every mirror failed or the deadline passed; the message names the file, each mirror
            and attempt, why it failed, and expected vs actual checksums.
    """
    say = log or (lambda msg: print(msg, file=sys.stderr))
    sources = spec.sources(extra_mirrors)
    check_file_name(spec.name, ", ".join(sources) or "(no mirror)")
    dest_dir = Path(dest_dir)
    dest, part = dest_dir / spec.name, dest_dir / (spec.name + ".part")
    verified = bool(spec.sha256 or spec.md5)
    if not verified and not allow_unverified:
        raise ChecksumRequiredError(f"{', '.join(sources) or spec.name}: no sha256 or md5 is configured for "
                                    f"{spec.name!r}, and an unverified download is refused; "
                                    + _checksum_hint(spec, dest, sha256_key))
    dest_dir.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        problem = verify_file(dest, spec)
        if problem is None:
            if not verified:
                _record_first_seen(dest, spec, sha256_key, say)
            return dest
        say(f"[download] existing {dest} fails verification ({problem}); fetching again")
        dest.unlink()
    limits = _Limits(max_bytes, deadline, timeout, clock)
    failures: List[str] = []
    expected = ", ".join(
        x for x in (spec.sha256 and f"expected sha256 {spec.sha256}", spec.md5 and f"expected md5 {spec.md5}") if x
    )
    try:
        for src in sources:
            resumed_from = _try_mirror(src, part, spec, limits, retries, backoff, sleep, failures)
            if resumed_from is not None:
                atomic_write(dest, lambda tmp: os.replace(part, tmp))  # fsync, rename, fsync the folder
                say(f"[download] {spec.name} <- {src}" + (f" (resumed at byte {resumed_from})" if resumed_from else ""))
                if not verified:
                    _record_first_seen(dest, spec, sha256_key, say)
                return dest
    except _DeadlineExceeded as e:
        part.unlink(missing_ok=True)
        raise DownloadError(spec.name, [*failures, str(e)], expected, headline="deadline passed") from None
    part.unlink(missing_ok=True)
    raise DownloadError(spec.name, failures, expected)


def fetch_all(specs: Iterable[RemoteFile], dest_dir: os.PathLike | str, **kw) -> List[Path]:
    """:func:`fetch` every spec; returns the paths in order."""
    return [fetch(s, dest_dir, **kw) for s in specs]


# ---------------------------------------------------------------------------------------------
# Safe extraction
# ---------------------------------------------------------------------------------------------

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
                    raise UnsafeArchiveError(self.archive, e.name,
                                             f"is a hard link to {e.link!r}, not an earlier file of the archive")
        self.nodes[where] = e

    def recheck_links(self) -> None:
        """Every symlink must still point inside once the whole tree is built (later links may redirect it)."""
        for where, e in list(self.nodes.items()):
            if e.kind == "symlink":
                self.walk("/".join(where[:-1]) + "/" + e.link, e.name, follow_last=True)


def _tar_entries(tf: tarfile.TarFile) -> List[_Entry]:
    out = []
    for m in tf.getmembers():
        kind = ("file" if m.isfile() else "dir" if m.isdir() else "symlink" if m.issym()
                else "hardlink" if m.islnk() else "other")
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
        raise FileExistsError(f"{dest_p}: the extraction folder of {archive} already exists and is not empty; "
                              "expected a new or empty folder")
    try:
        return _extract_checked(archive, dest_p)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as e:
        raise BadArchiveError(f"{archive}: not a readable tar or zip archive ({type(e).__name__}: {e}); "
                              "nothing was extracted") from None


def _extract_checked(archive: str, dest_p: Path) -> List[Path]:
    """:func:`safe_extract` once ``dest_p`` is known to be new or empty."""
    model = _TreeModel(archive)
    is_zip = zipfile.is_zipfile(archive)
    with (zipfile.ZipFile(archive) if is_zip else tarfile.open(archive, "r:*")) as arc:
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
