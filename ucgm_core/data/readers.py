"""Readers of the raw dataset formats, each returning an :class:`~ucgm_core.data.sources.ImageSource`.

* IDX (MNIST, Fashion-MNIST): big-endian header ``0 0 <dtype> <ndim>`` + ``ndim`` uint32 sizes;
  gzip-compressed or not (detected from the content).
* CIFAR-10 python tarball ``cifar-10-python.tar.gz``: pickled batches ``data_batch_1..5`` (train)
  and ``test_batch`` (test), each ``{data: uint8 [N, 3072] (CHW-planar), labels: [N]}``; read
  straight from the tarball with a restricted unpickler (numpy arrays only).
* ImageFolder on disk: ``root/<class>/<image>``; with ``root/train`` and ``root/test`` (or
  ``root/val``) sub-folders per split. Classes are the sorted train folder names.
* ILSVRC-style train tar (``ILSVRC2012_img_train.tar``): a tar of per-class tars ``<wnid>.tar``
  or a tar of class folders ``<wnid>/<image>``; classes are the sorted class names.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from .sources import IMAGE_EXTENSIONS, ArraySource, FileListSource, IlsvrcTarSource, ImageSource

__all__ = [
    "read_idx",
    "load_idx_pair",
    "idx_reader",
    "read_cifar10",
    "read_image_folder",
    "read_ilsvrc_train_tar",
]


_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: os.PathLike | str) -> np.ndarray:
    """Read an IDX file (gzip-compressed or not) into an array of its declared shape.

    Raises:
        ValueError: bad magic number, unknown dtype code, or data length not matching the dims.
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    with opener(path, "rb") as f:  # type: ignore[operator]
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (magic bytes {data[:4].hex()!r})")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX dtype code 0x{code:02x}")
    if ndim == 0:
        raise ValueError(f"{path}: IDX file declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(f"{path}: IDX dims {dims} need {expected} data bytes, file has {len(data) - header}")
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def load_idx_pair(images: os.PathLike | str, labels: os.PathLike | str, num_classes: int) -> ArraySource:
    """Read an IDX image file (``uint8 [N, H, W]``, magic 0x00000803) and its label file
    (``uint8 [N]``, magic 0x00000801) into an :class:`ArraySource` of ``[N, H, W, 1]`` images."""
    x = read_idx(images)
    y = read_idx(labels)
    if x.ndim != 3 or x.dtype != np.uint8:
        raise ValueError(f"{images}: expected uint8 images with 3 dims, got {x.dtype} {x.shape}")
    if y.ndim != 1 or y.dtype != np.uint8:
        raise ValueError(f"{labels}: expected uint8 labels with 1 dim, got {y.dtype} {y.shape}")
    if len(x) != len(y):
        raise ValueError(f"{images} has {len(x)} images but {labels} has {len(y)} labels")
    return ArraySource(x[..., None], y.astype(np.int64), num_classes)


def idx_reader(prefix_train: str = "train", prefix_test: str = "t10k") -> Callable[[Path, str, int], ArraySource]:
    """A catalogue reader of the gzip IDX pair ``<prefix>-images-idx3-ubyte.gz`` / ``<prefix>-labels-idx1-ubyte.gz``
    of a split (MNIST and Fashion-MNIST name them ``train`` and ``t10k``)."""

    def read(root: Path, split: str, num_classes: int) -> ArraySource:
        prefix = {"train": prefix_train, "test": prefix_test}[split]
        return load_idx_pair(
            root / f"{prefix}-images-idx3-ubyte.gz", root / f"{prefix}-labels-idx1-ubyte.gz", num_classes
        )

    return read


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that only reconstructs numpy arrays/dtypes and bytes (no arbitrary code)."""

    _reconstruct = np.zeros(1).__reduce__()[0]
    _scalar = np.float64(0).__reduce__()[0]

    def find_class(self, module: str, name: str):  # noqa: D401
        if module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            if name == "_reconstruct":
                return self._reconstruct
            if name == "scalar":
                return self._scalar
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module == "_codecs" and name == "encode":  # bytes in protocol-2 pickles written by Python 3
            import codecs

            return codecs.encode
        raise pickle.UnpicklingError(f"refusing to unpickle global {module}.{name}")


def _load_cifar_batch(blob: bytes, where: str) -> Tuple[np.ndarray, np.ndarray]:
    obj = _NumpyOnlyUnpickler(io.BytesIO(blob), encoding="latin1").load()
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a pickled dict, got {type(obj).__name__}")
    d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}
    if "data" not in d or "labels" not in d:
        raise ValueError(f"{where}: batch lacks 'data'/'labels' (keys {sorted(d)})")
    data = np.asarray(d["data"], dtype=np.uint8)
    labels = np.asarray(d["labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise ValueError(f"{where}: data {data.shape} / labels {labels.shape} are not CIFAR-10 shaped")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def read_cifar10(root: Path, split: str, num_classes: int = 10) -> ArraySource:
    """Read the CIFAR-10 python tarball (``root/cifar-10-python.tar.gz`` or ``root`` itself)."""
    path = root if root.is_file() else root / "cifar-10-python.tar.gz"
    wanted = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    found: Dict[str, bytes] = {}
    with tarfile.open(path, "r:*") as tf:
        for m in tf.getmembers():
            base = m.name.rsplit("/", 1)[-1]
            if m.isfile() and base in wanted:
                found[base] = tf.extractfile(m).read()  # type: ignore[union-attr]
    missing = [w for w in wanted if w not in found]
    if missing:
        raise ValueError(f"{path}: missing CIFAR-10 batches {missing}")
    parts = [_load_cifar_batch(found[w], f"{path}:{w}") for w in wanted]
    return ArraySource(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), num_classes)


def _split_dir(root: Path, split: str) -> Path:
    candidates = [root / split] + ([root / "val"] if split == "test" else [])
    for c in candidates:
        if c.is_dir():
            return c
    if split == "train":
        return root
    raise FileNotFoundError(f"{root}: no {' or '.join(str(c.name) for c in candidates)} folder for split {split!r}")


def _class_dirs(d: Path) -> List[str]:
    return sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_image_folder(root: Path, split: str, num_classes: Optional[int] = None, channels: int = 3) -> FileListSource:
    """ImageFolder layout: ``root/[train|test|val]/<class>/<image>`` (or ``root/<class>/...`` for train).

    Class indices follow the sorted class folders of the train split, so both splits agree.
    """
    train_dir = _split_dir(root, "train")
    classes = _class_dirs(train_dir)
    d = _split_dir(root, split)
    if not classes:
        classes = _class_dirs(d)
    index = {c: i for i, c in enumerate(classes)}
    items: List[Tuple[Path, int]] = []
    for c in _class_dirs(d):
        if c not in index:
            raise ValueError(f"{d}: class folder {c!r} is not among the train classes")
        for p in sorted(d.joinpath(c).rglob("*")):
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
                items.append((p, index[c]))
    if not items:
        raise ValueError(f"{d}: no images found")
    if num_classes is not None and len(classes) > num_classes:
        raise ValueError(f"{root}: {len(classes)} class folders but the dataset declares {num_classes} classes")
    return FileListSource(items, num_classes or len(classes), channels, tuple(classes))


def read_ilsvrc_train_tar(root: Path, split: str, num_classes: Optional[int] = None) -> ImageSource:
    """ILSVRC-style data: ``root`` is the train tar, or a folder holding ``ILSVRC2012_img_train.tar``
    (train) and/or ImageFolder-style ``train/`` and ``val/`` folders."""
    tar = root if root.is_file() else root / "ILSVRC2012_img_train.tar"
    if split == "train" and tar.is_file():
        src = IlsvrcTarSource(tar)
        if num_classes is not None and src.num_classes != num_classes:
            raise ValueError(f"{tar}: {src.num_classes} classes found, {num_classes} expected")
        return src
    if root.is_dir():
        return read_image_folder(root, split, num_classes)
    raise FileNotFoundError(f"{root}: no ILSVRC train tar or ImageFolder for split {split!r}")
