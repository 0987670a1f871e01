"""The paper-scale stand-ins of ``tests/paper/paper_assets.py`` load through the project's own readers and converters.

Built once per module (a few seconds on 2 CPU cores); every check reads the files the way the workflow
does: the ImageNet readers of :mod:`ucgm_core.data.datasets` (and the ADM crop), the ADM reference batch
format, torch-fidelity's Inception extractor with the written weights, the per-family checkpoint
converters, the autoencoder registry, and the CIFAR-10 tarball reader.
"""

from __future__ import annotations

import hashlib
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import paper_assets as pa
from paper_assets import PaperAssets, convert_external, build_external, load_autoencoder, make_paper_assets

from ucgm_core.data.datasets import get_dataset, read_cifar10, read_ilsvrc_train_tar
from ucgm_core.data.shards import prepare_image
from ucgm_core.models.convert import UnsafeCheckpointError

# threads: set once in tests/conftest.py
BUILD_LIMIT_S = 30.0


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper_assets")
    t0 = time.perf_counter()
    assets = make_paper_assets(root)
    return assets, time.perf_counter() - t0


@pytest.fixture(scope="module")
def assets(built) -> PaperAssets:
    return built[0]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- creation ---------------------------------------------------------------------------------------------


def test_build_fast_idempotent_and_complete(built):
    assets, seconds = built
    print(f"make_paper_assets: {seconds:.1f} s")
    assert seconds < BUILD_LIMIT_S
    files = [p for p in assets.root.rglob("*") if p.is_file()]
    assert not [p for p in files if ".tmp" in p.name], "leftover temporary files"
    stamps = {p: p.stat().st_mtime_ns for p in files}
    t0 = time.perf_counter()
    again = make_paper_assets(assets.root)
    assert time.perf_counter() - t0 < 2.0
    assert again == assets
    assert {p: p.stat().st_mtime_ns for p in files} == stamps  # nothing rewritten
    # every path field exists
    for name in (
        "imagenet_folder",
        "imagenet_train_tar",
        "ref_batch_256",
        "ref_batch_512",
        "inception_weights",
        "cifar10_tarball",
    ):
        assert getattr(assets, name).exists(), name
    assert all(n.path.is_file() for n in assets.networks.values())
    assert all(a.path.is_file() for a in assets.autoencoders.values())


def test_deterministic(assets, tmp_path):
    """Rebuilding gives the same bytes (the EDM .pkl: the same tensors; its nested legacy torch.save payloads
    carry storage addresses as keys, as real EDM snapshots do)."""
    pa._write_imagenet(tmp_path, assets.num_classes, assets.images_per_class)
    pa._write_cifar10(tmp_path / "cifar-10-python.tar.gz")
    assert _sha(tmp_path / "ILSVRC2012_img_train.tar") == _sha(assets.imagenet_train_tar)
    assert _sha(tmp_path / "cifar-10-python.tar.gz") == _sha(assets.cifar10_tarball)
    for name in ("sit_xl1_repae_256", "edm2_s_512", "songunet_cifar10"):
        net = pa._write_network(tmp_path, name, assets.num_classes, list(pa.NETWORK_SPECS).index(name))
        if net.path.suffix == ".pkl":
            a, b = convert_external(net), convert_external(assets.networks[name])
            assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
        else:
            assert _sha(net.path) == _sha(assets.networks[name].path), name
    f = "dc-ae-f32c32-in-1.0.safetensors"
    pa._write_autoencoder(tmp_path / f, *pa._AE_FILES[f])
    assert _sha(tmp_path / f) == _sha(assets.autoencoders["dcae_f32c32"].path)


# --- 1. ImageNet ------------------------------------------------------------------------------------------


