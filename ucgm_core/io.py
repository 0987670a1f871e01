"""The bottom layer every stage writes through: atomic files, content hashes, uint8 quantisation.

Nothing here imports another ``ucgm_core`` module, so any module may import it.

* :func:`atomic_write` / :func:`atomic_write_bytes` / :func:`atomic_torch_save`: a file appears whole or not
  at all. The data goes to a temporary file in the destination's folder, is flushed and fsync-ed, renamed over
  the destination, and the folder is fsync-ed so the rename survives a power cut. The temporary file is
  removed on any failure (disk full, an exception in the writer, Ctrl-C), so no ``.tmp`` litter is left.
* :func:`sha256_file`: hex sha256 of a file, memoised per process on (path, size, mtime).
* :func:`to_uint8`: images in [0, 1] to uint8, truncating (the original evaluation) or rounding; non-finite
  values are an error, since casting NaN to uint8 is undefined and would be scored as if it were an image.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # torch is imported where it is used: data-prep jobs that never touch tensors stay light
    import torch

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_torch_save",
    "fsync_dir",
    "sha256_file",
    "sha256_bytes",
    "to_uint8",
]


def fsync_dir(folder: str) -> None:
    """fsync a folder so a rename inside it is durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, writer: Callable[[str], None]) -> str:
    """Create ``path`` atomically: ``writer(tmp_path)`` writes a temporary file in the same folder, which is
    fsync-ed and renamed over ``path``; readers never see a partial file and a failure leaves no temporary."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        writer(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(folder)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> str:
    """Write ``data`` to ``path`` through :func:`atomic_write`."""

    def w(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_write(path, w)


def atomic_torch_save(obj, path: str | os.PathLike) -> str:
    """``torch.save`` through :func:`atomic_write`, byte-for-byte reproducible: saving through a file object
    makes torch name the archive's root folder "archive" instead of after the (random) temporary file, so
    equal content gives an equal sha256."""
    import torch

    def w(tmp: str) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    return atomic_write(path, w)


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file (memoised per process on (realpath, size, mtime_ns))."""
    path = os.path.realpath(os.fspath(path))
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def to_uint8(x: torch.Tensor, rounding: str = "truncate") -> torch.Tensor:
    """Quantise images in [0, 1] to uint8: ``x * 255`` truncated (``rounding="truncate"``, what the original
    evaluation does) or rounded to the nearest integer (``"round"``, as EDM/EDM2 and most FID reports do).

    Values outside [0, 1] are clamped first (casting a negative float to uint8 is undefined). NaN or infinite
    values raise ``ValueError`` (they would otherwise become arbitrary pixels and be scored). uint8 input is
    returned unchanged.
    """
    import torch

    if rounding not in ("truncate", "round"):
        raise ValueError(f"rounding must be 'truncate' or 'round', got {rounding!r}")
    if not torch.is_tensor(x):
        raise TypeError(f"to_uint8 expects a torch.Tensor, got {type(x).__name__}")
    if x.dtype == torch.uint8:
        return x
    if not torch.is_floating_point(x):
        raise TypeError(f"to_uint8 expects a float tensor in [0, 1] or uint8, got {x.dtype}")
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(
            f"to_uint8: {bad} of {x.numel()} values are NaN or infinite (shape {tuple(x.shape)}); "
            "non-finite images cannot be quantised or scored"
        )
    y = x.detach().float().clamp(0.0, 1.0) * 255.0
    return (y.round() if rounding == "round" else y).to(torch.uint8)
