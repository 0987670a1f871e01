"""Encode image shards into latent shards (plain and flipped) and compute latent statistics.

For every image the autoencoder encodes the image as-is and horizontally flipped (the original
does the same and lets the loader pick one of the two at random), so latent shards hold
``latent.npy`` ``[C, h, w]``, ``latent_flip.npy`` ``[C, h, w]`` and ``cls`` per sample. Latent
shard ``{split}-{i:06d}.tar`` holds exactly the samples of image shard ``{split}-{i:06d}.tar``,
so an interrupted run resumes by skipping the shards already written.

Statistics: per-channel ``mean`` and ``std`` of shape ``[1, C, 1, 1]`` over up to 10,000
un-flipped training latents chosen with a fixed seed (``torch.randperm`` of the sample indices),
reduced over samples and spatial positions (``std`` unbiased, as ``torch.std``). Saved as a
``.pt`` dict ``{mean, std, num_samples, seed, split}`` (or ``.json`` with nested lists),
written atomically.

CLI::

    python -m ucgm_core.data.latents --image-dir resources/shards/fashion_mnist_28 \\
        --out-dir resources/latents/identity/fashion_mnist_28 --autoencoder identity \\
        --stats-out resources/latents/identity/fashion_mnist_28/stats.pt
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..autoencoders import Autoencoder, get_autoencoder
from .shards import (
    TarShardWriter,
    atomic_write_bytes,
    decode_field,
    encode_field,
    iter_samples,
    read_manifest,
    shard_paths,
    write_manifest,
)

__all__ = [
    "images_to_tensor",
    "encode_split",
    "iter_latents",
    "compute_latent_stats",
    "save_latent_stats",
    "load_latent_stats",
]


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """``uint8 [B, H, W, C]`` -> ``float32 [B, C, H, W]`` in ``[-1, 1]`` (ToTensor + Normalize(0.5, 0.5))."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def _encode_batch(ae: Autoencoder, images: List[np.ndarray], device: torch.device) -> Tuple[np.ndarray, np.ndarray]:
    x = images_to_tensor(np.stack(images)).to(device)
    with torch.no_grad():
        z = ae.encode(x)
        zf = ae.encode(torch.flip(x, dims=[3]))
    return z.float().cpu().numpy(), zf.float().cpu().numpy()


def _count_shard(path: Path, num_classes: int) -> Tuple[int, np.ndarray, Tuple[int, ...]]:
    counts = np.zeros(num_classes, dtype=np.int64)
    shape: Tuple[int, ...] = ()
    n = 0
    for s in iter_samples([path]):
        counts[decode_field("cls", s["cls"])] += 1
        if not shape:
            shape = tuple(decode_field("npy", s["latent.npy"]).shape)
        n += 1
    return n, counts, shape