def test_imagenet_folder_and_tar(assets):
    spec = get_dataset("imagenet")
    n = assets.num_classes * assets.images_per_class
    # the ImageFolder reads through the catalogue entry as is (its class count only has to be <= 1000) ...
    folder = spec.read(assets.imagenet_folder, "train")
    assert len(folder) == n and folder.class_names == assets.class_names
    assert folder.num_classes == 1000  # the catalogue's count, not the 4 classes present
    # ... the ILSVRC tar checks the class count exactly: pass the real one through the reader
    with pytest.raises(ValueError, match="1000 expected"):
        spec.read(assets.imagenet_train_tar, "train")
    tar = spec.reader(assets.imagenet_train_tar, "train", assets.num_classes)
    assert len(tar) == n and tar.num_classes == assets.num_classes and tar.class_names == assets.class_names
    assert read_ilsvrc_train_tar(assets.root, "train", assets.num_classes).class_names == assets.class_names
    folder_n = spec.reader(assets.imagenet_folder, "train", assets.num_classes)
    assert folder_n.num_classes == assets.num_classes

    sizes = set()
    for (a, la), (b, lb) in zip(folder, tar):
        assert la == lb and a.dtype == np.uint8 and a.shape == b.shape and np.array_equal(a, b)
        h, w, c = a.shape
        assert c == 3 and h != w and 260 <= min(h, w) and max(h, w) <= 560
        sizes.add((h > w))
        for size in (256, 512):
            crop = prepare_image(a, size)
            assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    assert sizes == {True, False}  # portrait and landscape
    assert sorted({lab for _, lab in folder}) == list(range(assets.num_classes))

    # the real layout: a tar of <wnid>.tar, each holding <wnid>_<k>.JPEG
    with tarfile.open(assets.imagenet_train_tar) as tf:
        assert tf.getnames() == [f"{w}.tar" for w in assets.class_names]
        inner = tarfile.open(fileobj=tf.extractfile(f"{assets.class_names[0]}.tar"))
        assert inner.getnames() == [f"{assets.class_names[0]}_{k}.JPEG" for k in range(assets.images_per_class)]
        assert inner.extractfile(inner.getnames()[0]).read()[:3] == b"\xff\xd8\xff"  # JPEG


# --- 2. ADM reference batches -----------------------------------------------------------------------------


@pytest.mark.parametrize("res", [256, 512])
def test_reference_batches(assets, res):
    path = assets.ref_batch_256 if res == 256 else assets.ref_batch_512
    with np.load(path) as z:
        assert set(z.files) == {"arr_0", "mu", "sigma", "mu_s", "sigma_s"}
        arr, mu, sigma = z["arr_0"], z["mu"], z["sigma"]
        mu_s, sigma_s = z["mu_s"], z["sigma_s"]
    assert arr.dtype == np.uint8 and arr.shape == (assets.ref_batch_size, res, res, 3)
    assert arr.std() > 10  # not blank
    assert mu.dtype == sigma.dtype == np.float64 and mu.shape == (2048,) and sigma.shape == (2048, 2048)
    assert mu_s.shape == (2023,) and sigma_s.shape == (2023, 2023)
    for s in (sigma, sigma_s):
        assert np.array_equal(s, s.T)
        np.linalg.cholesky(s)  # positive definite
    # guided-diffusion streams arr_0 straight out of the zip: a plain C-order .npy inside
    import zipfile

    with zipfile.ZipFile(path) as zf, zf.open("arr_0.npy") as f:
        version = np.lib.format.read_magic(f)
        assert version in ((1, 0), (2, 0))  # the versions its streaming reader handles
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
    assert shape == arr.shape and not fortran and dtype == np.uint8


# --- 3. Inception weights ---------------------------------------------------------------------------------


