"""Streamed evaluation of sample shards (``workflow/scripts/evaluate.py samples``): the images are read a
block at a time while torch-fidelity extracts features, so the peak memory does not grow with the number of
shards; the numbers and the result JSON are those of the former in-memory path (all shards' images in one
array); a set of shards that disagree on checkpoint, sampler or settings is refused naming the shard and the
key. Small-classifier extractor (fast on a CPU), synthetic images.

``python tests/metrics/test_streaming_eval.py --benchmark`` measures peak RSS and time of the in-memory and the
streamed path (each in a fresh process) on a moderate case; ``benchmarks/README.md`` has the figures.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ucgm_core.metrics import classifier as clf_mod  # noqa: E402
from ucgm_core.metrics import evaluation as evaluation_mod  # noqa: E402
from ucgm_core.metrics import features as features_mod  # noqa: E402
from ucgm_core.metrics import fidelity as fid_mod  # noqa: E402
from ucgm_core.metrics.fidelity import ChunkedImages, EvaluationResult, FeatureExtractorSpec  # noqa: E402
from ucgm_core.metrics.imageutil import to_uint8  # noqa: E402
from ucgm_core.metrics.sample_shards import NpzArray, open_sample_shards  # noqa: E402


def load_evaluate_script():
    spec = importlib.util.spec_from_file_location("ucgm_evaluate_script", ROOT / "workflow" / "scripts" / "evaluate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ------------------------------------------------------------------------------------------------------------
# synthetic data: class k = a blob at one of 10 positions on a circle, with noise


def blobs(n: int, seed: int, res: int = 28, channels: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    yy, xx = torch.meshgrid(
        torch.arange(res, dtype=torch.float32), torch.arange(res, dtype=torch.float32), indexing="ij"
    )
    ang = labels.float() * (2 * math.pi / 10)
    cx = res / 2 + 0.3 * res * torch.cos(ang) + torch.randn(n, generator=g)
    cy = res / 2 + 0.3 * res * torch.sin(ang) + torch.randn(n, generator=g)
    x = torch.exp(-((xx - cx[:, None, None]) ** 2 + (yy - cy[:, None, None]) ** 2) / (2 * 2.5**2))
    x = (x + 0.1 * torch.randn(n, res, res, generator=g)).clamp(0, 1).unsqueeze(1)
    if channels == 3:
        x = x * torch.tensor([1.0, 0.8, 0.6])[None, :, None, None]
    return to_uint8(x), labels


META = {
    "checkpoint": "/somewhere/results/models/m/checkpoint.pt",
    "checkpoint_sha256": "ab" * 32,
    "checkpoint_step": 100,
    "method": "ucgm",
    "steps": 4,
    "nfe": 4,
    "sampler_evaluations": 4,
    "options": {"extrapolation": 0.5},
    "guidance": {},
    "weights": "ema",
    "quantize": "round",
    "seed": 0,
}


def write_shards(
    folder: Path,
    n_shards: int,
    per_shard: int,
    *,
    channels: int = 3,
    compressed: bool = False,
    meta: dict | None = None,
    changes: dict[int, dict] | None = None,
) -> list[str]:
    """``n_shards`` shards as sample.py writes them (``changes``: shard -> metadata overrides)."""
    folder.mkdir(parents=True, exist_ok=True)
    num = n_shards * per_shard
    paths = []
    for k in range(n_shards):
        lo = k * per_shard
        images, labels = blobs(per_shard, seed=1000 + k, channels=channels)
        m = {
            **(meta or META),
            "shard": k,
            "samples_per_shard": per_shard,
            "num_samples": num,
            "first_index": lo,
            "count": per_shard,
            "seconds": 0.5 + k,
        }
        m.update((changes or {}).get(k, {}))
        idx = np.arange(lo, lo + per_shard, dtype=np.int64)
        p = folder / f"shard-{k:04d}.npz"
        (np.savez_compressed if compressed else np.savez)(
            p, images=images.numpy(), labels=labels.numpy(), indices=idx, seeds=idx + 7, meta=np.asarray(json.dumps(m))
        )
        paths.append(str(p))
    return paths


def old_in_memory(paths: list[str]) -> tuple[np.ndarray, dict]:
    """The former evaluate.py: every shard's images concatenated, the contract from the first shard."""
    images, indices, metas = [], [], []
    for p in paths:
        with np.load(p) as z:
            images.append(z["images"])
            indices.append(z["indices"])
            metas.append(json.loads(str(z["meta"])))
    idx = np.concatenate(indices)
    first = {k: v for k, v in metas[0].items() if k not in ("count", "shard", "first_index", "seconds")}
    context = {
        "samples": first,
        "num_shards": len(metas),
        "seed_range": [int(idx.min()), int(idx.max())],
        "sampling_seconds": round(sum(m.get("seconds", 0.0) for m in metas), 3),
    }
    return np.concatenate(images), context


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    x, y = blobs(1000, seed=1)
    cfg = clf_mod.ClassifierConfig(widths=(8, 16), feature_dim=16, dropout=0.0)
    path = str(tmp_path_factory.mktemp("clf") / "clf.pt")
    clf_mod.train_classifier(x, y, path, seed=0, steps=60, batch_size=64, lr=3e-3, config=cfg)
    return FeatureExtractorSpec(clf_mod.CLASSIFIER_EXTRACTOR_NAME, path)


