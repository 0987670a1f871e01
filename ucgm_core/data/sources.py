"""Image sources: what every dataset reader returns.

An :class:`ImageSource` is a sized iterable of ``(image, label)`` with ``image`` a ``uint8`` array of shape
``[H, W, C]`` (C = 1 grey or 3 RGB) and ``label`` an int in ``[0, num_classes)``, in a deterministic order;
``iter_range`` yields a slice of that order, decoding only the images in it. Sources hold arrays in memory
(:class:`ArraySource`), files on disk (:class:`FileListSource`) or an ILSVRC-style train tar
(:class:`IlsvrcTarSource`).
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Protocol, Tuple

import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "ImageSource", "ArraySource", "FileListSource", "IlsvrcTarSource"]


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")


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

    def _iter_items(
        self, decode: bool, start: int = 0, stop: Optional[int] = None
    ) -> Iterator[Tuple[Optional[np.ndarray], int]]:
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