def test_inception_weights_with_logits(assets):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    from torch_fidelity.metric_isc import isc_features_to_metric

    from ucgm_core.metrics.fidelity import FeatureExtractorSpec
    from ucgm_core.metrics.inception import EXTRACTOR_NAME, weights_have_logits

    path = assets.inception_weights
    assert 90e6 < path.stat().st_size < 100e6
    sd = torch.load(path, map_location="cpu", weights_only=True)
    assert all(v.dtype == torch.float32 for k, v in sd.items() if not k.endswith("num_batches_tracked"))
    assert sd["fc.weight"].shape == (1008, 2048) and sd["fc.bias"].shape == (1008,)
    assert weights_have_logits(path)
    assert FeatureExtractorSpec(EXTRACTOR_NAME, str(path)).resolved_weights_path() == str(path)

    fe = FeatureExtractorInceptionV3(
        EXTRACTOR_NAME, ["2048", "logits_unbiased"], feature_extractor_weights_path=str(path)
    )  # strict load: same keys/shapes
    with np.load(assets.ref_batch_256) as z:
        imgs = torch.from_numpy(z["arr_0"][:2]).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        feats, logits = fe(imgs)
    assert feats.shape == (2, 2048) and logits.shape == (2, 1008)
    assert torch.isfinite(feats).all() and torch.isfinite(logits).all()
    assert feats.min() >= 0 and 0.05 < feats.mean() < 5  # pool features of O(1), as the real ones
    assert (feats[0] - feats[1]).abs().max() > 1e-3  # image dependent
    isc = isc_features_to_metric(logits, splits=1)
    assert np.isfinite(isc["inception_score_mean"]) and isc["inception_score_mean"] > 1.0


# --- 4. external networks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(pa.NETWORK_SPECS))
def test_external_network_converts_and_runs(assets, name):
    net = assets.networks[name]
    c, s, s2 = net.latent_shape
    assert s == s2
    state = convert_external(net)  # the family converter, with the tiny layout's kwargs
    model = build_external(net).eval()
    model.load_state_dict(state, strict=True)

    if net.path.suffix == ".pt":  # UCGM's converted format
        blob = torch.load(net.path, map_location="cpu", weights_only=True)
        assert set(blob) == {"model", "ema"} and set(blob["ema"]) == set(state)
    else:  # EDM's snapshot needs the explicit opt-in; it carries the training-only map_augment
        with pytest.raises(UnsafeCheckpointError):
            convert_external(net, allow_unsafe_pickle=False)
        from ucgm_core.models.edm2 import read_persistence_pickle

        raw = read_persistence_pickle(net.path)
        assert {"ema", "loss_fn", "augment_pipe", "dataset_kwargs"} <= set(raw)
        assert "model.map_augment.weight" in raw["ema"] and "map_augment.weight" not in state

    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, c, s, s, generator=g)
    t = torch.rand(10, generator=g)
    y = torch.randint(0, net.num_classes, (10,), generator=g)
    with torch.no_grad():
        t0 = time.perf_counter()
        out = model(x, t, y)
        seconds = time.perf_counter() - t0
        # rows 0-1 again with t -> 1 - t, rows 2-3 with the null label (= num_classes)
        y2 = torch.cat([y[:2], torch.full_like(y[2:4], net.num_classes)])
        out2 = model(x[:4], torch.cat([1 - t[:2], t[2:4]]), y2)
    print(f"{name}: forward of 10 in {seconds * 1e3:.0f} ms (first call)")
    assert out.shape == x.shape and torch.isfinite(out).all() and out.std() > 0.05
    assert (out2[:2] - out[:2]).abs().max() > 1e-3  # depends on t
    if net.num_classes > 1:
        assert (out2[2:4] - out[2:4]).abs().max() > 1e-4  # and on the label
    # tiny: a forward of 10 takes milliseconds to ~0.1 s on 2 idle cores (wall time is not asserted: the
    # machine may be shared), and the parameter count bounds the cost
    assert sum(p.numel() for p in model.parameters()) < 500_000


def test_networks_through_workflow_entry_point(assets):
    """``convert_pretrained`` (what the workflow's pretrained rule runs) reads every file to the same weights."""
    from ucgm_core.models.pretrained import convert_pretrained, model_kwargs_for

    for name, net in assets.networks.items():
        c, s, _ = net.latent_shape
        kwargs = model_kwargs_for(
            net.architecture, input_size=s, in_channels=c, num_classes=net.num_classes, **net.overrides
        )
        model = convert_pretrained(net.architecture, net.path, kwargs, allow_unsafe_pickle=net.path.suffix == ".pkl")
        want, got = convert_external(net), model.state_dict()
        assert list(got) == list(want) and all(torch.equal(got[k], want[k]) for k in want), name


