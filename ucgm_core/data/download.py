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

Modules: the file spec and its names are :mod:`ucgm_core.data.remote`, checksums
:mod:`ucgm_core.data.checksums` and safe extraction :mod:`ucgm_core.data.extract`; this module holds the
transfers (:func:`fetch`) and re-exports their public names (its import path is kept).
"""

from __future__ import annotations

import http.client
import os
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence

from ..io import atomic_write
from .checksums import (
    READ_CHUNK,
    ChecksumError,
    ChecksumRequiredError,
    checksum_hint,
    file_digest,
    record_first_seen,
    verify_file,
)
from .extract import BadArchiveError, UnsafeArchiveError, safe_extract
from .remote import RemoteFile, UnsafeNameError, check_file_name, local_path, name_from_url, resolve_mirror

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
_CHUNK = READ_CHUNK  # bytes per read of a transfer (the tests shrink it to see a cap hit mid-stream)
DEFAULT_MAX_BYTES = 32 * 1024**3  # 32 GiB: the largest paper file (a released XXL checkpoint) is a few GiB
DEFAULT_DEADLINE_S = 12 * 3600.0  # 12 h for one file, all mirrors and retries together


class DownloadError(RuntimeError):
    """All mirrors failed for one file (or its deadline passed); the message lists every attempt and why."""

    def __init__(self, name: str, failures: Sequence[str], expected: str = "", headline: str = "every mirror failed"):
        self.name = name
        self.failures = list(failures)
        lines = [f"could not fetch {name!r}: {headline}{(' (' + expected + ')') if expected else ''}"]
        lines += [f"  - {f}" for f in self.failures] or ["  - no mirrors configured"]
        super().__init__("\n".join(lines))


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
                f"after {seen} bytes"
            )

    def socket_timeout(self) -> float:
        return max(0.001, min(self.timeout, self.remaining()))

    def cap(self, src: str, seen: int, how: str = "sent more than the cap, {} bytes seen") -> None:
        """Raise (permanently for this mirror) when ``seen`` bytes exceed the size cap; ``how`` words it."""
        if self.max_bytes is not None and seen > self.max_bytes:
            raise _Permanent(
                _TooBig(
                    f"{src}: {how.format(seen)}; the size cap is {self.max_bytes} bytes "
                    "(download.max_bytes, --max-bytes)"
                )
            )


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
    path = local_path(src)
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
            raise _Permanent(
                _Refused(
                    f"{req.full_url}: redirect ({code}) to {newurl} refused: {why}; "
                    "expected https -> https (or http -> http(s))"
                )
            )
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


def _try_mirror(
    src: str,
    part: Path,
    spec: RemoteFile,
    limits: _Limits,
    retries: int,
    backoff: float,
    sleep: Callable[[float], None],
    failures: List[str],
) -> Optional[int]:
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
        raise ChecksumRequiredError(
            f"{', '.join(sources) or spec.name}: no sha256 or md5 is configured for "
            f"{spec.name!r}, and an unverified download is refused; " + checksum_hint(spec, dest, sha256_key)
        )
    dest_dir.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        problem = verify_file(dest, spec)
        if problem is None:
            if not verified:
                record_first_seen(dest, spec, sha256_key, say)
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
                    record_first_seen(dest, spec, sha256_key, say)
                return dest
    except _DeadlineExceeded as e:
        part.unlink(missing_ok=True)
        raise DownloadError(spec.name, [*failures, str(e)], expected, headline="deadline passed") from None
    part.unlink(missing_ok=True)
    raise DownloadError(spec.name, failures, expected)


def fetch_all(specs: Iterable[RemoteFile], dest_dir: os.PathLike | str, **kw) -> List[Path]:
    """:func:`fetch` every spec; returns the paths in order."""
    return [fetch(s, dest_dir, **kw) for s in specs]