def encode_split(
    image_dir: os.PathLike | str,
    out_dir: os.PathLike | str,
    split: str,
    autoencoder: Autoencoder,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    dtype: str = "float32",
    resume: bool = True,
    autoencoder_name: str = "",
    autoencoder_kwargs: Optional[Dict[str, Any]] = None,
    log=print,
) -> Dict[str, Any]:
    """Encode every image of ``split`` (plain and flipped) into latent shards + manifest.

    Returns the latent manifest dict (``kind == "latents"``, ``latent_shape == [C, h, w]``).
    """
    device = torch.device(device)
    np_dtype = np.dtype(dtype)
    image_dir, out_dir = Path(image_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    src = read_manifest(image_dir, split)
    num_classes = int(src["num_classes"])
    autoencoder = autoencoder.to(device).eval()
    counts = np.zeros(num_classes, dtype=np.int64)
    shards: List[str] = []
    latent_shape: Tuple[int, ...] = ()
    total = 0
    inputs = shard_paths(image_dir, split)
    (out_dir / f"{split}.json").unlink(missing_ok=True)
    wanted = {p.name for p in inputs}
    for old in [*out_dir.glob(f"{split}-*.tar"), *out_dir.glob(f".{split}-*.tar.tmp")]:
        if not resume or old.name not in wanted:
            old.unlink()
    for path in inputs:
        name = path.name
        index = int(name[len(split) + 1 : -len(".tar")])
        target = out_dir / name
        if resume and target.is_file():
            n, c, shape = _count_shard(target, num_classes)
            counts += c
            total += n
            latent_shape = latent_shape or shape
            shards.append(name)
            log(f"[latents] {name}: already encoded ({n} samples), skipped")
            continue
        t0 = time.time()
        n_before = total
        with TarShardWriter(out_dir, split, samples_per_shard=1 << 62, start_index=index) as w:
            keys: List[str] = []
            imgs: List[np.ndarray] = []
            labels: List[int] = []

            def flush() -> None:
                nonlocal latent_shape
                z, zf = _encode_batch(autoencoder, imgs, device)
                latent_shape = latent_shape or tuple(z.shape[1:])
                for k, a, b, lab in zip(keys, z, zf, labels):
                    w.write(k, {
                        "latent.npy": encode_field("npy", a.astype(np_dtype)),
                        "latent_flip.npy": encode_field("npy", b.astype(np_dtype)),
                        "cls": encode_field("cls", lab),
                    })
                keys.clear(), imgs.clear(), labels.clear()

            for s in iter_samples([path]):
                field = "png" if "png" in s else "npy"
                img = decode_field(field, s[field])
                lab = decode_field("cls", s["cls"])
                keys.append(s["__key__"])
                imgs.append(img[..., None] if img.ndim == 2 else img)
                labels.append(lab)
                counts[lab] += 1
                total += 1
                if len(imgs) >= batch_size:
                    flush()
            if imgs:
                flush()
        shards.extend(w.shards)
        log(f"[latents] {name}: {total - n_before} samples encoded in {time.time() - t0:.1f}s")
    if total != int(src["num_samples"]):
        raise RuntimeError(f"encoded {total} samples but {image_dir}/{split}.json lists {src['num_samples']}")
    info = {
        "kind": "latents",
        "num_samples": total,
        "shards": shards,
        "samples_per_shard": src.get("samples_per_shard"),
        "latent_shape": list(latent_shape),
        "latent_dtype": np_dtype.name,
        "num_classes": num_classes,
        "class_counts": counts.tolist(),
        "autoencoder": autoencoder_name,
        "autoencoder_kwargs": autoencoder_kwargs or {},
        "source": {k: src.get(k) for k in ("dataset", "resolution", "channels", "image_format")},
        "source_dir": str(image_dir),
    }
    write_manifest(out_dir, split, info)
    return info


def iter_latents(latent_dir: os.PathLike | str, split: str, flipped: bool = True) -> Iterator[Tuple[str, np.ndarray, Optional[np.ndarray], int]]:
    """Yield ``(key, latent [C,h,w], latent_flip [C,h,w] or None, label)`` in shard order."""
    for s in iter_samples(shard_paths(latent_dir, split)):
        flip = decode_field("npy", s["latent_flip.npy"]) if flipped else None
        yield s["__key__"], decode_field("npy", s["latent.npy"]), flip, decode_field("cls", s["cls"])


def compute_latent_stats(
    latent_dir: os.PathLike | str, split: str = "train", max_samples: int = 10000, seed: int = 0
) -> Dict[str, Any]:
    """Per-channel mean/std (``[1, C, 1, 1]``) of up to ``max_samples`` un-flipped latents.

    The samples are ``torch.randperm(N, generator=manual_seed(seed))[:max_samples]``.
    """
    n = int(read_manifest(latent_dir, split)["num_samples"])
    g = torch.Generator().manual_seed(seed)
    chosen = set(torch.randperm(n, generator=g)[: min(max_samples, n)].tolist())
    picked = []
    for i, s in enumerate(iter_samples(shard_paths(latent_dir, split))):
        if i in chosen:
            picked.append(decode_field("npy", s["latent.npy"]))
    z = torch.from_numpy(np.stack(picked)).double()
    mean = z.mean(dim=(0, 2, 3), keepdim=True)
    std = z.std(dim=(0, 2, 3), keepdim=True)
    return {"mean": mean.float(), "std": std.float(), "num_samples": len(picked), "seed": seed, "split": split}


def save_latent_stats(path: os.PathLike | str, stats: Dict[str, Any]) -> Path:
    """Atomically save statistics as ``.pt`` (torch dict) or ``.json`` (nested lists)."""
    path = Path(path)
    if path.suffix == ".json":
        data = {k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in stats.items()}
        atomic_write_bytes(path, (json.dumps(data, indent=1) + "\n").encode())
    else:
        buf = io.BytesIO()
        torch.save({k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in stats.items()}, buf)
        atomic_write_bytes(path, buf.getvalue())
    return path


def load_latent_stats(path: os.PathLike | str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Load ``(mean, std)``, each ``float32 [1, C, 1, 1]``, from a ``.pt`` or ``.json`` file."""
    path = Path(path)
    if path.suffix == ".json":
        d = json.loads(path.read_text())
    else:
        d = torch.load(path, map_location="cpu", weights_only=True)
    mean = torch.as_tensor(d["mean"], dtype=torch.float32)
    std = torch.as_tensor(d["std"], dtype=torch.float32)
    if mean.ndim != 4 or mean.shape[0] != 1 or mean.shape[2:] != (1, 1) or std.shape != mean.shape:
        raise ValueError(f"{path}: mean/std must be [1, C, 1, 1], got {tuple(mean.shape)} / {tuple(std.shape)}")
    return mean, std


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ucgm_core.data.latents",
        description="Encode image shards with an autoencoder (plain + horizontally flipped) into "
        "latent shards, and/or compute the per-channel latent statistics file.",
    )
    p.add_argument("--image-dir", help="image shard folder (from ucgm_core.data.shards)")
    p.add_argument("--out-dir", required=True, help="latent shard folder to write (or read, with --stats-only)")
    p.add_argument("--autoencoder", default="identity", help="registry name (default identity)")
    p.add_argument("--ae-kwargs", default="{}", help='JSON keyword arguments for the autoencoder, e.g. \'{"channels": 1}\'')
    p.add_argument("--splits", nargs="+", default=["train", "test"], help="splits to encode (default train test)")
    p.add_argument("--batch-size", type=int, default=256, help="encoding batch size (default 256)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16"), help="stored latent dtype")
    p.add_argument("--no-resume", action="store_true", help="re-encode shards that already exist")
    p.add_argument("--stats-out", default=None, help="write latent statistics here (.pt or .json)")
    p.add_argument("--stats-split", default="train", help="split the statistics come from (default train)")
    p.add_argument("--stats-samples", type=int, default=10000, help="latents used for statistics (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="seed choosing the statistics samples (default 0)")
    p.add_argument("--stats-only", action="store_true", help="skip encoding; compute statistics from --out-dir")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _build_parser().parse_args(argv)
    if not args.stats_only:
        if not args.image_dir:
            print("error: --image-dir is required unless --stats-only", file=sys.stderr)
            return 2
        kwargs = json.loads(args.ae_kwargs)
        if args.autoencoder == "identity" and "channels" not in kwargs:
            kwargs["channels"] = int(read_manifest(args.image_dir, args.splits[0])["channels"])
        ae = get_autoencoder(args.autoencoder, **kwargs)
        if args.device is None:
            import torch

            args.device = "cuda" if torch.cuda.is_available() else "cpu"
        for split in args.splits:
            t0 = time.time()
            info = encode_split(
                args.image_dir, args.out_dir, split, ae,
                batch_size=args.batch_size, device=args.device, dtype=args.dtype,
                resume=not args.no_resume, autoencoder_name=args.autoencoder, autoencoder_kwargs=kwargs,
            )
            print(f"{split}: {info['num_samples']} latents {info['latent_shape']} -> {args.out_dir} ({time.time() - t0:.1f}s)")
    if args.stats_out:
        stats = compute_latent_stats(args.out_dir, args.stats_split, args.stats_samples, args.seed)
        save_latent_stats(args.stats_out, stats)
        print(f"stats ({stats['num_samples']} {args.stats_split} latents): mean {stats['mean'].flatten().tolist()} "
              f"std {stats['std'].flatten().tolist()} -> {args.stats_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
