"""GPU throughput of the pipeline's heavy parts, written as JSON: training images/s and MFU, sampling
images/s per NFE, VAE encode/decode images/s.

    python benchmarks/gpu.py --json gpu.json                       # on a GPU: TiT-XL/1 and TiT-XL/2, 256 px
    python benchmarks/gpu.py --json gpu.json --precision fp32 --compile --batch-sizes 64 128 256
    python benchmarks/gpu.py --estimate --json estimate.json       # no timing: FLOPs per step and memory
    python benchmarks/gpu.py --smoke --json out.json               # tiny models, 1-2 steps, any device (the test)

What is timed is the project's own code path, as the workflow runs it:

* training: :class:`ucgm_core.training.loop.Trainer` steps (per-step seeded draws, UCGM-T objective with
  its teacher, gradient hygiene, the configured optimizer (fused on CUDA where torch has it), evaluation
  EMA) on random latents of the paper's shapes: TiT-XL/1 on VA-VAE f16d32 latents (32 x 16 x 16) and
  TiT-XL/2 on SD-VAE f8c4 latents (4 x 32 x 32), both 256 tokens, with the multi-step objective of
  ``config/experiments/in1k256_{vavae,sdvae}.yaml`` (and ``--objectives fewstep``: the few-step tuning,
  lambda = 1, fc-vs-xz, RAdam, clip 0.1). Batch sizes are per GPU (the paper: 1024 on 8 GPUs = 128); a
  batch that does not fit is recorded as ``oom`` and larger ones are skipped.
  FLOPs per step are counted by ``torch.utils.flop_counter.FlopCounterMode`` on the meta device (matmul,
  convolution and attention FLOPs: forward + backward of the online network plus the objective's
  no-grad forwards: teacher, consistency), so they do not depend on the device or on compile (and
  include the attention, which torch's counter misses for the CPU flash-attention kernel);
  MFU = FLOPs per step / step time / the device's dense peak for the precision (bf16, or TF32 for fp32
  with TF32 on; ``--peak-tflops`` overrides the built-in table).
* sampling: :func:`ucgm_core.sampling.generate.generate_images` (UCGM-S, order 1: NFE = steps; per-image
  noise) with the network in eval mode, decoding excluded (timed separately below);
  ``img_nfe_per_s`` = images/s x NFE, comparable across step counts.
* autoencoders: ``encode`` and ``decode`` of the registry's wrappers (SD-VAE ft-EMA, VA-VAE f16d32) with
  random weights of the real architectures (throughput does not depend on the values) at 256 px.

``--estimate`` (also part of ``--smoke``) needs no GPU: FLOPs per training step at batch 1 and the
paper's batch, and a memory estimate per GPU: float32 weights, gradients, optimizer states, evaluation
EMA and teacher, plus the activations the backward keeps, measured on the CPU (saved-tensor hooks) for
networks of depth 1 and 2 at batch 1 and extrapolated linearly to the full depth and the batch.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ucgm_core import accel  # noqa: E402
from ucgm_core.data.loader import LatentNormalizer  # noqa: E402
from ucgm_core.models import build_model  # noqa: E402
from ucgm_core.sampling.generate import generate_images  # noqa: E402
from ucgm_core.training import UCGMConfig, UCGMObjective  # noqa: E402
from ucgm_core.training.loop import Trainer, TrainSettings  # noqa: E402

# -- what is measured ------------------------------------------------------------------------------------

#: the paper's 256-px TiT models (config/experiments/in1k256_*.yaml): architecture -> latent shape, VAE
MODELS = {
    "TiT-XL/1": {"latent_shape": (32, 16, 16), "autoencoder": "vavae_f16d32"},
    "TiT-XL/2": {"latent_shape": (4, 32, 32), "autoencoder": "sdvae_ema_f8c4"},
}
#: objective and optimizer settings of the paper's runs (multi-step: tit_vavae_multistep; few-step tuning)
OBJECTIVES = {
    "multistep": dict(
        objective=dict(
            transport="Linear",
            consistency_ratio=0.0,
            enhanced_ratio=0.47,
            enhanced_style="ft-vs-fe",
            huber_c=0.0,
            teacher_decay=0.999,
        ),
        train=dict(optimizer="AdamW", lr=2e-4, betas=(0.9, 0.95), max_grad_norm=None, ema_decay=0.9999),
    ),
    "fewstep": dict(
        objective=dict(
            transport="Linear",
            consistency_ratio=1.0,
            enhanced_ratio=2.0,
            enhanced_style="fc-vs-xz",
            huber_c=5.0,
            teacher_decay=1.0,
            time_dist=(0.8, 1.0, 1.0),
            cosine_loss=False,
        ),
        train=dict(optimizer="RAdam", lr=1e-4, betas=(0.9, 0.999), max_grad_norm=0.1, ema_decay=0.9999),
    ),
}
PAPER_GLOBAL_BATCH, PAPER_GPUS = 1024, 8
NUM_CLASSES = 1000

#: the smoke run's stand-ins: a 2-block TiT on small latents, tiny VAEs of the same families
SMOKE_MODELS = {
    "TiT-smoke/1": {
        "latent_shape": (8, 4, 4),
        "autoencoder": "vavae_f16d32",
        "kwargs": dict(depth=2, hidden_size=64, num_heads=2, patch_size=1),
    },
    "TiT-smoke/2": {
        "latent_shape": (4, 8, 8),
        "autoencoder": "sdvae_ema_f8c4",
        "kwargs": dict(depth=2, hidden_size=64, num_heads=2, patch_size=2),
    },
}

#: dense peak FLOP/s per precision ("bf16", "tf32", "fp32"), from the vendors' data sheets (no sparsity)
PEAK_TFLOPS = [  # first match of the device name wins
    ("H100 PCIe", {"bf16": 756.0, "tf32": 378.0, "fp32": 51.2}),
    ("H100", {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    ("H200", {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    ("A100", {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    ("L40S", {"bf16": 362.0, "tf32": 183.0, "fp32": 91.6}),
]


def peak_flops(device: torch.device, precision: str, tf32: bool, override_tflops: Optional[float]) -> Optional[float]:
    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    kind = "bf16" if precision == "bf16" else ("tf32" if tf32 else "fp32")
    for key, peaks in PEAK_TFLOPS:
        if key in name:
            return peaks[kind] * 1e12
    return None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def build(arch: str, spec: dict, device="cpu", depth: Optional[int] = None) -> torch.nn.Module:
    c, s, _ = spec["latent_shape"]
    kwargs = dict(spec.get("kwargs", {}))
    if depth is not None:
        kwargs["depth"] = depth
    name = "TiT-Tiny/2" if "kwargs" in spec else arch  # smoke models: a registry entry with overrides
    return build_model(name, input_size=s, in_channels=c, num_classes=NUM_CLASSES, **kwargs).to(device)


# -- FLOPs -----------------------------------------------------------------------------------------------


def objective_nfe(objective: str) -> int:
    """Network evaluations per training step (1 with gradient + the no-grad ones), from a real step."""
    torch.manual_seed(0)
    model = build_model("TiT-Tiny/2", input_size=4, in_channels=1, num_classes=3)
    cfg = UCGMConfig(num_classes=3, **OBJECTIVES[objective]["objective"])
    out = UCGMObjective(cfg)(model, torch.randn(2, 1, 4, 4), torch.tensor([0, 1]))
    return int(out.nfe)


def network_flops(arch: str, spec: dict, batch: int, depth: Optional[int] = None) -> Dict[str, int]:
    """Forward and forward+backward FLOPs of the network at ``batch``, counted on the meta device."""
    with torch.device("meta"):
        model = build(arch, spec, "meta", depth)
    model.check_inputs = lambda x, t, y: t.reshape(-1).float()  # the label range check reads values
    x = torch.randn(batch, *spec["latent_shape"], device="meta")
    t, y = torch.rand(batch, device="meta"), torch.zeros(batch, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as fwd:
        with torch.no_grad():
            model(x, t, y)
    with FlopCounterMode(display=False) as both:
        model(x, t, y).float().square().mean().backward()
    return {"forward": int(fwd.get_total_flops()), "forward_backward": int(both.get_total_flops())}


def step_flops(arch: str, spec: dict, objective: str, batch: int, nfe: Optional[int] = None) -> Dict[str, int]:
    nfe = objective_nfe(objective) if nfe is None else nfe
    f = network_flops(arch, spec, batch)
    total = f["forward_backward"] + (nfe - 1) * f["forward"]
    return {
        "batch": batch,
        "nfe": nfe,
        "forward": f["forward"],
        "forward_backward": f["forward_backward"],
        "step": total,
    }


# -- memory estimate -------------------------------------------------------------------------------------


def saved_activation_bytes(arch: str, spec: dict, batch: int, depth: int, precision: str) -> int:
    """Bytes of the distinct tensors autograd keeps for the backward of one forward (parameters excluded),
    measured on the CPU; under bf16 autocast the bf16 copies of the weights count (autocast keeps them)."""
    torch.manual_seed(0)
    model = build(arch, spec, "cpu", depth)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: Dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = max(seen.get(ptr, 0), t.untyped_storage().nbytes())
        return t

    x = torch.randn(batch, *spec["latent_shape"])
    t, y = torch.rand(batch), torch.randint(0, NUM_CLASSES, (batch,))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), accel.autocast(precision, "cpu"):
        out = model(x, t, y)
    del out
    return sum(seen.values())


def memory_estimate(arch: str, spec: dict, precision: str, per_gpu_batch: int, full_depth: int) -> dict:
    """Per-GPU bytes: weights, gradients, optimizer states (Adam-type: 2 per parameter), evaluation EMA
    and teacher (float32 each), and the tensors the backward keeps.

    Saved bytes are measured for depth d in {1, 2} and batch b in {1, 2} and fitted exactly by
    ``F0 + d F1 + b (P0 + d P1)`` (fixed parts, e.g. autocast's bf16 weight copies, and per-image
    parts, per block and outside the blocks), then evaluated at the full depth and ``per_gpu_batch``."""
    with torch.device("meta"):
        model = build(arch, spec, "meta")
    n = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    a = {(d, b): saved_activation_bytes(arch, spec, b, d, precision) for d in (1, 2) for b in (1, 2)}
    p1 = (a[2, 2] - a[1, 2]) - (a[2, 1] - a[1, 1])  # per block, per image
    f1 = (a[2, 1] - a[1, 1]) - p1  # per block, fixed
    p0 = (a[1, 2] - a[1, 1]) - p1  # outside the blocks, per image
    f0 = a[1, 1] - f1 - p0 - p1  # outside the blocks, fixed
    per_image, fixed = p0 + full_depth * p1, f0 + full_depth * f1
    static = {
        "weights": 4 * n,
        "gradients": 4 * trainable,
        "optimizer_states": 8 * trainable,
        "ema": 4 * n,
        "teacher": 4 * n,
    }
    activations = fixed + per_image * per_gpu_batch
    return {
        "parameters": n,
        "trainable_parameters": trainable,
        "precision": precision,
        "depth": full_depth,
        "per_gpu_batch": per_gpu_batch,
        **{f"{k}_bytes": v for k, v in static.items()},
        "activation_bytes_per_image": per_image,
        "activation_bytes_fixed": fixed,
        "activation_bytes": activations,
        "total_bytes": sum(static.values()) + activations,
        "method": "saved tensors of one forward on the CPU at depth 1-2 and batch 1-2, extrapolated linearly",
    }


# -- timing ----------------------------------------------------------------------------------------------


class RandomLatents:
    """A BatchSource of fixed random latents on the device (no data loading in the timing)."""

    def __init__(self, shape, batch: int, device):
        g = torch.Generator(device=device).manual_seed(0)
        self.x = torch.randn(batch, *shape, device=device, generator=g)
        self.y = torch.randint(0, NUM_CLASSES, (batch,), device=device, generator=g)

    def next_batch(self):
        return self.x, self.y

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def time_training(arch, spec, objective, batch, device, args, tmp: Path) -> dict:
    o = OBJECTIVES[objective]
    settings = TrainSettings(
        steps=10**9,
        batch_size=batch,
        seed=0,
        precision=args.precision,
        tf32=args.tf32,
        compile=args.compile,
        seeding="step",
        **o["train"],
    )
    torch.manual_seed(0)
    model = build(arch, spec, device)
    trainer = Trainer(
        model,
        UCGMObjective(UCGMConfig(num_classes=NUM_CLASSES, **o["objective"])),
        RandomLatents(spec["latent_shape"], batch, device),
        settings,
        tmp / "unused.pt",
        log=lambda m: None,
        device=device,
    )
    for _ in range(args.warmup):
        trainer.step()
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = trainer.step()
    synchronize(device)
    seconds = (time.perf_counter() - t0) / args.steps
    out = {
        "step_s": seconds,
        "img_per_s": batch / seconds,
        "loss_finite": bool(torch.isfinite(loss).item()),
        "fused_optimizer": any(bool(g.get("fused")) for g in trainer.optimizer.param_groups),
    }
    if device.type == "cuda":
        out["max_memory_bytes"] = int(torch.cuda.max_memory_allocated(device))
    return out


def bench_training(models, args, device, tmp: Path) -> List[dict]:
    rows = []
    for arch, spec in models.items():
        for objective in args.objectives:
            flops1 = step_flops(arch, spec, objective, 1)
            fitted = True
            for batch in args.batch_sizes:
                row = {
                    "model": arch,
                    "latent_shape": list(spec["latent_shape"]),
                    "objective": objective,
                    "batch": batch,
                    "flops_per_step": flops1["step"] * batch,
                    "flops_per_image": flops1["step"],
                    "nfe_per_step": flops1["nfe"],
                }
                if not fitted:
                    rows.append({**row, "status": "skipped (a smaller batch did not fit)"})
                    continue
                free_memory(device)
                try:
                    row.update(time_training(arch, spec, objective, batch, device, args, tmp), status="ok")
                except (RuntimeError, torch.cuda.OutOfMemoryError) as e:
                    if not is_oom(e):
                        raise
                    fitted = False
                    row["status"] = "oom"
                free_memory(device)
                if row["status"] == "ok":
                    row["achieved_flops"] = row["flops_per_step"] / row["step_s"]
                    row["mfu"] = row["achieved_flops"] / args.peak if args.peak else None
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def bench_sampling(models, args, device) -> List[dict]:
    rows = []
    for arch, spec in models.items():
        torch.manual_seed(0)
        model = build(arch, spec, device).eval()
        accel.compile_forward(model, args.compile)
        c, s, _ = spec["latent_shape"]

        def run(steps, model=model):
            return generate_images(
                model,
                range(args.sample_batch),
                seed=0,
                method="ucgm",
                steps=steps,
                transport="Linear",
                latent_shape=[c, s, s],
                num_classes=NUM_CLASSES,
                normalizer=LatentNormalizer(None, None, 1.0),
                decode=lambda x: x.clamp(0, 1),
                guidance_scale=args.cfg_scale,
                batch_size=args.sample_batch,
                device=device,
                precision=args.precision,
            )

        free_memory(device)
        run(1)  # warm-up (compilation, kernels)
        for steps in args.sample_steps:
            synchronize(device)
            t0 = time.perf_counter()
            res = run(steps)
            synchronize(device)
            seconds = time.perf_counter() - t0
            img_s = args.sample_batch / seconds
            row = {
                "model": arch,
                "batch": args.sample_batch,
                "steps": steps,
                "nfe": res.nfe,
                "cfg_scale": args.cfg_scale,
                "network_rows_per_image": res.evaluations,
                "seconds": seconds,
                "img_per_s": img_s,
                "img_nfe_per_s": img_s * res.nfe,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
        del model
    return rows


def make_autoencoder(name: str, smoke: bool, tmp: Path, device):
    """The registry's wrapper around randomly initialised weights of the real (or, smoke, a tiny) architecture."""
    from diffusers import AutoencoderKL

    from ucgm_core.autoencoders import get_autoencoder
    from ucgm_core.autoencoders.sdvae import SD_VAE_CONFIG
    from ucgm_core.autoencoders.vavae import (
        VAVAE_F16D32_DDCONFIG,
        diffusers_to_ldm_state_dict,
        ldm_vae_config_to_diffusers,
    )
    from ucgm_core.models.convert import save_state_dict

    torch.manual_seed(0)
    if name == "vavae_f16d32":
        dd = dict(VAVAE_F16D32_DDCONFIG)
        embed = 32
        if smoke:
            dd.update(ch=32, ch_mult=[1, 2], z_channels=8, resolution=32, attn_resolutions=[8], num_res_blocks=1)
            embed = 8
        vae = AutoencoderKL(**ldm_vae_config_to_diffusers(dd, embed))
        ae = get_autoencoder(
            name, checkpoint=diffusers_to_ldm_state_dict(vae.state_dict()), ddconfig=dd, embed_dim=embed
        )
    else:
        cfg = dict(SD_VAE_CONFIG)
        if smoke:
            cfg.update(
                block_out_channels=[32, 32],
                down_block_types=["DownEncoderBlock2D"] * 2,
                up_block_types=["UpDecoderBlock2D"] * 2,
                layers_per_block=1,
            )
        vae = AutoencoderKL(**cfg)
        path = save_state_dict(vae.state_dict(), tmp / f"{name}.safetensors")
        ae = get_autoencoder(name, source=str(path), config=cfg)
    return ae.to(device).eval()


