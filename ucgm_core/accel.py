"""Speed settings for GPUs that keep the CPU path exact: TF32, bf16 autocast, ``torch.compile``.

Each is a config key (``models.<m>.train``, ``samplers.<s>``, ``autoencoders.<ae>.kwargs``; see
``config/README.md``); the defaults (fp32, TF32 on CUDA only, no compile) leave every CPU result as it was.

* :func:`set_tf32` / :func:`tf32`: TensorFloat-32 for float32 matmuls (cuBLAS) and convolutions (cuDNN).
  It only acts on CUDA devices (Ampere and later); CPU arithmetic is untouched. Set through torch's
  ``allow_tf32`` flags, which keep torch's other precision getters readable (mixing them with the
  newer ``fp32_precision`` properties makes torch refuse to answer).
* :func:`autocast`: ``"bf16"`` runs the network under ``torch.autocast(dtype=bfloat16)`` on any device
  (CUDA, or the CPU, slowly, for tests); weights, optimizer state and the loss arithmetic stay float32.
* :func:`compile_module` / :func:`compile_forward`: optional ``torch.compile``; ``True`` is torch's
  default backend (inductor), a string names another backend (``"aot_eager"``, ``"eager"``, ...).
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any, Dict, Iterator, Optional, Tuple, Union

import torch
from torch import nn

PRECISIONS = ("fp32", "bf16")
CompileSetting = Union[bool, str, None]

__all__ = [
    "PRECISIONS",
    "check_precision",
    "autocast",
    "set_tf32",
    "tf32",
    "configure_device",
    "compile_backend",
    "compile_module",
    "compile_forward",
    "CompiledModules",
    "autocast_dtype",
]


def check_precision(precision: Optional[str]) -> str:
    """``precision`` (None means ``"fp32"``), checked against :data:`PRECISIONS`."""
    precision = "fp32" if precision is None else str(precision)
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is unknown; expected one of {PRECISIONS}")
    return precision


def autocast_dtype(precision: Optional[str]) -> Optional[torch.dtype]:
    """The autocast dtype of ``precision`` (None for fp32: no autocast)."""
    return torch.bfloat16 if check_precision(precision) == "bf16" else None


def autocast(precision: Optional[str], device: Union[str, torch.device]):
    """A context running eligible ops (matmul, linear, conv, attention) in bf16 when ``precision`` is
    ``"bf16"``, on ``device``'s type (cuda or cpu); a no-op for ``"fp32"``."""
    dtype = autocast_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def _tf32_flags() -> Tuple[bool, bool]:
    return bool(torch.backends.cuda.matmul.allow_tf32), bool(torch.backends.cudnn.allow_tf32)


def set_tf32(enabled: bool) -> Tuple[bool, bool]:
    """Allow (or forbid) TF32 in CUDA matmuls and cuDNN convolutions; returns the previous
    ``(matmul, cudnn)`` flags. No effect on CPU arithmetic."""
    previous = _tf32_flags()
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)
    return previous


@contextlib.contextmanager
def tf32(enabled: Optional[bool]) -> Iterator[None]:
    """TF32 on or off inside the block (restored afterwards); ``None`` leaves the flags as they are."""
    if enabled is None:
        yield
        return
    matmul, cudnn = set_tf32(enabled)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


def configure_device(device: Union[str, torch.device], *, tf32: bool = True) -> Dict[str, Any]:
    """Process-wide settings for a job on ``device``: on CUDA, TF32 as ``tf32``. Nothing changes on a
    CPU. Returns what was set (for logs)."""
    device = torch.device(device)
    if device.type != "cuda":
        return {}
    set_tf32(tf32)
    return {"tf32": bool(tf32)}


def compile_backend(setting: CompileSetting) -> Optional[str]:
    """``compile`` config value -> backend name (None: do not compile). ``True`` is ``"inductor"``."""
    if setting is None or setting is False:
        return None
    if setting is True:
        return "inductor"
    if isinstance(setting, str) and setting:
        return setting
    raise ValueError(f"compile must be true, false or a torch.compile backend name, got {setting!r}")


def compile_module(module: nn.Module, setting: CompileSetting) -> nn.Module:
    """``torch.compile(module)`` (a wrapper whose ``_orig_mod`` is ``module``: state dicts, EMA and
    teacher copies use the bare module, see :func:`ucgm_core.training.ema.unwrap`), or ``module``."""
    backend = compile_backend(setting)
    return module if backend is None else torch.compile(module, backend=backend)


def compile_forward(module: nn.Module, setting: CompileSetting) -> nn.Module:
    """Compile ``module.forward`` in place (the module object, its hooks and its other methods such as
    ``forward_with_cfg``, which call ``self(...)``, stay as they are). Only for a module that is never
    deep-copied afterwards (sampling): a copy would share the compiled function of the original."""
    backend = compile_backend(setting)
    if backend is not None:
        module.forward = torch.compile(module.forward, backend=backend)
    return module


class CompiledModules:
    """``torch.compile`` wrappers made once per module (by identity) and kept while the module lives:
    the trainer's online network and the objective's teacher share one cache."""

    def __init__(self, setting: CompileSetting):
        self.backend = compile_backend(setting)
        self._cache: Dict[int, Tuple[weakref.ref, nn.Module]] = {}

    def __bool__(self) -> bool:
        return self.backend is not None

    def __call__(self, module: nn.Module) -> nn.Module:
        if self.backend is None:
            return module
        hit = self._cache.get(id(module))
        if hit is not None and hit[0]() is module:
            return hit[1]
        wrapped = torch.compile(module, backend=self.backend)
        self._cache[id(module)] = (weakref.ref(module), wrapped)
        return wrapped
