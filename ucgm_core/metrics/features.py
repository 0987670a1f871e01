"""Images to features through torch-fidelity: :class:`ChunkedImages` (images loaded a chunk at a time, bounded
memory), :class:`RGBUint8Dataset` (what torch-fidelity's extractors take: uint8 [3,H,W]), the extractor itself
(:func:`make_extractor`) and :func:`extract_features`. Split from ``fidelity.py`` (issue 12)."""

from __future__ import annotations

import bisect
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from . import classifier  # noqa: F401 - registers the "ucgm-classifier" extractor
from .imageutil import ensure_rgb_uint8
from .specs import FeatureExtractorSpec, ImagesLike

__all__ = ["ChunkedImages", "RGBUint8Dataset", "device_flags", "make_extractor", "extract_features", "default_layer"]


class ChunkedImages(Dataset):
    """Images stored as consecutive chunks that are loaded on demand, one after the other (bounded memory).

    ``chunks``: a sequence of ``(length, load)``; ``load()`` returns that chunk's images as a uint8 (or [0, 1]
    float) array or tensor ``[length, C, H, W]`` (or ``[length, H, W]``). Item ``i`` is image ``i`` of the
    concatenation, as a tensor ``[C, H, W]``. Access in index order (what torch-fidelity's data loader does)
    loads each chunk once; other orders are correct but may load a chunk several times. Items are views of
    their chunk, so a batch that straddles two chunks keeps the first alive while the second is read: at most
    two chunks per process (a data-loader worker keeps its own), whatever the number of chunks.
    """

    def __init__(self, chunks: Sequence[tuple[int, Callable[[], Any]]]):
        self._lengths = [int(n) for n, _ in chunks]
        self._loads = [load for _, load in chunks]
        if any(n < 0 for n in self._lengths):
            raise ValueError("chunk lengths must be >= 0")
        self._starts = np.concatenate([[0], np.cumsum(self._lengths, dtype=np.int64)]).tolist()
        self._current: int | None = None
        self._images: torch.Tensor | None = None
        self.loads = 0  # chunks loaded so far (in this process)

    def __len__(self) -> int:
        return self._starts[-1]

    def _chunk(self, k: int) -> torch.Tensor:
        if self._current != k:
            self._current, self._images = None, None  # release the previous chunk before reading the next
            x = self._loads[k]()
            if isinstance(x, np.ndarray):
                x = torch.from_numpy(x)
            if not torch.is_tensor(x):
                raise TypeError(f"chunk {k} loaded a {type(x).__name__}, expected an array or a tensor")
            if len(x) != self._lengths[k]:
                raise ValueError(f"chunk {k} has {len(x)} images, declared {self._lengths[k]}")
            self._current, self._images = k, x
            self.loads += 1
        return self._images

    def __getitem__(self, i: int) -> torch.Tensor:
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"image {i} of {n}")
        k = bisect.bisect_right(self._starts, i) - 1
        return self._chunk(k)[i - self._starts[k]]


class RGBUint8Dataset(Dataset):
    """uint8 [3,H,W] items from a tensor [N,C,H,W] / [N,H,W] or a Dataset (items: tensor or (tensor, label))."""

    def __init__(self, source: ImagesLike):
        if isinstance(source, np.ndarray):
            source = torch.from_numpy(source)
        if torch.is_tensor(source):
            x = source
            if x.dim() == 3:
                x = x.unsqueeze(1)
            if x.dim() != 4:
                raise ValueError(f"images must be [N,C,H,W] or [N,H,W], got {tuple(x.shape)}")
            self._tensor = ensure_rgb_uint8(x).contiguous()
            self._ds = None
        elif isinstance(source, Dataset):
            self._tensor = None
            self._ds = source
        else:
            raise TypeError(f"images must be a tensor, an ndarray or a Dataset, got {type(source).__name__}")

    def __len__(self):
        return len(self._tensor) if self._tensor is not None else len(self._ds)

    def __getitem__(self, i):
        if self._tensor is not None:
            return self._tensor[i]
        item = self._ds[i]
        if isinstance(item, (tuple, list)):
            item = item[0]
        if isinstance(item, np.ndarray):
            item = torch.from_numpy(item)
        if not torch.is_tensor(item):
            raise TypeError(f"dataset items must be tensors, got {type(item).__name__}")
        return ensure_rgb_uint8(item)


def device_flags(cuda: bool | None, save_cpu_ram: bool | None) -> tuple[bool, bool]:
    if cuda is None:
        cuda = torch.cuda.is_available()
    if save_cpu_ram is None:
        save_cpu_ram = not cuda
    return bool(cuda), bool(save_cpu_ram)


def make_extractor(spec: FeatureExtractorSpec, layers: Sequence[str], cuda: bool):
    if spec.name not in FEATURE_EXTRACTORS_REGISTRY:
        raise ValueError(
            f'feature extractor "{spec.name}" is not registered with torch-fidelity '
            f"(known: {sorted(FEATURE_EXTRACTORS_REGISTRY)})"
        )
    return create_feature_extractor(
        spec.name, list(layers), cuda=cuda, feature_extractor_weights_path=spec.resolved_weights_path(), verbose=False
    )


def extract_features(
    images: ImagesLike,
    extractor: FeatureExtractorSpec,
    layers: Sequence[str],
    *,
    batch_size: int = 64,
    cuda: bool | None = None,
    save_cpu_ram: bool | None = None,
    _fe=None,
) -> dict[str, torch.Tensor]:
    """Features {layer: float32 [N,D]} of images (uint8 or [0,1] float, grey or RGB) via torch-fidelity."""
    cuda, save_cpu_ram = device_flags(cuda, save_cpu_ram)
    ds = RGBUint8Dataset(images)
    if len(ds) == 0:
        raise ValueError("no images")
    fe = _fe if _fe is not None else make_extractor(extractor, layers, cuda)
    out = get_featuresdict_from_dataset(ds, fe, batch_size, cuda, save_cpu_ram, False)
    return {k: out[k] for k in layers}


def default_layer(extractor_name: str, metric: str) -> str:
    return FEATURE_EXTRACTORS_REGISTRY[extractor_name].get_default_feature_layer_for_metric(metric)