def bench_autoencoders(names: Sequence[str], args, device, tmp: Path) -> List[dict]:
    rows = []
    for name in names:
        ae = make_autoencoder(name, args.smoke, tmp, device).set_compute(precision=args.vae_precision, tf32=args.tf32)
        res = args.vae_resolution
        x = torch.rand(args.vae_batch, 3, res, res, device=device) * 2 - 1
        free_memory(device)
        z = ae.encode(x)  # warm-up
        ae.decode(z)
        timings = {}
        for what, fn, arg in (("encode", ae.encode, x), ("decode", ae.decode, z)):
            synchronize(device)
            t0 = time.perf_counter()
            for _ in range(args.vae_repeats):
                fn(arg)
            synchronize(device)
            timings[what] = (time.perf_counter() - t0) / args.vae_repeats
        row = {
            "autoencoder": name,
            "resolution": res,
            "batch": args.vae_batch,
            "latent_shape": list(z.shape[1:]),
            "precision": args.vae_precision,
            "encode_img_per_s": args.vae_batch / timings["encode"],
            "decode_img_per_s": args.vae_batch / timings["decode"],
        }
        if device.type == "cuda":
            row["max_memory_bytes"] = int(torch.cuda.max_memory_allocated(device))
        rows.append(row)
        print(json.dumps(row), flush=True)
        del ae
    return rows


