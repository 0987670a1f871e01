"""benchmarks/gpu.py: the smoke mode runs every part on the CPU and writes the JSON the GPU run writes."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[2]
GPU = ROOT / "benchmarks" / "gpu.py"


def _module():
    spec = importlib.util.spec_from_file_location("_bench_gpu", GPU)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_benchmark_smoke(tmp_path):
    out = tmp_path / "out.json"
    run = subprocess.run(
        [sys.executable, str(GPU), "--smoke", "--device", "cpu", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result) == {"meta", "train", "sample", "vae", "estimate"}
    meta = result["meta"]
    assert meta["smoke"] and meta["device"] == "cpu" and meta["precision"] == "bf16" and meta["peak_flops"] is None
    assert len(result["train"]) == 2 and len(result["sample"]) == 4 and len(result["vae"]) == 2
    for row in result["train"]:
        assert row["status"] == "ok" and row["loss_finite"] and row["img_per_s"] > 0 and row["mfu"] is None
        assert row["flops_per_step"] == row["batch"] * row["flops_per_image"] > 0 and row["nfe_per_step"] == 2
        assert not row["fused_optimizer"]  # CPU parameters
    for row in result["sample"]:
        assert row["nfe"] == row["steps"] and row["img_nfe_per_s"] > 0
    assert {r["autoencoder"] for r in result["vae"]} == {"vavae_f16d32", "sdvae_ema_f8c4"}
    for row in result["vae"]:
        assert row["encode_img_per_s"] > 0 and row["decode_img_per_s"] > 0
    flops = [r for r in result["estimate"] if r.get("kind") != "memory"]
    memory = [r for r in result["estimate"] if r.get("kind") == "memory"]
    assert len(flops) == 2 and {m["precision"] for m in memory} == {"fp32", "bf16"}
    for m in memory:
        static = sum(m[f"{k}_bytes"] for k in ("weights", "gradients", "optimizer_states", "ema", "teacher"))
        assert m["total_bytes"] == static + m["activation_bytes"] and m["activation_bytes_per_image"] > 0


def test_flops_on_meta_equal_a_real_count():
    """FLOPs counted on the meta device (no memory, any size) equal those of a real forward and backward."""
    gpu = _module()
    spec = gpu.SMOKE_MODELS["TiT-smoke/2"]
    counted = gpu.network_flops("TiT-smoke/2", spec, batch=3)
    torch.manual_seed(0)
    model = gpu.build("TiT-smoke/2", spec)
    x, t, y = torch.randn(3, *spec["latent_shape"]), torch.rand(3), torch.tensor([0, 1, 2])
    # torch's flop counter has no formula for the CPU flash-attention kernel: count with the math one
    with sdpa_kernel(SDPBackend.MATH):
        with FlopCounterMode(display=False) as fwd, torch.no_grad():
            model(x, t, y)
        with FlopCounterMode(display=False) as both:
            model(x, t, y).square().mean().backward()
    assert counted == {"forward": fwd.get_total_flops(), "forward_backward": both.get_total_flops()}
    # backward = 2 x forward, less the input gradient of the patch embedding (the latents need none)
    assert 2.9 * counted["forward"] < counted["forward_backward"] < 3 * counted["forward"]
    assert gpu.step_flops("TiT-smoke/2", spec, "fewstep", 2)["nfe"] == 4
