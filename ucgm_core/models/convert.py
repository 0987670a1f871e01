"""Shared tools of the checkpoint converters: safe loading, weight selection, prefix stripping, layout checks.

Loading never unpickles code by default: ``.safetensors`` files go through safetensors, everything else
through ``torch.load(..., weights_only=True)``. A file that needs arbitrary unpickling (EDM's and EDM2's
released ``.pkl``) is refused with :class:`UnsafeCheckpointError`, which says why and how to proceed;
the per-network converters may offer an explicit opt-in for such files and then write a plain
state_dict so that it is never needed again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..io import atomic_torch_save, atomic_write

__all__ = [
    "CheckpointError",
    "UnsafeCheckpointError",
    "load_checkpoint_file",
    "read_blob",
    "pick_weights",
    "strip_prefixes",
    "drop_keys",
    "check_layout",
    "load_layout",
    "save_state_dict",
]

Layout = Dict[str, Tuple[int, ...]]


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the offending keys."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint that can only be read by unpickling arbitrary code."""


def load_checkpoint_file(path: os.PathLike | str) -> dict:
    """Read ``path`` without executing code: safetensors or ``torch.load(weights_only=True)``.

    Raises :class:`CheckpointError` (missing or corrupt file) or :class:`UnsafeCheckpointError` (a pickle
    that needs code, e.g. EDM/EDM2 ``.pkl`` network snapshots).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    if path.suffix == ".pkl":
        raise UnsafeCheckpointError(
            f"{path}: a .pkl network snapshot can only be read by unpickling (and running) the code stored in it, "
            "which a checkpoint from the internet must not be trusted to do. Convert it once with the explicit "
            "opt-in of its converter (e.g. allow_unsafe_pickle=True / --allow-unsafe-pickle), which writes a plain "
            "state_dict that later runs load safely."
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        msg = str(e)
        if "weights_only" in msg or "Unsupported global" in msg or "UnpicklingError" in type(e).__name__:
            raise UnsafeCheckpointError(
                f"{path}: loading it needs arbitrary unpickling ({msg.splitlines()[0][:300]}); refused. Re-save the "
                "weights as a plain state_dict or safetensors file from a trusted environment."
            ) from None
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(e).__name__}: {msg[:300]})") from None


def read_blob(path_or_state: os.PathLike | str | Mapping[str, Any]) -> tuple:
    """(loaded blob, source name for messages): a path is read with :func:`load_checkpoint_file`, an
    already loaded mapping is passed through as ``"<state_dict>"``."""
    if isinstance(path_or_state, Mapping):
        return path_or_state, "<state_dict>"
    return load_checkpoint_file(path_or_state), str(path_or_state)


def pick_weights(
    blob: Mapping,
    preferred: Sequence[str] = ("ema", "model_ema", "ema_model", "model", "state_dict"),
    source: str = "<checkpoint>",
) -> Dict[str, Tensor]:
    """The state_dict inside a loaded checkpoint: the first of ``preferred`` present (EMA first), else the blob
    itself when it already maps names to tensors."""
    for key in preferred:
        value = blob.get(key) if isinstance(blob, Mapping) else None
        if isinstance(value, Mapping) and value and all(isinstance(v, Tensor) for v in value.values()):
            return dict(value)
    if isinstance(blob, Mapping) and blob and all(isinstance(v, Tensor) for v in blob.values()):
        return dict(blob)
    keys = list(blob)[:20] if isinstance(blob, Mapping) else type(blob).__name__
    raise CheckpointError(f"{source}: no state_dict found under {list(preferred)}; top-level keys: {keys}")


def strip_prefixes(
    state: Mapping[str, Tensor], prefixes: Iterable[str] = ("module.", "_orig_mod.")
) -> Dict[str, Tensor]:
    """Remove wrapper prefixes (repeatedly, in any order) from every key."""
    prefixes = tuple(prefixes)
    out = {}
    for k, v in state.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if k.startswith(p):
                    k, changed = k[len(p) :], True
        out[k] = v
    return out


def drop_keys(state: Mapping[str, Tensor], patterns: Iterable[str]) -> Dict[str, Tensor]:
    """Drop keys starting with any of ``patterns`` (e.g. REPA's ``projectors.``)."""
    patterns = tuple(patterns)
    return {k: v for k, v in state.items() if not k.startswith(patterns)}


def check_layout(
    state: Mapping[str, Tensor], expected: Mapping[str, Sequence[int]], source: str = "<checkpoint>", limit: int = 20
) -> None:
    """Raise :class:`CheckpointError` listing missing, unexpected and mis-shaped keys, if any."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k}: {tuple(state[k].shape)} (expected {tuple(expected[k])})"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k])
    ]
    if not (missing or unexpected or misshaped):
        return

    def show(items):
        more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
        return ", ".join(items[:limit]) + more

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing: {show(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected: {show(unexpected)}")
    if misshaped:
        parts.append(f"{len(misshaped)} mis-shaped: {show(misshaped)}")
    raise CheckpointError(f"{source}: state_dict does not match the expected layout; " + "; ".join(parts))


def load_layout(path: os.PathLike | str, key: str = "state_dict") -> Layout:
    """A ``{name: shape}`` layout from a ``*_full_keys.json`` file (its ``state_dict`` entry by default)."""
    with open(path) as f:
        data = json.load(f)
    layout = data[key] if key in data else data
    return {k: tuple(v["shape"] if isinstance(v, Mapping) else v) for k, v in layout.items()}


def save_state_dict(state: Mapping[str, Tensor], path: os.PathLike | str, metadata: Optional[dict] = None) -> Path:
    """Write a plain state_dict atomically: ``.safetensors`` (metadata as strings) or a ``torch.save`` dict."""
    path = Path(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        atomic_write(
            path, lambda tmp: save_file(tensors, tmp, metadata={k: json.dumps(v) for k, v in (metadata or {}).items()})
        )
    else:
        atomic_torch_save({"state_dict": tensors, "metadata": metadata or {}}, path)
    return path
