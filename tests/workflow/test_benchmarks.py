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


def test_extractor_sensitivity_finds_mirrored_samples(tmp_path):
    """benchmarks/extractor_sensitivity.py on blobs whose position encodes the class (a mirrored blob sits at
    another class's place): every degradation scores above the floor, and in a sample folder whose images of
    classes 1-4 are mirrored, those classes (and only those) are misread and far off in per-class FID."""
    import gzip
    import re
    import struct

    import numpy as np

    sys.path.insert(0, str(ROOT / "tests" / "metrics"))
    from test_metrics import make_blobs

    from ucgm_core.metrics import classifier as clf_mod

    def idx(arr: np.ndarray) -> bytes:
        return bytes([0, 0, 8, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.tobytes()

    raw = tmp_path / "raw"
    raw.mkdir()
    for prefix, n, seed in (("train", 600, 1), ("t10k", 400, 2)):
        x, y = make_blobs(n, seed=seed)
        (raw / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx(x[:, 0].numpy())))
        (raw / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx(y.numpy().astype(np.uint8))))
    x, y = make_blobs(600, seed=1)
    cfg = clf_mod.ClassifierConfig(widths=(8, 16), feature_dim=32, dropout=0.0)
    clf_mod.train_classifier(x, y, tmp_path / "clf.pt", seed=0, steps=120, batch_size=64, lr=3e-3, config=cfg)
    s, labels = make_blobs(300, seed=3)
    s = torch.where(((labels >= 1) & (labels <= 4))[:, None, None, None], s.flip(-1), s)
    (tmp_path / "samples").mkdir()
    np.savez(tmp_path / "samples" / "shard-0000.npz", images=s.permute(0, 2, 3, 1).numpy(), labels=labels.numpy())
    script = ROOT / "benchmarks" / "extractor_sensitivity.py"
    args = ["--extractor", str(tmp_path / "clf.pt"), "--raw", str(raw), "--num", "300"]
    run = subprocess.run(
        [sys.executable, str(script), *args, "--samples", str(tmp_path / "samples")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    fid = {m[0]: float(m[1]) for m in re.findall(r"^\| ([^|]+?) \| ([0-9.]+) \|$", run.stdout, re.M)}
    assert len(fid) == 9 and min(fid, key=fid.get) == "none (the floor)", run.stdout  # every degradation costs
    rows = re.findall(r"^\| (\d) \| (\d+) \| (\d+) \| ([0-9.]+) \|", run.stdout, re.M)
    assert len(rows) == 10, run.stdout
    accuracy = {int(c): float(a) for c, _, _, a in rows}
    class_fid = {int(c): float(f) for c, _, f, _ in rows}
    assert max(accuracy[c] for c in (1, 2, 3, 4)) < min(accuracy[c] for c in (0, 5, 6, 7, 8, 9)), run.stdout
    assert min(class_fid[c] for c in (1, 2, 3, 4)) > 10 * max(class_fid[c] for c in (0, 5, 6, 7, 8, 9)), run.stdout
