"""Checksums of downloads: computing and verifying them, and recording a first-seen sha256.

``sha256`` is taken over the **decompressed** content for ``.gz`` files (Debian re-compresses Fashion-MNIST, so
the ``.gz`` bytes differ between mirrors while the IDX bytes do not) and over the raw bytes otherwise; ``md5``
(optional) is over the raw bytes, as upstream projects often publish it. A file with neither is refused unless
unverified downloads are allowed; then its first-seen sha256 is written next to it (``<name>.sha256``,
:func:`record_first_seen`) and the log says which config key to copy it into.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from pathlib import Path
from typing import Callable, Optional

from ..io import atomic_write_bytes
from .remote import RemoteFile

__all__ = [
    "READ_CHUNK",
    "ChecksumError",
    "ChecksumRequiredError",
    "file_digest",
    "verify_file",
    "checksum_hint",
    "record_first_seen",
]

#: Bytes read at a time when hashing or copying a download.
READ_CHUNK = 1 << 20


class ChecksumError(ValueError):
    """A file's content does not match its expected checksum."""


class ChecksumRequiredError(ValueError):
    """A file with no configured checksum, and unverified downloads not allowed."""


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def file_digest(path: os.PathLike | str, algorithm: str = "sha256", decompress: bool = False) -> str:
    """Hex digest of a file, of its gzip-decompressed content when ``decompress``."""
    h = hashlib.new(algorithm)
    opener = gzip.open if decompress else open
    with opener(path, "rb") as f:  # type: ignore[operator]
        while True:
            chunk = f.read(READ_CHUNK)
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


def checksum_hint(spec: RemoteFile, dest: Path, sha256_key: Optional[str]) -> str:
    """How to get past a missing checksum: the config key ``sha256_key`` to set, or one unverified download
    that records the first-seen sha256 in ``<dest>.sha256`` (for error messages)."""
    where = sha256_key or "the file's sha256 (--sha256 by hand)"
    return (
        f"set {where}, or allow one unverified download (config download.allow_unverified: true, by hand "
        f"--allow-unverified) to record its first-seen sha256 in {dest}.sha256"
    )


def record_first_seen(dest: Path, spec: RemoteFile, sha256_key: Optional[str], say: Callable[[str], None]) -> str:
    """Write the sha256 :func:`verify_file` would check (``.gz``: of the content) to ``<dest>.sha256``; say where
    it belongs in the config."""
    digest = file_digest(dest, "sha256", decompress=spec.name.endswith(".gz") and _is_gzip(dest))
    atomic_write_bytes(f"{dest}.sha256", f"{digest}  {spec.name}\n".encode())
    say(
        f"[download] warning: {spec.name} is NOT verified (download.allow_unverified); its first-seen sha256 is "
        f"{digest} (written to {dest}.sha256): put it in {sha256_key or 'the config entry of this file'} "
        "and set download.allow_unverified back to false"
    )
    return digest
