"""The manifest of an umbrella target: a TSV of its files with their sizes and sha256."""

from __future__ import annotations

import os
from typing import List, Sequence

from ..io import atomic_write_bytes, sha256_file
from .table import ReportError

__all__ = ["write_manifest"]


def write_manifest(out: str | os.PathLike, files: Sequence[str]) -> None:
    """A TSV (``path, bytes, sha256``, one line per file in the given order), written atomically; every file
    must exist (ReportError listing the missing ones, and nothing written)."""
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise ReportError(f"manifest {out}: expected files are missing: {missing}")
    lines: List[str] = ["path\tbytes\tsha256"]
    lines += [f"{f}\t{os.path.getsize(f)}\t{sha256_file(f)}" for f in files]
    atomic_write_bytes(out, ("\n".join(lines) + "\n").encode())