@pytest.fixture(scope="module")
def reference_batch(spec, tmp_path_factory):
    """An ADM-style reference batch: ``arr_0`` (uint8 NHWC) and the FID statistics of its features."""
    x, _ = blobs(300, seed=2, channels=3)
    feats = fid_mod.extract_features(x, spec, ["features"])["features"].double().numpy()
    path = tmp_path_factory.mktemp("ref") / "ref_batch.npz"
    np.savez(path, arr_0=x.permute(0, 2, 3, 1).numpy(), mu=feats.mean(0), sigma=np.cov(feats, rowvar=False))
    return str(path)


def cli_args(spec, reference_batch, cache, shards, out, *extra):
    return [
        "samples",
        "--reference-batch",
        reference_batch,
        "--extractor",
        "classifier",
        "--weights",
        spec.weights_path,
        "--cache-dir",
        str(cache),
        "--context",
        '{"sampler": "ucgm"}',
        "--out",
        str(out),
        "--shards",
        *shards,
        *extra,
    ]


# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_array_reads_row_ranges(tmp_path, compressed):
    a = np.random.default_rng(0).integers(0, 256, (37, 3, 5, 7), dtype=np.uint8)
    p = tmp_path / "x.npz"
    (np.savez_compressed if compressed else np.savez)(p, images=a, other=np.arange(3))
    arr = NpzArray(p, "images")
    assert arr.shape == a.shape and arr.dtype == a.dtype and len(arr) == 37 and arr.row_bytes == 105
    for lo, hi in [(0, 5), (5, 17), (17, 37), (3, 9), (0, 37), (30, 50), (36, 37), (10, 10)]:  # also backwards
        got = arr.read(lo, hi)
        assert got.flags.writeable and np.array_equal(got, a[lo:hi]), (lo, hi)
    np.savez(p, images=np.asfortranarray(a))  # Fortran order: loaded whole, same rows
    assert np.array_equal(NpzArray(p, "images").read(4, 11), a[4:11])
    with pytest.raises(ValueError, match="no array 'pixels'"):
        NpzArray(p, "pixels")


