"""Image generation by global image index: per-image seeds and labels, batched, decoded to uint8.

Image ``i`` of a run with global seed ``s`` always gets the noise stream ``per_image_seed(s, i)`` and
the label ``i mod num_classes`` (class-balanced), so the images do not depend on how the indices
are split into shards, batches or processes.

The originals' samplers (:mod:`.originals`) get the model in their own parametrisation
(:func:`~.originals.original_network`), the labels and the null label, and do their own guidance; the
other samplers get the model with labels and guidance bound (:func:`~.guidance.guided`).

Non-finite samples (NaN or infinite values, from the sampler or from decoding) are never quantised:
:class:`NonFiniteSamplesError` stops the run at the first batch that has any, naming the sampler, the
steps, the stage and how many images of the batch were affected, before the caller writes anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..accel import autocast, autocast_dtype
from ..data.loader import LatentNormalizer
from ..io import to_uint8
from ..transports import orient
from .guidance import guided
from .noise import PerImageNoise, per_image_seeds
from .originals import original_info, original_network
from .registry import get_sampler

__all__ = ["GenerationResult", "NonFiniteSamplesError", "labels_for", "generate_images", "count_nonfinite"]


class NonFiniteSamplesError(ValueError):
    """Samples with NaN or infinite values; ``bad`` images of ``total`` in the batch of ``indices``."""

    def __init__(self, message: str, bad: int, total: int, indices: Sequence[int]):
        super().__init__(message)
        self.bad, self.total, self.indices = int(bad), int(total), [int(i) for i in indices]


def count_nonfinite(x: Tensor) -> Tensor:
    """A bool ``[B]``: which images of a batch ``[B, ...]`` hold any NaN or infinite value."""
    return ~torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)


def _check_finite(x: Tensor, stage: str, method: str, steps: int, indices: np.ndarray) -> None:
    """Raise :class:`NonFiniteSamplesError` naming the sampler, steps, stage and images when ``x`` is not finite."""
    bad = count_nonfinite(x)
    n = int(bad.sum())
    if n:
        which = indices[bad.cpu().numpy()]
        raise NonFiniteSamplesError(
            f"sampler {method!r} at {steps} steps gave {n} of {len(indices)} images with NaN or infinite values "
            f"{stage} (images {', '.join(map(str, which[:8].tolist()))}{', ...' if n > 8 else ''} of the batch "
            f"{int(indices[0])}..{int(indices[-1])}); non-finite images cannot be quantised or scored",
            n,
            len(indices),
            which.tolist(),
        )


@dataclass
class GenerationResult:
    """``images`` uint8 ``[N, C, H, W]``; ``labels``, ``indices``, ``seeds`` int64 ``[N]``; ``nfe`` per image
    (sampler evaluations, a guided one counted once); ``evaluations``: network rows per image, measured (a
    doubled guidance batch counts twice; e.g. 435 for REPA-E's 250-step SDE, whose interval covers 185 steps)."""

    images: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    seeds: np.ndarray
    nfe: int
    evaluations: Optional[float] = None


def _bf16_to_fp32(module, args, out):
    """Forward hook: a bf16 (autocast) network output as float32, so guidance and the sampler work in float32."""
    return out.float() if isinstance(out, torch.Tensor) and out.dtype == torch.bfloat16 else out


def labels_for(indices: Sequence[int], num_classes: int) -> np.ndarray:
    """Class-balanced labels: image ``i`` gets class ``i mod num_classes``."""
    return np.asarray(indices, dtype=np.int64) % int(num_classes)


@torch.no_grad()
def generate_images(
    model: nn.Module,
    indices: Sequence[int],
    *,
    seed: int,
    method: str,
    steps: int,
    transport: str,
    latent_shape: Sequence[int],
    num_classes: int,
    normalizer: LatentNormalizer,
    decode,
    options: Optional[Dict[str, Any]] = None,
    guidance_scale: float = 0.0,
    guidance_interval: Optional[Sequence[float]] = None,
    batch_size: int = 250,
    device: str | torch.device = "cpu",
    quantize: str = "round",
    on_batch: Optional[Callable[[int, int], None]] = None,
    precision: str = "fp32",
) -> GenerationResult:
    """Sample images ``indices`` with sampler ``method`` and decode them (``decode``: latents -> [0, 1]),
    quantised to uint8 by ``quantize``: "round" (the default, as the pipeline's ``evaluation.quantize``) or
    "truncate" (the original's ``(x * 255).to(uint8)``); see ``to_uint8``.

    ``model`` is called ``model(x, t, labels)`` (and ``forward_with_cfg`` when ``guidance_scale > 0``);
    the null label is ``num_classes``. An original's sampler takes its guidance from ``options`` (e.g.
    ``cfg_scale``), so ``guidance_scale`` must be 0 with it. ``on_batch(done, total)``, when given, is called
    after each batch with the number of images done so far (progress logs; tests use it as the event
    "generating"). ``precision="bf16"`` runs the network under bf16 autocast (on ``device``'s type; its
    outputs come back float32, and the sampler's own arithmetic and ``decode`` stay outside it).

    Raises :class:`NonFiniteSamplesError` at the first batch whose samples (before or after ``decode``)
    hold a NaN or an infinite value.
    """
    indices = np.asarray(list(indices), dtype=np.int64)
    sampler = get_sampler(method)
    info = original_info(sampler)
    if info is not None and guidance_scale > 0:
        raise ValueError(
            f"sampler {method!r} does its original's own guidance (its options, e.g. cfg_scale); "
            f"guidance_scale must be 0, got {guidance_scale}"
        )
    tr = orient(transport)
    seeds = np.asarray(per_image_seeds(seed, indices.tolist()), dtype=np.int64)
    labels = labels_for(indices, num_classes)
    out, nfe, rows = [], 0, 0
    model = model.to(device).eval()
    original_net = original_network(model, transport, info.convention) if info is not None else None

    def count_rows(module, args):  # rows through the model's forward (guided() calls it inside forward_with_cfg)
        nonlocal rows
        rows += int(args[0].shape[0])

    hook = model.register_forward_pre_hook(count_rows) if info is None else None
    to_fp32 = model.register_forward_hook(_bf16_to_fp32) if autocast_dtype(precision) is not None else None
    try:
        for lo in range(0, len(indices), batch_size):
            hi = min(lo + batch_size, len(indices))
            noise_src = PerImageNoise(seeds[lo:hi].tolist(), latent_shape, device=device)
            y = torch.as_tensor(labels[lo:hi], device=device)
            with autocast(precision, device):
                if info is not None:
                    res = sampler(
                        original_net,
                        noise_src.initial(),
                        tr,
                        steps=steps,
                        labels=y,
                        null_label=num_classes,
                        noise_source=noise_src,
                        **(options or {}),
                    )
                    rows += res.net_rows
                else:
                    net = guided(model, y, num_classes, guidance_scale, guidance_interval)
                    res = sampler(net, noise_src.initial(), tr, steps=steps, noise_source=noise_src, **(options or {}))
            x = normalizer.denormalize(res.sample.to(torch.float32))
            _check_finite(x, "in the sampler's output (before decoding)", method, steps, indices[lo:hi])
            images = decode(x)
            _check_finite(images, "after decoding", method, steps, indices[lo:hi])
            out.append(to_uint8(images, quantize).cpu().numpy())
            nfe = res.nfe
            if on_batch is not None:
                on_batch(hi, len(indices))
    finally:
        if hook is not None:
            hook.remove()
        if to_fp32 is not None:
            to_fp32.remove()
    images = np.concatenate(out) if out else np.zeros((0, 1, 1, 1), np.uint8)
    evaluations = rows / len(indices) if len(indices) else None
    return GenerationResult(images, labels, indices, seeds, int(nfe), evaluations)
