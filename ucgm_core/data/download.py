"""Mirrored, resumable, checksum-verified downloads and safe archive extraction.

A :class:`RemoteFile` names one file, an ordered list of mirrors and its expected checksums.
:func:`fetch` tries the mirrors in order (each up to ``retries`` times with exponential backoff),
writes into ``<dest>.part`` (resuming an interrupted HTTP transfer with a ``Range`` request),
verifies the checksum and only then renames the file atomically into place.

Mirrors may be ``file://`` URLs, plain local paths or ``http(s)://`` URLs. A mirror ending in ``/``
(or naming an existing local directory) is a base location: the file name is appended to it.

Checksums: ``sha256`` is taken over the **decompressed** content for ``.gz`` files (Debian
re-compresses Fashion-MNIST, so the ``.gz`` bytes differ between mirrors while the IDX bytes do
not) and over the raw bytes otherwise; ``md5`` (optional) is over the raw bytes, as upstream
projects often publish it.

:func:`safe_extract` unpacks tar/zip archives, refusing any member that would land outside the
target folder (absolute names, ``..``, links pointing outside, device files).

CLI::

    python -m ucgm_core.data.download --dataset fashion_mnist --out-dir resources/raw/fashion_mnist
    python -m ucgm_core.data.download --url URL [--url URL2 ...] --name FILE --sha256 HEX --out-dir DIR
    python -m ucgm_core.data.download --extract ARCHIVE --out-dir DIR
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import os
import shutil
import socket
import stat
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

__all__ = [
    "RemoteFile",
    "DownloadError",
    "ChecksumError",
    "UnsafeArchiveError",
    "fetch",
    "fetch_all",
    "file_digest",
    "verify_file",
    "resolve_mirror",
    "safe_extract",
]

USER_AGENT = "ucgm-core-data/0.1 (+python urllib)"
_CHUNK = 1 << 20


# ---------------------------------------------------------------------------------------------
# Specs and errors
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file.

    Attributes:
        name: file name on disk (and appended to base-location mirrors).
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
    """All mirrors failed for one file; the message lists every attempt and why it failed."""

    def __init__(self, name: str, failures: Sequence[str], expected: str = ""):
        self.name = name
        self.failures = list(failures)
        lines = [f"could not fetch {name!r}: every mirror failed{(' (' + expected + ')') if expected else ''}"]
        lines += [f"  - {f}" for f in self.failures] or ["  - no mirrors configured"]
        super().__init__("\n".join(lines))


class ChecksumError(ValueError):
    """A file's content does not match its expected checksum."""


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the extraction folder."""


class _Incomplete(IOError):
    """The server closed the connection before sending the announced number of bytes."""


class _Permanent(Exception):
    """Wraps an error that retrying the same mirror cannot fix (404, missing local file)."""

    def __init__(self, err: BaseException):
        super().__init__(str(err))
        self.err = err


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


def _copy_local(src: str, part: Path) -> None:
    path = _local_path(src)
    if not os.path.isfile(path):
        raise _Permanent(FileNotFoundError(f"no such file: {path}"))
    shutil.copyfile(path, part)


def _http_transfer(url: str, part: Path, timeout: float) -> int:
    """Download ``url`` into ``part``, resuming from its current size. Returns the resume offset."""
    offset = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
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
        written = 0
        with open(part, mode) as f:
            while True:
                try:
                    chunk = resp.read(_CHUNK)
                except http.client.IncompleteRead as e:
                    f.write(e.partial)
                    written += len(e.partial)
                    raise _Incomplete(f"connection closed after {offset + written} bytes") from e
                if not chunk:
                    break
                f.write(chunk)
                written += len(chunk)
        if expected is not None and written < expected:
            raise _Incomplete(
                f"connection closed after {offset + written} of {offset + expected} bytes"
            )
    return offset


def _describe(err: BaseException) -> str:
    if isinstance(err, _Permanent):
        err = err.err
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return f"{type(err.reason).__name__}: {err.reason}"
    return f"{type(err).__name__}: {err}"


def fetch(
    spec: RemoteFile,
    dest_dir: os.PathLike | str,
    *,
    extra_mirrors: Sequence[str] = (),
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
    log: Optional[Callable[[str], None]] = None,
) -> Path:
    """Fetch ``spec`` into ``dest_dir/spec.name`` and return that path.

    An existing destination that verifies is kept. Each mirror is tried up to ``retries`` times
    (sleeping ``backoff * 2**(attempt-1)`` seconds in between); an interrupted HTTP transfer is
    resumed from ``<dest>.part`` with a ``Range`` request. A checksum mismatch after a resumed
    transfer restarts that mirror from scratch once; otherwise it moves on to the next mirror.

    Raises:
        DownloadError: every mirror failed; the message names the file, each mirror and attempt,
            why it failed, and expected vs actual checksums.
    """
    say = log or (lambda msg: print(msg, file=sys.stderr))
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / spec.name
    part = dest_dir / (spec.name + ".part")
    if dest.exists():
        problem = verify_file(dest, spec)
        if problem is None:
            return dest
        say(f"[download] existing {dest} fails verification ({problem}); fetching again")
        dest.unlink()
    if not (spec.sha256 or spec.md5):
        say(f"[download] warning: no checksum configured for {spec.name}; it is not verified")

    failures: List[str] = []
    for src in spec.sources(extra_mirrors):
        is_http = src.startswith(("http://", "https://"))
        attempt = 0
        restarted = False
        while attempt < max(1, retries):
            attempt += 1
            tag = f"{src} (attempt {attempt}/{retries})"
            try:
                if is_http:
                    resumed_from = _http_transfer(src, part, timeout)
                else:
                    resumed_from = 0
                    _copy_local(src, part)
            except _Permanent as e:
                failures.append(f"{tag}: {_describe(e)}")
                break
            except (OSError, ValueError, http.client.HTTPException, socket.timeout) as e:
                failures.append(f"{tag}: {_describe(e)}")
                if attempt < retries:
                    sleep(backoff * 2 ** (attempt - 1))
                continue
            problem = verify_file(part, spec)
            if problem is None:
                os.replace(part, dest)
                say(f"[download] {spec.name} <- {src}" + (f" (resumed at byte {resumed_from})" if resumed_from else ""))
                return dest
            part.unlink(missing_ok=True)
            failures.append(f"{tag}: checksum mismatch: {problem}")
            if resumed_from and not restarted:
                restarted = True  # the stale partial may be to blame: once more from scratch
                continue
            break
    part.unlink(missing_ok=True)
    expected = ", ".join(
        x for x in (spec.sha256 and f"expected sha256 {spec.sha256}", spec.md5 and f"expected md5 {spec.md5}") if x
    )
    raise DownloadError(spec.name, failures, expected)


def fetch_all(specs: Iterable[RemoteFile], dest_dir: os.PathLike | str, **kw) -> List[Path]:
    """:func:`fetch` every spec; returns the paths in order."""
    return [fetch(s, dest_dir, **kw) for s in specs]


# ---------------------------------------------------------------------------------------------
# Safe extraction
# ---------------------------------------------------------------------------------------------


def _inside(root: str, path: str) -> bool:
    return os.path.commonpath([root, path]) == root


def _member_target(root: str, name: str, archive: str) -> str:
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":") or os.path.isabs(norm):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path")
    target = os.path.normpath(os.path.join(root, norm))
    if not _inside(root, target):
        raise UnsafeArchiveError(f"{archive}: member {name!r} would be extracted outside {root}")
    return target


def _check_tar_member(root: str, m: tarfile.TarInfo, archive: str) -> None:
    target = _member_target(root, m.name, archive)
    if m.issym():
        link = m.linkname.replace("\\", "/")
        if link.startswith("/") or os.path.isabs(link):
            raise UnsafeArchiveError(f"{archive}: symlink member {m.name!r} points to absolute path {m.linkname!r}")
        if not _inside(root, os.path.normpath(os.path.join(os.path.dirname(target), link))):
            raise UnsafeArchiveError(f"{archive}: symlink member {m.name!r} points outside ({m.linkname!r})")
    elif m.islnk():
        link = m.linkname.replace("\\", "/")
        if link.startswith("/") or not _inside(root, os.path.normpath(os.path.join(root, link))):
            raise UnsafeArchiveError(f"{archive}: hardlink member {m.name!r} points outside ({m.linkname!r})")
    elif not (m.isfile() or m.isdir()):
        raise UnsafeArchiveError(f"{archive}: member {m.name!r} is a device or fifo; refused")


def safe_extract(archive: os.PathLike | str, dest: os.PathLike | str) -> List[Path]:
    """Extract a tar (any compression) or zip archive into ``dest``; returns the extracted paths.

    Every member is checked before anything is written.

    Raises:
        UnsafeArchiveError: naming the first member with an absolute path, a ``..`` escape, a
            link pointing outside ``dest``, or a device/fifo.
    """
    archive = str(archive)
    dest_p = Path(dest)
    dest_p.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(dest_p)
    out: List[Path] = []
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                target = _member_target(root, info.filename, archive)
                if stat.S_ISLNK(info.external_attr >> 16):
                    link = zf.read(info).decode("utf-8", "replace")
                    if os.path.isabs(link) or not _inside(
                        root, os.path.normpath(os.path.join(os.path.dirname(target), link))
                    ):
                        raise UnsafeArchiveError(f"{archive}: symlink member {info.filename!r} points outside ({link!r})")
            for info in infos:
                out.append(Path(zf.extract(info, root)))
        return out
    with tarfile.open(archive, "r:*") as tf:
        members = tf.getmembers()
        for m in members:
            _check_tar_member(root, m, archive)
        kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tf.extractall(root, members=members, **kwargs)
        out = [Path(root) / m.name for m in members]
    return out


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ucgm_core.data.download",
        description="Fetch a dataset's raw files (or one file) from mirrors with retries, resume and "
        "checksum verification; or safely extract an archive.",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--dataset", help="catalogue name (see ucgm_core.data.datasets), e.g. fashion_mnist")
    what.add_argument("--url", action="append", help="a mirror of one file (repeatable, tried in order)")
    what.add_argument("--extract", metavar="ARCHIVE", help="safely extract ARCHIVE into --out-dir")
    what.add_argument("--list", action="store_true", help="list the catalogue and exit")
    p.add_argument("--out-dir", help="destination folder")
    p.add_argument("--name", help="file name for --url (default: last URL component)")
    p.add_argument("--sha256", help="expected sha256 for --url (of decompressed content for .gz)")
    p.add_argument("--md5", help="expected md5 of the raw file for --url")
    p.add_argument("--mirror", action="append", default=[], help="extra mirror tried first for --dataset (base location, end with /)")
    p.add_argument("--retries", type=int, default=3, help="attempts per mirror (default 3)")
    p.add_argument("--backoff", type=float, default=1.0, help="first retry delay in s, doubled each time (default 1)")
    p.add_argument("--timeout", type=float, default=60.0, help="socket timeout in s (default 60)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _build_parser().parse_args(argv)
    if args.list:
        from .datasets import CATALOGUE

        for name, spec in CATALOGUE.items():
            print(f"{name:16s} {spec.description}")
        return 0
    if not args.out_dir:
        print("error: --out-dir is required", file=sys.stderr)
        return 2
    kw = dict(retries=args.retries, backoff=args.backoff, timeout=args.timeout)
    try:
        if args.extract:
            paths = safe_extract(args.extract, args.out_dir)
            print(f"extracted {len(paths)} members into {args.out_dir}")
            return 0
        if args.url:
            name = args.name or urllib.parse.unquote(urllib.parse.urlparse(args.url[0]).path.rsplit("/", 1)[-1])
            spec = RemoteFile(name, tuple(args.url), sha256=args.sha256, md5=args.md5)
            print(fetch(spec, args.out_dir, **kw))
            return 0
        from .datasets import get_dataset

        ds = get_dataset(args.dataset)
        if not ds.files:
            print(
                f"error: dataset {ds.name!r} is read from disk (pass its folder/tar as --raw-dir to "
                "ucgm_core.data.shards); there is nothing to download",
                file=sys.stderr,
            )
            return 2
        for path in fetch_all(ds.files, args.out_dir, extra_mirrors=tuple(args.mirror), **kw):
            print(path)
        return 0
    except (DownloadError, UnsafeArchiveError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