def estimates(models, args) -> List[dict]:
    rows = []
    per_gpu = PAPER_GLOBAL_BATCH // PAPER_GPUS
    for arch, spec in models.items():
        with torch.device("meta"):
            full_depth = len(build(arch, spec, "meta").blocks)
        for objective in args.objectives:
            f1 = step_flops(arch, spec, objective, 1)
            row = {
                "model": arch,
                "latent_shape": list(spec["latent_shape"]),
                "objective": objective,
                "nfe_per_step": f1["nfe"],
                "forward_flops_per_image": f1["forward"],
                "forward_backward_flops_per_image": f1["forward_backward"],
                "step_flops_batch1": f1["step"],
                "paper_global_batch": PAPER_GLOBAL_BATCH,
                "step_flops_paper_batch": f1["step"] * PAPER_GLOBAL_BATCH,
                "step_flops_per_gpu": f1["step"] * per_gpu,
                "per_gpu_batch": per_gpu,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
        for precision in ("fp32", "bf16"):
            mem = {"model": arch, "kind": "memory", **memory_estimate(arch, spec, precision, per_gpu, full_depth)}
            rows.append(mem)
            print(json.dumps(mem), flush=True)
    return rows


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--smoke", action="store_true", help="tiny models, 1-2 steps: checks the script on any device")
    p.add_argument("--estimate", action="store_true", help="only the FLOPs and memory estimates (no timing)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--models", nargs="+", default=None, help=f"default: {list(MODELS)}")
    p.add_argument("--objectives", nargs="+", default=["multistep"], choices=list(OBJECTIVES))
    p.add_argument("--precision", default="bf16", choices=accel.PRECISIONS, help="network precision (default bf16)")
    p.add_argument("--vae-precision", default="fp32", choices=accel.PRECISIONS)
    p.add_argument("--no-tf32", dest="tf32", action="store_false", help="TF32 off (CUDA)")
    p.add_argument(
        "--compile",
        nargs="?",
        const=True,
        default=False,
        help="torch.compile the network (optionally a backend name, e.g. aot_eager)",
    )
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[32, 64, 128, 256], help="per-GPU training batches")
    p.add_argument("--steps", type=int, default=10, help="timed training steps per batch size")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--sample-batch", type=int, default=256)
    p.add_argument("--sample-steps", nargs="+", type=int, default=[4, 16])
    p.add_argument("--cfg-scale", type=float, default=0.0)
    p.add_argument("--vae-batch", type=int, default=32)
    p.add_argument("--vae-resolution", type=int, default=256)
    p.add_argument("--vae-repeats", type=int, default=3)
    p.add_argument("--peak-tflops", type=float, default=None, help="dense peak of the device for MFU")
    p.add_argument("--skip", nargs="*", default=[], choices=["train", "sample", "vae", "estimate"])
    a = p.parse_args(argv)
    if a.smoke:
        a.batch_sizes, a.steps, a.warmup = [2], 1, 1
        a.sample_batch, a.sample_steps = 2, [1, 2]
        a.vae_batch, a.vae_resolution, a.vae_repeats = 1, 32, 1
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    device = torch.device(a.device)
    models = SMOKE_MODELS if a.smoke else MODELS
    if a.models:
        models = {m: models[m] for m in a.models}
    accel.configure_device(device, tf32=a.tf32)
    a.peak = peak_flops(device, a.precision, a.tf32, a.peak_tflops)
    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "precision": a.precision,
        "vae_precision": a.vae_precision,
        "tf32": a.tf32 and device.type == "cuda",
        "compile": a.compile,
        "smoke": a.smoke,
        "peak_flops": a.peak,
        "models": {
            k: {"latent_shape": list(v["latent_shape"]), "autoencoder": v["autoencoder"]} for k, v in models.items()
        },
        "objectives": a.objectives,
        "threads": torch.get_num_threads(),
    }
    result = {"meta": meta, "train": [], "sample": [], "vae": [], "estimate": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not a.estimate:
            if "train" not in a.skip:
                result["train"] = bench_training(models, a, device, tmp)
            if "sample" not in a.skip:
                result["sample"] = bench_sampling(models, a, device)
            if "vae" not in a.skip:
                names = list(dict.fromkeys(v["autoencoder"] for v in models.values()))
                result["vae"] = bench_autoencoders(names, a, device, tmp)
        if a.estimate or "estimate" not in a.skip:
            result["estimate"] = estimates(models, a)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
