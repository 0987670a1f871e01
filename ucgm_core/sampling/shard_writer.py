"""One sample shard on disk: the sampling stage's library call :func:`write_shard` (``workflow/scripts/sample.py``
maps its flags onto it).

Shard ``k`` holds images ``k * samples_per_shard`` ... ``min((k + 1) * samples_per_shard, num_samples) - 1``;
image ``i`` uses noise seed ``per_image_seed(seed, i)`` and label ``i mod num_classes`` (:data:`SEED_SCHEME`),
so the samples do not depend on the shard size, the batch size or the number of jobs.

The shard (``.npz``) holds ``images`` uint8 ``[n, C, H, W]``, ``labels``, ``indices``, ``seeds`` (int64 ``[n]``)
and ``meta`` (a JSON string: checkpoint and its sha256, the sampler and all its knobs, ``sampler_source``, the NFE
as the papers count it, ``evaluations_per_image``, ``seed_scheme`` and ``num_classes``; see :func:`shard_meta`).

Files: the shard is written to a hidden ``.<name>.tmp<pid>`` file, fsync-ed and renamed onto the output, so a
killed job leaves either nothing or the complete file; the temporaries of dead processes are removed at the
next start (:func:`remove_stale_temporaries`). Non-finite samples stop the job before anything is written.
"""

from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional

import numpy as np

from ..accel import compile_forward, configure_device
from ..autoencoders import get_autoencoder
from ..checkpoint import build_network, checkpoint_normalizer, load_checkpoint
from ..io import fsync_dir, sha256_file
from .generate import GenerationResult, NonFiniteSamplesError, generate_images
from .originals import original_info, paper_nfe
from .registry import get_sampler, sampler_source

__all__ = [
    "SEED_SCHEME",
    "REQUEST_KEYS",
    "SamplerSpec",
    "ShardRequest",
    "shard_indices",
    "existing_shard_matches",
    "remove_stale_temporaries",
    "write_atomically",
    "shard_meta",
    "write_shard",
]

# how image i's noise and label are chosen (in every shard's metadata: shards made under another scheme
# cannot be mixed with these in one evaluation)
SEED_SCHEME = "noise per_image_seed(seed, i), label i mod num_classes"

# the metadata keys a kept shard (skip_existing) must share with the request ("precision" is compared apart)
REQUEST_KEYS = (
    "checkpoint_sha256",
    "method",
    "steps",
    "options",
    "guidance",
    "weights",
    "quantize",
    "seed",
    "shard",
    "samples_per_shard",
    "num_samples",
    "first_index",
    "count",
)

Log = Callable[[str], None]


@dataclass(frozen=True)
class SamplerSpec:
    """The sampler settings of one shard (the ``--spec`` JSON of ``sample.py``), with the sampling stage's
    defaults: the one place they live (the schema's ``samplers`` defaults are checked against these by
    ``tests/sampling/test_sampler_defaults.py``). ``guidance`` is kept as given (it is recorded in the shard's metadata
    as such); :attr:`guidance_scale` / :attr:`guidance_interval` read it with their defaults."""

    method: str
    options: Dict[str, Any] = field(default_factory=dict)
    guidance: Dict[str, Any] = field(default_factory=dict)
    weights: str = "ema"
    quantize: str = "round"
    precision: str = "fp32"
    tf32: bool = True
    compile: bool | str = False

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], where: str = "--spec") -> "SamplerSpec":
        """The spec from its JSON form; ``options`` / ``guidance`` given as null count as empty. Other keys
        (a config's ``model``, ``steps``, ``label``, ...) are ignored: the rule passes the sampler's entry."""
        if not isinstance(spec, Mapping) or "method" not in spec:
            raise ValueError(f"{where}: expected a JSON object with at least a 'method' key, got {spec!r:.200}")
        given = {k: spec[k] for k in ("weights", "quantize", "precision", "tf32", "compile") if k in spec}
        return cls(
            method=spec["method"],
            options=dict(spec.get("options") or {}),
            guidance=dict(spec.get("guidance") or {}),
            **given,
        )

    @property
    def guidance_scale(self) -> float:
        return float(self.guidance.get("scale", 0.0))

    @property
    def guidance_interval(self) -> Optional[list]:
        return self.guidance.get("interval")


@dataclass(frozen=True)
class ShardRequest:
    """Which images of which run a shard holds: ``samples_per_shard`` images per shard of ``num_samples``."""

    checkpoint: str
    spec: SamplerSpec
    steps: int
    samples_per_shard: int
    num_samples: int
    shard: int = 0
    seed: int = 0

    @property
    def indices(self) -> range:
        return shard_indices(self.shard, self.samples_per_shard, self.num_samples)

    def as_meta(self) -> Dict[str, Any]:
        """The metadata a shard made for this request holds (REQUEST_KEYS and ``precision``)."""
        idx, s = self.indices, self.spec
        return {
            "checkpoint_sha256": sha256_file(self.checkpoint),
            "method": s.method,
            "steps": self.steps,
            "options": s.options,
            "guidance": s.guidance,
            "weights": s.weights,
            "quantize": s.quantize,
            "seed": self.seed,
            "shard": self.shard,
            "samples_per_shard": self.samples_per_shard,
            "num_samples": self.num_samples,
            "first_index": idx.start,
            "count": len(idx),
            "precision": s.precision,
        }


def shard_indices(shard: int, samples_per_shard: int, num_samples: int) -> range:
    """The global image indices of shard ``shard``; ``ValueError`` naming the shard if it holds none."""
    lo = shard * samples_per_shard
    if shard < 0 or lo >= num_samples:
        raise ValueError(f"shard {shard} is outside {num_samples} samples of {samples_per_shard} per shard")
    return range(lo, min(lo + samples_per_shard, num_samples))


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
        pid = tmp.name[len(f".{out.name}.tmp") :]
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


