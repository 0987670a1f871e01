"""Image quantisation and file helpers shared by the metrics modules.

The quantisation follows the original evaluation code: images in [0, 1] are multiplied by 255 and
*truncated* to uint8 (``.to(torch.uint8)`` without rounding), so 0.999 maps to 254, not 255.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from typing import Callable

import torch

__all__ = ["to_uint8", "ensure_rgb_uint8", "sha256_file", "atomic_write", "atomic_torch_save"]


def to_uint8(x: torch.Tensor, rounding: str = "truncate") -> torch.Tensor:
    """Quantise images in [0, 1] to uint8: ``x * 255`` truncated (``rounding="truncate"``, what the original
    evaluation does) or rounded to the nearest integer (``"round"``, as EDM/EDM2 and most FID reports do).

    Values outside [0, 1] are clamped first (casting a negative float to uint8 is undefined).
    uint8 input is returned unchanged.
    """
    if rounding not in ("truncate", "round"):
        raise ValueError(f"rounding must be 'truncate' or 'round', got {rounding!r}")
    if not torch.is_tensor(x):
        raise TypeError(f"to_uint8 expects a torch.Tensor, got {type(x).__name__}")
    if x.dtype == torch.uint8:
        return x
    if not torch.is_floating_point(x):
        raise TypeError(f"to_uint8 expects a float tensor in [0, 1] or uint8, got {x.dtype}")
    y = x.detach().float().clamp(0.0, 1.0) * 255.0
    return (y.round() if rounding == "round" else y).to(torch.uint8)


def ensure_rgb_uint8(x: torch.Tensor) -> torch.Tensor:
    """Return a uint8 image tensor ([3,H,W] or [N,3,H,W]); grey images are repeated to 3 channels.

    Float input is quantised with :func:`to_uint8`. A [H,W] image is treated as grey.
    """
    x = to_uint8(x)
    if x.dim() == 2:
        x = x.unsqueeze(0)
    cdim = x.dim() - 3
    if x.dim() not in (3, 4):
        raise ValueError(f"expected an image [C,H,W] or a batch [N,C,H,W], got shape {tuple(x.shape)}")
    c = x.shape[cdim]
    if c == 3:
        return x
    if c == 1:
        reps = [1] * x.dim()
        reps[cdim] = 3
        return x.repeat(*reps)
    raise ValueError(f"expected 1 or 3 channels, got {c} (shape {tuple(x.shape)})")


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


def atomic_write(path: str | os.PathLike, writer: Callable[[str], None]) -> str:
    """Create ``path`` atomically: ``writer(tmp_path)`` writes a temporary file in the same folder,
    which is then renamed over ``path`` (readers never see a partial file)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        writer(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def atomic_torch_save(obj, path: str | os.PathLike) -> str:
    """``torch.save`` through :func:`atomic_write`, byte-for-byte reproducible: saving through a file object
    makes torch name the archive's root folder "archive" instead of after the (random) temporary file, so
    equal content gives an equal sha256 (which keys caches and goes into the evaluation contract)."""

    def w(tmp: str) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    return atomic_write(path, w)
