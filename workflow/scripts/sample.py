#!/usr/bin/env python
"""Generate one shard of samples from a checkpoint with one sampler setting (per-image seeds).

Shard ``k`` holds images ``k * samples_per_shard`` ... ``min((k + 1) * samples_per_shard, num_samples) - 1``;
image ``i`` uses noise seed ``per_image_seed(seed, i)`` and label ``i mod num_classes``, so the samples do
not depend on the shard size, the batch size or the number of jobs. Standalone::

    python workflow/scripts/sample.py --checkpoint results/models/multistep/checkpoint.pt \
        --spec '{"method": "ucgm", "options": {"extrapolation": 0.5}}' --steps 8 \
        --shard 0 --samples-per-shard 1000 --num-samples 2000 --seed 0 --out shard-0000.npz

Output (``.npz``, written atomically): ``images`` uint8 ``[n, C, H, W]``, ``labels``, ``indices``, ``seeds``
(int64 ``[n]``) and ``meta`` (a JSON string: checkpoint and its sha256, sampler and all its knobs, what the
sampler is (``sampler_source``: UCGM-S, a generic baseline, or the original repository, commit and function an
original's sampler reproduces), NFE counted as the papers do: twice per evaluation with classifier-free
guidance, e.g. 40 steps -> 80; for an original's sampler its paper's count, e.g. 63 for EDM2's 32 Heun
steps, 500 for "250 x 2"; and ``evaluations_per_image``, the network rows per image actually run, e.g. 435
for REPA-E's "250 x 2", whose guidance interval covers 185 of the 250 steps).

Non-finite samples (NaN or infinite, from the sampler or the decoder) stop the job with an error naming
the output, the shard, the sampler, the steps and how many images of the batch were affected; nothing is
written. ``meta`` also records ``seed_scheme`` (how image i's noise and label are chosen) and ``num_classes``,
so that shards made differently are not mixed in one evaluation.

Interruptions: the shard is written to a hidden ``.<name>.tmp<pid>`` file, flushed to disk and renamed
onto ``--out``, so a killed job leaves either nothing or the complete file under the output name; the
temporary files of dead processes are removed at the next start. SIGTERM/SIGUSR1 stop the job with
status 75 (as training; no partial state: a shard is redone whole). ``--skip-existing`` keeps an
existing output that reads back completely and whose metadata match the request (same checkpoint
sha256, sampler, knobs, seed and index range) instead of recomputing it; anything else is recomputed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_spec, log, set_threads  # noqa: E402

from ucgm_core.accel import compile_forward, configure_device  # noqa: E402
from ucgm_core.autoencoders import get_autoencoder  # noqa: E402
from ucgm_core.distributed import PREEMPTED_EXIT_CODE  # noqa: E402
from ucgm_core.io import fsync_dir  # noqa: E402
from ucgm_core.checkpoint import build_network, checkpoint_normalizer, load_checkpoint, sha256_file  # noqa: E402
from ucgm_core.sampling import get_sampler, original_info, paper_nfe, sampler_source  # noqa: E402
from ucgm_core.sampling.generate import NonFiniteSamplesError, generate_images  # noqa: E402


def shard_indices(shard: int, samples_per_shard: int, num_samples: int) -> range:
    lo = shard * samples_per_shard
    if shard < 0 or lo >= num_samples:
        raise ValueError(f"shard {shard} is outside {num_samples} samples of {samples_per_shard} per shard")
    return range(lo, min(lo + samples_per_shard, num_samples))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--spec", required=True, help="sampler spec (JSON text or file): method, options, guidance, weights")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--samples-per-shard", type=int, required=True)
    p.add_argument("--num-samples", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--ae-kwargs", default="{}", help="JSON keyword arguments of the autoencoder (weights file, ...)")
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--skip-existing", action="store_true",
                   help="keep an existing complete --out made with the same checkpoint and settings")
    return p.parse_args(argv)


# how image i's noise and label are chosen (in every shard's metadata: shards made under another scheme
# cannot be mixed with these in one evaluation)
SEED_SCHEME = "noise per_image_seed(seed, i), label i mod num_classes"

REQUEST_KEYS = ("checkpoint_sha256", "method", "steps", "options", "guidance", "weights", "quantize", "seed",
                "shard", "samples_per_shard", "num_samples", "first_index", "count")


def existing_shard_matches(out: Path, request: dict) -> bool:
    """True when ``out`` reads back as a complete shard whose metadata equal ``request`` (REQUEST_KEYS)."""
    try:
        with np.load(out, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            n = int(request["count"])
            arrays = {k: z[k] for k in ("images", "labels", "indices", "seeds")}
    except Exception:  # noqa: BLE001 - missing, truncated or not an npz: not done
        return False
    if any(meta.get(k) != request[k] for k in REQUEST_KEYS):
        return False
    if meta.get("precision", "fp32") != request.get("precision", "fp32"):  # shards before the key were fp32
        return False
    expected = np.arange(request["first_index"], request["first_index"] + n)
    return all(len(v) == n for v in arrays.values()) and np.array_equal(arrays["indices"], expected)


def remove_stale_temporaries(out: Path) -> None:
    """Delete ``.<name>.tmp<pid>`` files left by processes that no longer run (killed jobs)."""
    for tmp in out.parent.glob(f".{out.name}.tmp*"):
        pid = tmp.name[len(f".{out.name}.tmp"):]
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
                continue  # still running (another job on this host)
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
        tmp.unlink(missing_ok=True)


def write_atomically(out: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file, fsync it, rename it onto ``out`` and fsync the folder.

    Not ``ucgm_core.io.atomic_write_bytes``: the temporary is named after this process (``.<name>.tmp<pid>``) so
    that :func:`remove_stale_temporaries` can tell a killed job's leftover from a running job's file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(str(out.parent))


def _stop_on_signal(signum, frame) -> None:
    raise SystemExit(PREEMPTED_EXIT_CODE)


def main(argv=None) -> int:
    a = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, _stop_on_signal)
    set_threads(a.threads)
    spec = load_spec(a.spec)
    out = Path(a.out)
    remove_stale_temporaries(out)
    indices = shard_indices(a.shard, a.samples_per_shard, a.num_samples)
    guidance = spec.get("guidance") or {}
    request = {
        "checkpoint_sha256": sha256_file(a.checkpoint), "method": spec["method"], "steps": a.steps,
        "options": spec.get("options") or {}, "guidance": guidance, "weights": spec.get("weights", "ema"),
        "quantize": spec.get("quantize", "round"), "seed": a.seed, "shard": a.shard,
        "samples_per_shard": a.samples_per_shard, "num_samples": a.num_samples,
        "first_index": indices.start, "count": len(indices), "precision": spec.get("precision", "fp32"),
    }
    if a.skip_existing and out.exists():
        if existing_shard_matches(out, request):
            log(f"{out} is complete and matches the request; skipped (--skip-existing)")
            return 0
        log(f"{out} exists but is incomplete or made differently; recomputing")
    ckpt = load_checkpoint(a.checkpoint)
    log(f"sampling images {indices.start}..{indices.stop - 1} ({spec['method']}, {a.steps} steps) -> {out}")
    net = build_network(ckpt, spec.get("weights", "ema"))
    configure_device(a.device, tf32=bool(spec.get("tf32", True)))  # TF32 on CUDA only
    compile_forward(net, spec.get("compile", False))
    ae_name = ckpt.get("autoencoder", "identity")
    ae_kwargs = json.loads(a.ae_kwargs)
    if ae_name == "identity":
        ae_kwargs.setdefault("channels", ckpt["latent_shape"][0])
    ae = get_autoencoder(ae_name, **ae_kwargs).to(a.device)
    t0 = time.time()
    try:
        res = generate_images(
            net, indices, seed=a.seed, method=spec["method"], steps=a.steps, transport=ckpt["transport"],
            latent_shape=ckpt["latent_shape"], num_classes=ckpt["num_classes"],
            normalizer=checkpoint_normalizer(ckpt), decode=ae.decode, options=spec.get("options") or {},
            guidance_scale=float(guidance.get("scale", 0.0)), guidance_interval=guidance.get("interval"),
            batch_size=a.batch_size, device=a.device, quantize=request["quantize"], precision=request["precision"],
            on_batch=lambda done, total: log(f"generated {done}/{total} images"),
        )
    except NonFiniteSamplesError as e:  # no shard is written: a NaN image must never be scored
        raise SystemExit(f"{out}: shard {a.shard} (images {indices.start}..{indices.stop - 1}) of checkpoint "
                         f"{a.checkpoint}: {e}; nothing written") from None
    seconds = time.time() - t0
    sampler = get_sampler(spec["method"])
    if original_info(sampler) is not None:  # the original's paper's own count ("250 x 2", EDM's 2n - 1)
        nfe = paper_nfe(sampler, a.steps, spec.get("options") or {})
    else:  # the papers' convention: with classifier-free guidance each evaluation counts twice ("40 x 2")
        nfe = res.nfe * (2 if float(guidance.get("scale", 0.0)) > 0 else 1)
    meta = {
        "checkpoint": os.path.abspath(a.checkpoint), "checkpoint_sha256": request["checkpoint_sha256"],
        "checkpoint_step": ckpt.get("step"), "method": spec["method"], "steps": a.steps,
        "sampler_source": sampler_source(spec["method"]),
        "nfe": nfe, "sampler_evaluations": res.nfe, "evaluations_per_image": res.evaluations,
        "options": spec.get("options") or {}, "guidance": guidance, "weights": spec.get("weights", "ema"),
        "quantize": request["quantize"], "seed": a.seed, "shard": a.shard, "samples_per_shard": a.samples_per_shard,
        "num_samples": a.num_samples, "first_index": indices.start, "count": len(indices),
        "precision": request["precision"], "seconds": round(seconds, 3), "seed_scheme": SEED_SCHEME,
        "num_classes": int(ckpt["num_classes"]),
    }
    buf = io.BytesIO()
    np.savez(buf, images=res.images, labels=res.labels, indices=res.indices, seeds=res.seeds,
             meta=np.asarray(json.dumps(meta)))
    write_atomically(out, buf.getvalue())
    log(f"{len(indices)} images ({spec['method']}, {a.steps} steps, NFE {res.nfe}) in {seconds:.1f}s "
        f"({len(indices) / max(seconds, 1e-9):.0f} img/s) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
