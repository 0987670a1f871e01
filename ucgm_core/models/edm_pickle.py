"""Reading EDM's and EDM2's released ``torch_utils.persistence`` pickles without running them.

The released ``.pkl`` snapshots are pickled module objects that embed their source code. A restricted
unpickler resolves every class it names to an inert stand-in (nothing from the file is executed) and only
rebuilds tensors; :func:`read_persistence_pickle` returns ``{name: state_dict}`` of the networks found.
Used by the EDM2 (``edm2.py``) and EDM SongUNet (``songunet.py``) ports.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor

from .convert import CheckpointError, load_checkpoint_file

__all__ = ["read_persistence_pickle", "load_checkpoint_maybe_pickle"]


class _Inert:
    """Stand-in for every class or callable a pickle names that is not on the allow-list.

    Calling or instantiating it runs nothing; it only records the arguments, the ``BUILD`` state and any
    items/elements the pickle adds, so that tensors nested inside can still be collected.
    """

    origin = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "_Inert":
        obj = object.__new__(cls)
        obj.args, obj.state, obj.items, obj.elements = args, None, {}, []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.elements.append(value)

    def extend(self, values: Any) -> None:
        self.elements.extend(values)

    def __repr__(self) -> str:
        return f"<inert {self.origin}>"


class _PersistentObject(_Inert):
    """What ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` becomes: the object's pickled
    ``state`` and ``class_name``; ``meta['module_src']`` (the embedded source code) is never executed."""

    origin = "torch_utils.persistence"


_STAND_INS: Dict[Tuple[str, str], type] = {}


def _stand_in(module: str, name: str) -> type:
    key = (module, name)
    if key not in _STAND_INS:
        _STAND_INS[key] = type(name, (_Inert,), {"origin": f"{module}.{name}"})
    return _STAND_INS[key]


def _reconstruct_persistent(meta: Any) -> _PersistentObject:
    obj = _PersistentObject()
    if isinstance(meta, Mapping):
        obj.state, obj.class_name = meta.get("state"), meta.get("class_name")
    return obj


def _load_storage_bytes(data: bytes) -> Any:
    """A storage pickled by ``pickle.dump`` is a nested ``torch.save`` blob: read it with weights_only."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _rebuild_tensor(storage: Any, offset: int, size: Any, stride: Any, *unused: Any) -> Tensor:
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError(f"tensor data is not a storage ({type(storage).__name__})")
    return torch._utils._rebuild_tensor(storage, offset, tuple(size), tuple(stride))


def _rebuild_parameter(data: Any, *unused: Any) -> Any:
    return data.detach() if isinstance(data, Tensor) else data


def _rebuild_from_type(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    return func(*args)


def _copyreg_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    if isinstance(cls, type) and issubclass(cls, _Inert):
        return cls()
    return _stand_in("copyreg", "_reconstructor")(cls, base, state)


_ALLOWED: Dict[Tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("copyreg", "_reconstructor"): _copyreg_reconstructor,
    ("torch", "Size"): torch.Size,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent,
}


class _InertUnpickler(pickle.Unpickler):
    """Resolves only the allow-listed names above (tensor rebuilding, plain containers, torch dtypes);
    every other class or function, including EDM's persistence reconstruction, becomes an inert stand-in."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        return _stand_in(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError(f"unexpected persistent id {str(pid)[:80]} (not a pickle.dump file)")


def _module_state(obj: Any, prefix: str = "", out: Optional[Dict[str, Tensor]] = None) -> Dict[str, Tensor]:
    """``state_dict()`` of a module tree of stand-ins: ``_parameters``, persistent ``_buffers``, ``_modules``."""
    out = {} if out is None else out
    state = obj.state if isinstance(obj, _Inert) else obj
    if not isinstance(state, Mapping):
        return out
    skip = state.get("_non_persistent_buffers_set")
    skip = skip if isinstance(skip, (set, frozenset)) else set()
    for group in ("_parameters", "_buffers"):
        for name, value in (state.get(group) or {}).items():
            if isinstance(value, Tensor) and not (group == "_buffers" and name in skip):
                out[prefix + name] = value
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            _module_state(child, f"{prefix}{name}.", out)
    return out


def _is_module_like(obj: Any) -> bool:
    return (
        isinstance(obj, _Inert)
        and isinstance(obj.state, Mapping)
        and ("_parameters" in obj.state or "_modules" in obj.state)
    )


def read_persistence_pickle(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Tensors of an EDM / EDM2 ``.pkl`` network snapshot, WITHOUT executing its embedded code.

    These files pickle module objects through ``torch_utils.persistence``, whose reconstruction would
    ``exec`` the source code stored in the file. Here a custom :class:`pickle.Unpickler` resolves only
    tensor-rebuilding functions, plain containers and torch dtypes; EDM's reconstruction function and
    every other class map to inert stand-ins that merely collect their pickled state. Each top-level module
    object (e.g. ``data['ema']``) is returned as its flat ``state_dict`` ({name: tensor}); other entries are
    returned as parsed (possibly stand-ins).

    Remaining risk (why callers must opt in): the file is still parsed by the pickle machine and by
    ``torch.load(weights_only=True)`` for the nested storages; a malicious file can exhaust memory, and
    any flaw in those parsers is exposed. Convert once, keep the written state_dict, delete the pickle.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        with open(path, "rb") as f:
            data = _InertUnpickler(f).load()
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: cannot read pickle ({type(e).__name__}: {str(e)[:300]})") from None
    if _is_module_like(data):
        return _module_state(data)
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path}: pickle holds a {type(data).__name__}, expected a dict of networks")
    return {k: _module_state(v) if _is_module_like(v) else v for k, v in data.items()}


def load_checkpoint_maybe_pickle(path: Union[str, os.PathLike], allow_unsafe_pickle: bool = False) -> Any:
    """:func:`load_checkpoint_file`, except that a ``.pkl`` snapshot is read by :func:`read_persistence_pickle`
    when ``allow_unsafe_pickle`` is set (otherwise it is refused with ``UnsafeCheckpointError``)."""
    if allow_unsafe_pickle and Path(path).suffix == ".pkl":
        return read_persistence_pickle(path)
    return load_checkpoint_file(path)