def test_chunked_images_holds_one_chunk():
    data = torch.arange(10 * 2 * 3 * 3, dtype=torch.uint8).reshape(10, 2, 3, 3)
    live = []

    def loader(lo, hi):
        def load():
            live.append((lo, hi))
            return data[lo:hi].numpy().copy()

        return load

    bounds = [(0, 4), (4, 4), (4, 9), (9, 10)]  # an empty chunk too
    ds = ChunkedImages([(hi - lo, loader(lo, hi)) for lo, hi in bounds])
    assert len(ds) == 10
    assert all(torch.equal(ds[i], data[i]) for i in range(10))
    assert ds.loads == 3 and live == [(0, 4), (4, 9), (9, 10)]  # in order: each chunk loaded once
    assert torch.equal(ds[-1], data[9]) and torch.equal(ds[0], data[0])
    with pytest.raises(IndexError):
        ds[10]
    bad = ChunkedImages([(3, lambda: data[:2])])
    with pytest.raises(ValueError, match="declared 3"):
        bad[0]


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")  # 4 workers on a 2-core machine
def test_streamed_equals_in_memory_and_contract_unchanged(spec, reference_batch, tmp_path):
    """24 shards, blocks that cut shards and batches anywhere: the same features, hence bit-identical
    metrics, and the same result JSON as the former in-memory evaluate.py."""
    paths = write_shards(tmp_path / "s", 24, 20)
    script = load_evaluate_script()
    out = tmp_path / "eval.json"
    shards = open_sample_shards(paths)
    assert len(shards) == 480 and len(shards.images(block_bytes=7 * 3 * 28 * 28)) == 480
    assert shards.images(block_bytes=7 * 3 * 28 * 28).loads == 0  # nothing read yet
    assert script.main(cli_args(spec, reference_batch, tmp_path / "cache", paths, out, "--block-mb", "1")) == 0
    new = EvaluationResult.load(out)

    images, ctx = old_in_memory(paths)
    ref = evaluation_mod.reference_batch_set(reference_batch)
    old = fid_mod.evaluate(
        torch.from_numpy(images), ref, spec, cache_dir=str(tmp_path / "cache"), context={"sampler": "ucgm", **ctx}
    )
    for key in ("fid", "is_mean", "is_std", "kid_mean", "kid_std", "precision", "recall"):
        assert getattr(new, key) == getattr(old, key), key  # identical, not only close
    assert new.fid is not None and new.kid_mean is not None and new.precision is not None
    a, b = new.to_dict(), old.to_dict()
    for d in (a, b):
        d.pop("seconds"), d.pop("reference_source")
    assert a == b
    assert new.context["samples"] == {k: v for k, v in META.items()} | {"samples_per_shard": 20, "num_samples": 480}
    assert new.context["num_shards"] == 24 and new.context["seed_range"] == [0, 479]

    # a small block size (4 images per block) in the library: the same features as one tensor
    feats_stream = fid_mod.extract_features(shards.images(block_bytes=4 * 3 * 28 * 28), spec, ["features"])
    feats_mem = fid_mod.extract_features(torch.from_numpy(images), spec, ["features"])
    assert torch.equal(feats_stream["features"], feats_mem["features"])
    # the reference batch's arr_0 (NHWC) is read in blocks as well: the same features as the whole array
    ref_stream = ref.load_images()
    assert isinstance(ref_stream, ChunkedImages)
    with np.load(reference_batch) as z:
        ref_whole = torch.from_numpy(z["arr_0"]).permute(0, 3, 1, 2)
    assert torch.equal(
        fid_mod.extract_features(ref_stream, spec, ["features"])["features"],
        fid_mod.extract_features(ref_whole, spec, ["features"])["features"],
    )
    # compressed shards (np.savez_compressed) stream the same images
    zpaths = write_shards(tmp_path / "z", 24, 20, compressed=True)
    zs = open_sample_shards(zpaths).images(block_bytes=6 * 3 * 28 * 28)
    assert all(torch.equal(zs[i], torch.from_numpy(images[i])) for i in range(len(zs)))
    # data-loader worker processes (torch-fidelity's loader without save_cpu_ram, as on a GPU), each with
    # its own current block and its own decompressing stream: the same features
    for paths_ in (paths, zpaths):
        stream = open_sample_shards(paths_).images(block_bytes=50 * 3 * 28 * 28)
        workers = fid_mod.extract_features(stream, spec, ["features"], cuda=False, save_cpu_ram=False)
        assert torch.equal(workers["features"], feats_mem["features"])


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_does_not_grow_with_shards(spec, reference_batch, tmp_path):
    """N = 6 and 4N = 24 shards of 170 RGB images: the streamed extraction's peak (numpy allocations, which
    hold the images read from the shards) is the same; the whole evaluate.py run grows only by the features'
    share (16 floats per image here; KID's subsets are 1000 images in both), while the in-memory path grows by
    at least the added images."""
    per_shard, image_bytes = 170, 3 * 28 * 28
    sets = {n: write_shards(tmp_path / f"n{n}", n, per_shard) for n in (6, 24)}
    block = 2 * per_shard * image_bytes // 3  # two blocks per shard
    added = 18 * per_shard * image_bytes
    fe = features_mod.make_extractor(spec, ["features", "logits_unbiased"], cuda=False)

    def stream(n):
        return lambda: fid_mod.extract_features(
            open_sample_shards(sets[n]).images(block), spec, ["features", "logits_unbiased"], cuda=False, _fe=fe
        )

    def in_memory(n):
        return lambda: fid_mod.extract_features(
            torch.from_numpy(old_in_memory(sets[n])[0]), spec, ["features", "logits_unbiased"], cuda=False, _fe=fe
        )

    stream(6)()  # warm-up (lazy imports, caches)
    s6, s24 = _peak_bytes(stream(6)), _peak_bytes(stream(24))
    m6, m24 = _peak_bytes(in_memory(6)), _peak_bytes(in_memory(24))
    print(
        f"extraction peak (tracemalloc): streamed {s6 / 1e3:.0f} kB -> {s24 / 1e3:.0f} kB, "
        f"in memory {m6 / 1e3:.0f} kB -> {m24 / 1e3:.0f} kB (added images {added / 1e3:.0f} kB)"
    )
    assert s24 <= 1.1 * s6 + 32_000, (s6, s24)
    # two blocks at most (a batch that straddles two blocks holds views of the first while the second is read),
    # plus what opening the shards takes (zip directories, metadata, indices: about 0.3 MB here)
    assert s24 < 2 * block + 400_000, (s24, block)
    assert m24 - m6 >= added  # the measurement sees the images when they are all in memory

    script = load_evaluate_script()
    cache = tmp_path / "cache"
    run = {
        n: (
            lambda n=n: script.main(
                cli_args(
                    spec,
                    reference_batch,
                    cache,
                    sets[n],
                    tmp_path / f"e{n}.json",
                    "--block-mb",
                    "1",
                    "--metrics",
                    "fid",
                    "isc",
                    "kid",
                    "prc",
                )
            )
        )
        for n in (6, 24)
    }
    run[6]()  # reference features cached
    e6, e24 = _peak_bytes(run[6]), _peak_bytes(run[24])
    print(f"evaluate.py samples peak (tracemalloc): {e6 / 1e3:.0f} kB for 6 shards, {e24 / 1e3:.0f} kB for 24")
    assert e24 - e6 < 0.25 * added, (e6, e24, added)
    assert EvaluationResult.load(tmp_path / "e24.json").num_samples == 24 * per_shard