def _paper_nfe(req: ShardRequest, res: GenerationResult) -> float:
    """NFE as the papers count it: an original's sampler its paper's own count ("250 x 2", EDM's 2n - 1);
    otherwise each evaluation counts twice with classifier-free guidance ("40 x 2")."""
    sampler = get_sampler(req.spec.method)
    if original_info(sampler) is not None:
        return paper_nfe(sampler, req.steps, req.spec.options)
    return res.nfe * (2 if req.spec.guidance_scale > 0 else 1)


def shard_meta(req: ShardRequest, request: dict, ckpt: dict, res: GenerationResult, seconds: float) -> dict:
    """The ``meta`` JSON of a shard: the request, what the sampler is, its NFE, timing and the seed scheme."""
    s, idx = req.spec, req.indices
    return {
        "checkpoint": os.path.abspath(req.checkpoint),
        "checkpoint_sha256": request["checkpoint_sha256"],
        "checkpoint_step": ckpt.get("step"),
        "method": s.method,
        "steps": req.steps,
        "sampler_source": sampler_source(s.method),
        "nfe": _paper_nfe(req, res),
        "sampler_evaluations": res.nfe,
        "evaluations_per_image": res.evaluations,
        "options": s.options,
        "guidance": s.guidance,
        "weights": s.weights,
        "quantize": s.quantize,
        "seed": req.seed,
        "shard": req.shard,
        "samples_per_shard": req.samples_per_shard,
        "num_samples": req.num_samples,
        "first_index": idx.start,
        "count": len(idx),
        "precision": s.precision,
        "seconds": round(seconds, 3),
        "seed_scheme": SEED_SCHEME,
        "num_classes": int(ckpt["num_classes"]),
    }


def _build(req: ShardRequest, ckpt: dict, ae_kwargs: Mapping[str, Any], device: str) -> tuple:
    """The checkpoint's network (the spec's weights, device settings, compiled if asked) and its autoencoder."""
    s = req.spec
    net = build_network(ckpt, s.weights)
    configure_device(device, tf32=bool(s.tf32))  # TF32 on CUDA only
    compile_forward(net, s.compile)
    ae_name = ckpt.get("autoencoder", "identity")
    kwargs = dict(ae_kwargs)
    if ae_name == "identity":
        kwargs.setdefault("channels", ckpt["latent_shape"][0])
    return net, get_autoencoder(ae_name, **kwargs).to(device)


def _generate(req: ShardRequest, ckpt: dict, net, ae, batch_size: int, device: str, log: Log) -> GenerationResult:
    """The shard's images: ``req``'s sampler on ``net``, decoded by ``ae``, quantised by the spec."""
    s = req.spec
    return generate_images(
        net,
        req.indices,
        seed=req.seed,
        method=s.method,
        steps=req.steps,
        transport=ckpt["transport"],
        latent_shape=ckpt["latent_shape"],
        num_classes=ckpt["num_classes"],
        normalizer=checkpoint_normalizer(ckpt),
        decode=ae.decode,
        options=s.options,
        guidance_scale=s.guidance_scale,
        guidance_interval=s.guidance_interval,
        batch_size=batch_size,
        device=device,
        quantize=s.quantize,
        precision=s.precision,
        on_batch=lambda done, total: log(f"generated {done}/{total} images"),
    )


def write_shard(
    req: ShardRequest,
    out: str | os.PathLike,
    *,
    ae_kwargs: Optional[Mapping[str, Any]] = None,
    batch_size: int = 250,
    device: str = "cpu",
    skip_existing: bool = False,
    log: Log = print,
) -> bool:
    """Generate shard ``req`` and write it atomically to ``out``; returns False when ``skip_existing`` kept a
    complete ``out`` made with the same checkpoint and settings, True when a shard was written.

    Raises ``SystemExit`` naming the output, shard, images and checkpoint when the samples are not finite
    (nothing is written: a NaN image must never be scored)."""
    out = Path(out)
    remove_stale_temporaries(out)
    idx, s = req.indices, req.spec
    request = req.as_meta()
    if skip_existing and out.exists():
        if existing_shard_matches(out, request):
            log(f"{out} is complete and matches the request; skipped (--skip-existing)")
            return False
        log(f"{out} exists but is incomplete or made differently; recomputing")
    ckpt = load_checkpoint(req.checkpoint)
    log(f"sampling images {idx.start}..{idx.stop - 1} ({s.method}, {req.steps} steps) -> {out}")
    net, ae = _build(req, ckpt, ae_kwargs or {}, device)
    t0 = time.time()
    try:
        res = _generate(req, ckpt, net, ae, batch_size, device, log)
    except NonFiniteSamplesError as e:
        raise SystemExit(
            f"{out}: shard {req.shard} (images {idx.start}..{idx.stop - 1}) of checkpoint "
            f"{req.checkpoint}: {e}; nothing written"
        ) from None
    seconds = time.time() - t0
    meta = shard_meta(req, request, ckpt, res, seconds)
    buf = io.BytesIO()
    np.savez(
        buf,
        images=res.images,
        labels=res.labels,
        indices=res.indices,
        seeds=res.seeds,
        meta=np.asarray(json.dumps(meta)),
    )
    write_atomically(out, buf.getvalue())
    log(
        f"{len(idx)} images ({s.method}, {req.steps} steps, NFE {res.nfe}) in {seconds:.1f}s "
        f"({len(idx) / max(seconds, 1e-9):.0f} img/s) -> {out}"
    )
    return True