def test_network_overrides_are_needed(assets):
    """The overrides (and num_classes) are what make a converter accept a tiny file."""
    from ucgm_core.models.convert import CheckpointError

    for name in ("sit_xl2_repa_256", "edm2_l_512"):
        net = assets.networks[name]
        with pytest.raises(CheckpointError):
            convert_external(net._replace(overrides={}))
        with pytest.raises(CheckpointError):
            convert_external(net._replace(num_classes=1000))


# --- 5. autoencoders --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(pa.AUTOENCODER_SPECS))
def test_autoencoder_roundtrip(assets, name):
    spec = assets.autoencoders[name]
    assert spec.path.is_file() and not (spec.path.parent / "config.json").exists()
    ae = load_autoencoder(spec)
    assert (ae.latent_channels, ae.stride) == (spec.latent_channels, spec.stride)
    sizes = (256, 512) if name in ("sdvae_ema_f8c4", "dcae_f32c32") else (256,)  # the 512 px autoencoders
    for res in sizes:
        x = torch.rand(2, 3, res, res, generator=torch.Generator().manual_seed(res)) * 2 - 1
        t0 = time.perf_counter()
        z = ae.encode(x)
        img = ae.decode(z)
        seconds = time.perf_counter() - t0
        print(f"{name} @ {res}: encode+decode of 2 in {seconds:.2f} s")
        assert z.shape == (2, spec.latent_channels, res // spec.stride, res // spec.stride)
        assert torch.isfinite(z).all() and z.std() > 1e-3
        assert img.shape == (2, 3, res, res) and img.min() >= 0 and img.max() <= 1 and img.std() > 1e-3
    # tiny (wall time is not asserted: the machine may be shared)
    assert sum(p.numel() for p in ae.parameters()) < 600_000


def test_autoencoder_weight_formats(assets):
    from safetensors import safe_open

    from ucgm_core.autoencoders.vavae import looks_like_ldm

    aes = assets.autoencoders
    with safe_open(str(aes["sdvae_ema_f8c4"].path), "pt") as f:  # diffusers AutoencoderKL names
        assert "encoder.down_blocks.0.resnets.0.conv1.weight" in f.keys()
    with safe_open(str(aes["dcae_f32c32"].path), "pt") as f:  # diffusers AutoencoderDC names
        assert any(k.startswith("encoder.down_blocks.") for k in f.keys())
    for name in ("vavae_f16d32", "e2evavae_f16d32"):  # LDM {"state_dict": ...}
        blob = torch.load(aes[name].path, map_location="cpu", weights_only=True)
        assert set(blob) == {"state_dict"} and looks_like_ldm(blob["state_dict"])
        assert blob["state_dict"]["decoder.mid.attn_1.q.weight"].ndim == 4  # 1x1 conv kernels, as LDM
    assert _sha(aes["sdvae_ema_f8c4"].path) != _sha(aes["edm2_sdvae_f8c4"].path)  # ft-EMA vs ft-MSE
    assert _sha(aes["vavae_f16d32"].path) != _sha(aes["e2evavae_f16d32"].path)


# --- 6. CIFAR-10 ------------------------------------------------------------------------------------------


def test_cifar10_tarball(assets):
    train = read_cifar10(assets.cifar10_tarball, "train")
    test = get_dataset("cifar10").read(assets.root, "test")
    assert train.images.shape == (20, 32, 32, 3) and test.images.shape == (4, 32, 32, 3)
    assert train.num_classes == 10 and train.labels.max() < 10
    with tarfile.open(assets.cifar10_tarball) as tf:
        names = {Path(n).name for n in tf.getnames()}
    assert {f"data_batch_{i}" for i in range(1, 6)} | {"test_batch", "batches.meta"} <= names