@pytest.mark.parametrize(
    "key, value",
    [
        ("checkpoint_sha256", "cd" * 32),
        ("method", "euler"),
        ("steps", 8),
        ("options", {"extrapolation": 0.4}),
        ("guidance", {"scale": 1.5}),
        ("seed", 1),
        ("weights", "raw"),
        ("quantize", "truncate"),
    ],
)
def test_mixed_shards_are_refused(tmp_path, key, value):
    paths = write_shards(tmp_path, 5, 4, changes={3: {key: value}})
    with pytest.raises(ValueError, match=rf"shard-0003\.npz differs from the first shard in {key} "):
        open_sample_shards(paths)


def test_mixed_shards_refused_by_the_script_before_any_work(spec, reference_batch, tmp_path):
    paths = write_shards(tmp_path / "s", 4, 4, changes={2: {"checkpoint_sha256": "ef" * 32}})
    out = tmp_path / "e.json"
    with pytest.raises(ValueError, match=r"shard-0002\.npz differs from the first shard in checkpoint_sha256"):
        load_evaluate_script().main(cli_args(spec, reference_batch, tmp_path / "cache", paths, out))
    assert not out.exists() and not (tmp_path / "cache").exists()


def test_shard_checks_that_pass_and_fail(tmp_path):
    # the checkpoint's path may differ (a moved project folder), the per-shard fields do by design
    ok = write_shards(tmp_path / "ok", 3, 4, changes={1: {"checkpoint": "/elsewhere/checkpoint.pt"}})
    s = open_sample_shards(ok)
    assert len(s) == 12 and s.meta["checkpoint"] == META["checkpoint"] and "shard" not in s.meta
    assert s.sampling_seconds == 0.5 + 1.5 + 2.5
    # a key present in one shard only differs too
    extra = write_shards(tmp_path / "extra", 3, 4, changes={2: {"note": "x"}})
    with pytest.raises(ValueError, match=r"shard-0002\.npz differs from the first shard in note"):
        open_sample_shards(extra)
    # overlapping indices: named
    a = write_shards(tmp_path / "a", 2, 4)
    with pytest.raises(ValueError, match=r"overlap: 4 repeated image indices \(e\.g\. image 0 in .*a/shard-0000"):
        open_sample_shards(a + [a[0]])
    # other image shapes
    grey = write_shards(tmp_path / "g", 2, 4, channels=1)
    os.replace(grey[1], tmp_path / "a" / "shard-0009.npz")
    with np.load(tmp_path / "a" / "shard-0009.npz") as z:
        d = dict(z)
    d["indices"] = np.arange(100, 104)
    np.savez(tmp_path / "a" / "shard-0009.npz", **d)
    with pytest.raises(ValueError, match=r"shard-0009\.npz has images \(1, 28, 28\)"):
        open_sample_shards([a[0], str(tmp_path / "a" / "shard-0009.npz")])
    # images and indices disagree
    d["indices"] = np.arange(100, 103)
    np.savez(tmp_path / "bad.npz", **d)
    with pytest.raises(ValueError, match="4 images but 3 indices"):
        open_sample_shards([str(tmp_path / "bad.npz")])


# ------------------------------------------------------------------------------------------------------------
# benchmark: python tests/metrics/test_streaming_eval.py --benchmark [--shards 20 --per-shard 1000 --res 64
#            --metrics fid isc kid prc --repeat 2]


