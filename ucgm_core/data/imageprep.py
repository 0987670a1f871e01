"""Image preprocessing for the image shards: the ADM center crop and the PIL round trip it needs.

:func:`prepare_image` is what the shards stage applies to every source image before it is encoded
(:mod:`ucgm_core.data.shards`); :func:`to_pil` is shared with the png field codec
(:mod:`ucgm_core.data.tarcodec`).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["to_pil", "adm_center_crop", "prepare_image"]


def to_pil(arr: np.ndarray):
    """``uint8 [H, W, 1]`` -> a grey (L) PIL image, ``uint8 [H, W, 3]`` -> an RGB one."""
    from PIL import Image

    if arr.ndim == 3 and arr.shape[2] == 1:
        return Image.fromarray(arr[:, :, 0], mode="L")
    return Image.fromarray(arr, mode="RGB")


def adm_center_crop(image, size: int):
    """ADM center crop of a PIL image to ``size x size``.

    While the short side is at least ``2 * size`` halve the image with a BOX filter; then resize
    so that the short side equals ``size`` (BICUBIC); then crop the center square.
    """
    from PIL import Image

    while min(image.size) >= 2 * size:
        image = image.resize(tuple(s // 2 for s in image.size), resample=Image.BOX)
    scale = size / min(image.size)
    image = image.resize(tuple(round(s * scale) for s in image.size), resample=Image.BICUBIC)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    return image.crop((left, top, left + size, top + size))


def prepare_image(arr: np.ndarray, size: Optional[int]) -> np.ndarray:
    """``uint8 [H, W, C]`` -> ``uint8 [size, size, C]`` (ADM crop unless already that size)."""
    if arr.ndim == 2:
        arr = arr[..., None]
    if size is None or (arr.shape[0] == size and arr.shape[1] == size):
        return arr
    out = np.asarray(adm_center_crop(to_pil(arr), size), dtype=np.uint8)
    return out[..., None] if out.ndim == 2 else out