def _vm_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _bench_child(mode: str, paths: list[str], weights: str, reference: str, cache: str, metrics: list[str]) -> dict:
    torch.set_num_threads(2)
    spec = FeatureExtractorSpec(clf_mod.CLASSIFIER_EXTRACTOR_NAME, weights)
    ref = evaluation_mod.reference_batch_set(reference)
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak RSS (VmHWM) to the current RSS (Linux)
        f.write("5")
    rss0 = _vm_kib("VmRSS")
    t0 = time.perf_counter()
    if mode == "in-memory":  # the former evaluate.py
        images, _ = old_in_memory(paths)
        res = fid_mod.evaluate(torch.from_numpy(images), ref, spec, metrics, cache_dir=cache)
    else:  # evaluate.py now (64 MiB blocks)
        res = fid_mod.evaluate(open_sample_shards(paths).images(), ref, spec, metrics, cache_dir=cache)
    seconds = time.perf_counter() - t0
    peak = _vm_kib("VmHWM")
    return {
        "mode": mode,
        "seconds": round(seconds, 2),
        "rss_before_mb": round(rss0 / 1024, 1),
        "peak_rss_mb": round(peak / 1024, 1),
        "peak_above_start_mb": round((peak - rss0) / 1024, 1),
        "fid": res.fid,
        "is_mean": res.is_mean,
        "kid_mean": res.kid_mean,
        "precision": res.precision,
        "recall": res.recall,
    }


def _benchmark(argv) -> None:
    import argparse
    import subprocess
    import tempfile

    p = argparse.ArgumentParser()
    p.add_argument("--benchmark", action="store_true")
    p.add_argument("--shards", type=int, default=20)
    p.add_argument("--per-shard", type=int, default=1000)
    p.add_argument("--res", type=int, default=64)
    p.add_argument("--metrics", nargs="+", default=["fid", "isc", "kid", "prc"])
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--child", default=None)
    a = p.parse_args(argv)
    if a.child:
        job = json.loads(a.child)
        print(json.dumps(_bench_child(**job)))
        return
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        x, y = blobs(1000, seed=1)
        weights = str(tmp / "clf.pt")
        clf_mod.train_classifier(
            x,
            y,
            weights,
            seed=0,
            steps=60,
            batch_size=64,
            lr=3e-3,
            config=clf_mod.ClassifierConfig(widths=(8, 16), feature_dim=16, dropout=0.0),
        )
        paths = []
        for k in range(a.shards):  # RGB blobs at --res
            imgs, labels = blobs(a.per_shard, seed=1000 + k, res=a.res, channels=3)
            lo = k * a.per_shard
            idx = np.arange(lo, lo + a.per_shard)
            m = {**META, "shard": k, "first_index": lo, "count": a.per_shard, "seconds": 1.0}
            paths.append(str(tmp / f"shard-{k:04d}.npz"))
            np.savez(
                paths[-1],
                images=imgs.numpy(),
                labels=labels.numpy(),
                indices=idx,
                seeds=idx,
                meta=np.asarray(json.dumps(m)),
            )
        rx, _ = blobs(2000, seed=2, res=a.res, channels=3)
        spec = FeatureExtractorSpec(clf_mod.CLASSIFIER_EXTRACTOR_NAME, weights)
        f = fid_mod.extract_features(rx, spec, ["features"])["features"].double().numpy()
        reference = str(tmp / "ref.npz")
        np.savez(reference, arr_0=rx.permute(0, 2, 3, 1).numpy(), mu=f.mean(0), sigma=np.cov(f, rowvar=False))
        cache = str(tmp / "cache")
        ref = evaluation_mod.reference_batch_set(reference)
        fid_mod.reference_features(ref, spec, ["features"], cache_dir=cache)
        fid_mod.reference_statistics(ref, spec, "features", cache_dir=cache)
        n = a.shards * a.per_shard
        print(
            f"{a.shards} shards x {a.per_shard} images of 3x{a.res}x{a.res} uint8 "
            f"({n * 3 * a.res * a.res / 2**20:.0f} MiB of images), reference features cached"
        )
        for mode in ("in-memory", "streamed") * a.repeat:
            job = json.dumps(
                {
                    "mode": mode,
                    "paths": paths,
                    "weights": weights,
                    "reference": reference,
                    "cache": cache,
                    "metrics": a.metrics,
                }
            )
            r = subprocess.run([sys.executable, __file__, "--child", job], capture_output=True, text=True, check=True)
            print(r.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    _benchmark(sys.argv[1:])
