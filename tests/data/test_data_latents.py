"""Autoencoder interface, latent shards (plain + flipped), statistics, and the resumable loader."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ucgm_core.autoencoders import Autoencoder, get_autoencoder
from ucgm_core.autoencoders.identity import IdentityAutoencoder
from ucgm_core.data import latents as lt
from ucgm_core.data.datasets import ArraySource
from ucgm_core.data.latents import (
    compute_latent_stats,
    encode_split,
    images_to_tensor,
    iter_latents,
    load_latent_stats,
    save_latent_stats,
)
from ucgm_core.data.loader import LatentArrays, LatentLoader, LatentNormalizer, load_latent_arrays
from ucgm_core.data.shards import read_manifest, write_image_shards

TOOL = Path(__file__).resolve().parents[2] / "workflow" / "scripts" / "latents.py"


def _load_tool():
    """The latents stage tool (its command line; the library has none)."""
    spec = importlib.util.spec_from_file_location("ucgm_latents_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


tool = _load_tool()

N_TRAIN, N_TEST, C, S = 45, 12, 3, 8


@pytest.fixture(scope="module")
def image_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("img")
    rng = np.random.default_rng(0)
    out = {}
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        x = rng.integers(0, 256, size=(n, S, S, C), dtype=np.uint8)
        y = rng.integers(0, 5, size=n)
        write_image_shards(ArraySource(x, y, 5), root, split, resolution=S, samples_per_shard=16, num_classes=5)
        out[split] = (x, y)
    return root, out


@pytest.fixture(scope="module")
def latent_dir(image_shards, tmp_path_factory):
    root, _ = image_shards
    out = tmp_path_factory.mktemp("lat")
    ae = get_autoencoder("identity", channels=C)
    for split in ("train", "test"):
        encode_split(root, out, split, ae, batch_size=7, autoencoder_name="identity", log=lambda m: None)
    return out


def test_identity_autoencoder_interface():
    ae = get_autoencoder("identity", channels=1)
    assert isinstance(ae, Autoencoder) and ae.latent_channels == 1 and ae.stride == 1
    x = torch.rand(2, 1, 4, 4) * 2 - 1
    assert torch.equal(ae.encode(x), x)
    assert torch.allclose(ae.decode(x), (x + 1) / 2) and ae.decode(torch.full((1, 1, 2, 2), 3.0)).max() == 1
    with pytest.raises(ValueError):
        ae.encode(torch.zeros(1, 3, 4, 4))
    with pytest.raises(KeyError, match="unknown autoencoder"):
        get_autoencoder("nope")


def test_latents_equal_pixels_and_flips(image_shards, latent_dir):
    _, data = image_shards
    info = read_manifest(latent_dir, "train")
    assert info["kind"] == "latents" and info["latent_shape"] == [C, S, S] and info["num_samples"] == N_TRAIN
    assert info["shards"] == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    x, y = data["train"]
    keys, z, zf, labels = zip(*iter_latents(latent_dir, "train"))
    z, zf = np.stack(z), np.stack(zf)
    pix = images_to_tensor(x).numpy()  # [-1, 1], [N, C, H, W]
    assert pix.min() >= -1 and pix.max() <= 1
    np.testing.assert_allclose(z, x.transpose(0, 3, 1, 2) / 127.5 - 1, atol=1e-6)
    np.testing.assert_array_equal(z, pix)
    np.testing.assert_array_equal(zf, pix[..., ::-1])  # horizontal flip = last axis
    assert list(labels) == y.tolist() and keys[0] == "train-00000000"


def test_encode_resume_and_float16(image_shards, latent_dir, tmp_path):
    root, _ = image_shards
    ae = IdentityAutoencoder(C)
    out = tmp_path / "lat"
    encode_split(root, out, "train", ae, batch_size=16, log=lambda m: None)
    before = {p.name: p.read_bytes() for p in out.glob("train-*.tar")}
    (out / "train-000001.tar").unlink()
    msgs = []
    info = encode_split(root, out, "train", ae, batch_size=16, log=msgs.append)
    assert sum("skipped" in m for m in msgs) == 2 and info["num_samples"] == N_TRAIN
    assert {p.name: p.read_bytes() for p in out.glob("train-*.tar")} == before
    half = encode_split(root, tmp_path / "h", "test", ae, dtype="float16", log=lambda m: None)
    assert half["latent_dtype"] == "float16"
    assert next(iter_latents(tmp_path / "h", "test"))[1].dtype == np.float16


@pytest.mark.parametrize("suffix", [".pt", ".json"])
def test_latent_stats(latent_dir, tmp_path, suffix):
    z = np.stack([s[1] for s in iter_latents(latent_dir, "train", flipped=False)])
    stats = compute_latent_stats(latent_dir, "train", max_samples=20, seed=3)
    idx = sorted(torch.randperm(N_TRAIN, generator=torch.Generator().manual_seed(3))[:20].tolist())
    sub = torch.from_numpy(z[idx]).double()
    assert stats["num_samples"] == 20 and stats["mean"].shape == (1, C, 1, 1) and stats["std"].shape == (1, C, 1, 1)
    torch.testing.assert_close(stats["mean"], sub.mean(dim=(0, 2, 3), keepdim=True).float())
    torch.testing.assert_close(stats["std"], sub.std(dim=(0, 2, 3), keepdim=True).float())
    everything = compute_latent_stats(latent_dir, "train", max_samples=10_000, seed=0)
    assert everything["num_samples"] == N_TRAIN
    path = save_latent_stats(tmp_path / f"stats{suffix}", stats)
    mean, std = load_latent_stats(path)
    torch.testing.assert_close(mean, stats["mean"])
    torch.testing.assert_close(std, stats["std"])
    assert not list(tmp_path.glob(".*"))  # atomic write left no temporary file


def test_latents_cli(image_shards, tmp_path, capsys):
    root, _ = image_shards
    out = tmp_path / "cli"
    rc = tool.main(
        [
            "--image-dir",
            str(root),
            "--out-dir",
            str(out),
            "--autoencoder",
            "identity",
            "--batch-size",
            "10",
            "--stats-out",
            str(out / "stats.json"),
            "--stats-samples",
            "30",
        ]
    )
    assert rc == 0
    assert read_manifest(out, "test")["num_samples"] == N_TEST
    st = json.loads((out / "stats.json").read_text())
    assert st["num_samples"] == 30 and np.array(st["mean"]).shape == (1, C, 1, 1)
    assert tool.main(["--out-dir", str(out), "--stats-only", "--stats-out", str(out / "s2.pt"), "--seed", "1"]) == 0
    with pytest.raises(SystemExit) as e:
        tool.main(["--help"])
    assert e.value.code == 0


# ---------------------------------------------------------------------------------------------
# Loader
# ---------------------------------------------------------------------------------------------


def _toy(n: int = 50) -> LatentArrays:
    z = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 2, 2, 3).contiguous()
    z[:, :, :, 0] += 0.25  # so that the flip (reversing the last axis) is visible
    return LatentArrays(z, torch.flip(z, dims=[3]), torch.arange(n) % 7)


def _take(loader, k):
    return [next(loader) for _ in range(k)]


def test_loader_on_real_latents(latent_dir):
    data = load_latent_arrays(latent_dir, "train")
    assert data.latents.shape == (N_TRAIN, C, S, S) and len(data) == N_TRAIN
    mean, std = torch.full((1, C, 1, 1), 0.1), torch.full((1, C, 1, 1), 0.5)
    loader = LatentLoader(data, 8, seed=0, normalizer=LatentNormalizer(mean, std, 2.0))
    x, y = next(loader)
    rows = loader._plan(0)[:8]
    raw = torch.cat([data.latents, data.latents_flip])[rows]
    torch.testing.assert_close(x, (raw - 0.1) / 0.5 * 2.0)
    assert torch.equal(y, data.labels[rows % N_TRAIN])
    assert len(loader) == N_TRAIN // 8


def test_loader_deterministic_and_epoch_coverage():
    data = _toy()
    a = _take(LatentLoader(data, 10, seed=5), 12)
    b = _take(LatentLoader(data, 10, seed=5), 12)
    c = _take(LatentLoader(data, 10, seed=6), 12)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert not all(torch.equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))
    # one epoch visits every sample exactly once; the next epoch uses a new order
    ids = torch.cat([x[:, 0, 0, 1] for x, _ in a[:5]]).long()
    assert sorted(ids.tolist()) == list(range(50))
    ids2 = torch.cat([x[:, 0, 0, 1] for x, _ in a[5:10]]).long()
    assert sorted(ids2.tolist()) == list(range(50)) and not torch.equal(ids, ids2)
    # labels follow their latents; about half are flipped (flip moves the +0.25 to the last column)
    xs = torch.cat([x for x, _ in a[:5]])
    ys = torch.cat([y for _, y in a[:5]])
    assert torch.equal(ys, ids % 7)
    flipped = xs[:, 0, 0, 2] > xs[:, 0, 0, 1]
    assert 10 <= int(flipped.sum()) <= 40


def test_loader_flip_probability():
    data = _toy(4000)
    x, _ = next(LatentLoader(data, 4000, seed=0))
    frac = float((x[:, 0, 0, 2] > x[:, 0, 0, 1]).float().mean())
    assert abs(frac - 0.5) < 0.04
    x0, _ = next(LatentLoader(data, 100, seed=0, flip_prob=0.0))
    assert bool((x0[:, 0, 0, 0] > x0[:, 0, 0, 2]).all())


@pytest.mark.parametrize("stop_after", [3, 5, 7])  # mid-epoch, at the boundary, in epoch 2
def test_loader_resume_gives_identical_batches(stop_after):
    data = _toy()
    ref = LatentLoader(data, 10, seed=11)
    expected = _take(ref, stop_after + 6)
    run = LatentLoader(data, 10, seed=11)
    _take(run, stop_after)
    state = json.loads(json.dumps(run.state_dict()))  # survives serialisation
    resumed = LatentLoader(data, 10, seed=11)
    resumed.load_state_dict(state)
    got = _take(resumed, 6)
    for (xe, ye), (xg, yg) in zip(expected[stop_after:], got):
        assert torch.equal(xe, xg) and torch.equal(ye, yg)
    with pytest.raises(ValueError, match="batch_size"):
        LatentLoader(data, 5, seed=11).load_state_dict(state)


def test_loader_normalisation_modes_and_ranks(tmp_path):
    data = _toy()
    plain = LatentNormalizer(multiplier=0.18215)
    x, _ = next(LatentLoader(data, 50, seed=0, normalizer=plain, drop_last=False))
    assert torch.allclose(plain.denormalize(x).sort(0).values[:, 0, 0, 1], torch.arange(50.0), atol=1e-4)
    stats = {"mean": torch.full((1, 2, 1, 1), 3.0), "std": torch.full((1, 2, 1, 1), 2.0)}
    save_latent_stats(tmp_path / "s.pt", stats)
    norm = LatentNormalizer.from_stats(tmp_path / "s.pt", multiplier=1.5)
    z = torch.randn(4, 2, 2, 3)
    torch.testing.assert_close(norm.denormalize(norm.normalize(z)), z)
    torch.testing.assert_close(norm.normalize(z), (z - 3) / 2 * 1.5)
    with pytest.raises(ValueError):
        LatentNormalizer.from_stats(None, normalize=True)
    r0 = LatentLoader(data, 5, seed=1, rank=0, world_size=2)
    r1 = LatentLoader(data, 5, seed=1, rank=1, world_size=2)
    ids0 = torch.cat([x[:, 0, 0, 1] for x, _ in _take(r0, 5)])
    ids1 = torch.cat([x[:, 0, 0, 1] for x, _ in _take(r1, 5)])
    assert len(set(ids0.tolist()) | set(ids1.tolist())) == 50


# ---------------------------------------------------------------------------------------------
# A split in K parts (data.prep_jobs): the same latents, manifest and statistics whatever K
# ---------------------------------------------------------------------------------------------


def _files(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _cli_one(root, out, *extra) -> None:
    """One job, as the workflow's latents rule runs it with data.prep_jobs = 1."""
    assert (
        tool.main(
            [
                "--image-dir",
                str(root),
                "--out-dir",
                str(out),
                "--autoencoder",
                "identity",
                "--splits",
                "train",
                "--batch-size",
                "7",
                "--stats-out",
                str(out / "stats.pt"),
                *extra,
            ]
        )
        == 0
    )


def _cli_parts(root, out, parts, *extra, order=None) -> None:
    """K part jobs (any order) and the merge, as the workflow's latents and latents_merge rules run them."""
    d = [out / "parts" / f"{k:04d}-of-{parts:04d}" for k in range(parts)]
    for k in order or range(parts):
        assert (
            tool.main(
                [
                    "--image-dir",
                    str(root),
                    "--out-dir",
                    str(out),
                    "--autoencoder",
                    "identity",
                    "--splits",
                    "train",
                    "--batch-size",
                    "7",
                    "--part",
                    str(k),
                    "--parts",
                    str(parts),
                    "--part-manifest",
                    str(d[k] / "train.json"),
                    "--part-stats",
                    str(d[k] / "stats.pt"),
                    *extra,
                ]
            )
            == 0
        )
    assert (
        tool.main(
            [
                "--out-dir",
                str(out),
                "--splits",
                "train",
                "--merge-parts",
                *[str(p / "train.json") for p in d],
                "--merge-stats",
                *[str(p / "stats.pt") for p in d],
                "--stats-out",
                str(out / "stats.pt"),
                *extra,
            ]
        )
        == 0
    )


@pytest.mark.parametrize("stats_samples", [20, 10000])
def test_parts_give_the_same_latents_manifest_and_stats(image_shards, tmp_path, stats_samples):
    """K = 1 against K = 3 (one image shard each, run in reverse) and K = 5 (two parts without a shard):
    byte-identical latent shards, manifest and stats.pt; 10000 > 45 samples takes them all."""
    root, _ = image_shards
    extra = ["--stats-samples", str(stats_samples)]
    _cli_one(root, tmp_path / "one", *extra)
    one = _files(tmp_path / "one")
    shards = ["train-000000.tar", "train-000001.tar", "train-000002.tar"]  # each with its record (fingerprint)
    assert sorted(one) == sorted(["stats.pt", "train.json", *shards, *[f"{s}.json" for s in shards]])
    for parts, order in ((3, [2, 1, 0]), (5, None)):
        out = tmp_path / f"k{parts}"
        _cli_parts(root, out, parts, *extra, order=order)
        assert _files(out) == one, f"K={parts}"
    stats = torch.load(tmp_path / "one" / "stats.pt", weights_only=True)
    assert stats["num_samples"] == min(stats_samples, N_TRAIN)
    reference = compute_latent_stats(tmp_path / "one", "train", max_samples=stats_samples, seed=0)
    assert torch.equal(stats["mean"], reference["mean"]) and torch.equal(stats["std"], reference["std"])


class _NoisyAE(Autoencoder):
    """A stochastic encoder like VA-VAE's posterior.sample(): x + 0.1 eps, eps from a seeded CPU generator."""

    def __init__(self, seed: int):
        super().__init__()
        self.latent_channels, self.stride = C, 1
        self.generator = torch.Generator().manual_seed(seed)

    def encode(self, images):
        return images + 0.1 * torch.randn(images.shape, generator=self.generator)

    def decode(self, latents):
        return latents


def test_sampling_encoder_gives_the_same_latents_whatever_k_and_resume(image_shards, tmp_path):
    root, _ = image_shards
    kw = dict(batch_size=5, autoencoder_name="noisy", log=lambda m: None)
    encode_split(root, tmp_path / "one", "train", _NoisyAE(7), **kw)
    one = _files(tmp_path / "one")
    out = tmp_path / "two"
    made = []

    def factory():
        made.append(1)
        return _NoisyAE(7)

    d = [out / "parts" / str(k) for k in range(2)]
    for k in (1, 0):
        lt.encode_part(
            root, out, "train", factory, part=k, parts=2, part_manifest=d[k] / "m.json", part_stats=d[k] / "s.pt", **kw
        )
    lt.merge_latent_parts(out, "train", [p / "m.json" for p in d], [p / "s.pt" for p in d])
    assert _files(out) == one and len(made) == 2
    # resumed: one shard lost, the part re-encodes it alone (and the others without loading the encoder)
    (out / "train-000002.tar").unlink()
    lt.encode_part(
        root, out, "train", factory, part=1, parts=2, part_manifest=d[1] / "m.json", part_stats=d[1] / "s.pt", **kw
    )
    lt.encode_part(
        root, out, "train", factory, part=0, parts=2, part_manifest=d[0] / "m.json", part_stats=d[0] / "s.pt", **kw
    )
    assert len(made) == 3
    lt.merge_latent_parts(out, "train", [p / "m.json" for p in d], [p / "s.pt" for p in d])
    assert _files(out) == one
    # the noise is there, and the encoder's seed decides it
    encode_split(root, tmp_path / "seed8", "train", _NoisyAE(8), **kw)
    assert _files(tmp_path / "seed8")["train-000000.tar"] != one["train-000000.tar"]
    z = next(iter_latents(tmp_path / "one", "train"))[1]
    assert 0 < np.abs(z - images_to_tensor(image_shards[1]["train"][0][:1]).numpy()[0]).max() < 1


def test_part_merge_checks(image_shards, tmp_path):
    root, _ = image_shards
    ae = IdentityAutoencoder(C)
    d = [tmp_path / "parts" / str(k) for k in range(2)]
    for k in range(2):
        lt.encode_part(
            root,
            tmp_path,
            "train",
            ae,
            part=k,
            parts=2,
            part_manifest=d[k] / "m.json",
            part_stats=d[k] / "s.pt",
            stats_samples=20 + k,
            log=lambda m: None,
        )
    with pytest.raises(ValueError, match="differs from part 0"):
        lt.merge_latent_parts(tmp_path, "train", [p / "m.json" for p in d], [p / "s.pt" for p in d])
    with pytest.raises(ValueError, match="give the parts in order"):
        lt.merge_latent_parts(tmp_path, "train", [p / "m.json" for p in d[::-1]], [p / "s.pt" for p in d])
    assert not (tmp_path / "train.json").exists()


def test_a_part_without_shards_does_not_load_torch(image_shards, tmp_path):
    """More parts than shards (a miniature with the paper's data.prep_jobs): the empty parts stay cheap."""
    import subprocess
    import sys

    root, _ = image_shards
    code = (
        "import importlib.util, sys; "
        f"spec = importlib.util.spec_from_file_location('latents_tool', {str(TOOL)!r}); "
        "tool = importlib.util.module_from_spec(spec); spec.loader.exec_module(tool); "
        f"rc = tool.main(['--image-dir', {str(root)!r}, '--out-dir', {str(tmp_path)!r}, '--autoencoder', 'sdvae_ema_f8c4', "
        f"'--splits', 'train', '--part', '0', '--parts', '5', '--part-manifest', {str(tmp_path / 'm.json')!r}, "
        f"'--part-stats', {str(tmp_path / 's.pt')!r}]); "
        "assert rc == 0 and 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:5]"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    part = json.loads((tmp_path / "m.json").read_text())
    assert part["manifest"]["num_samples"] == 0 and (tmp_path / "s.pt").read_bytes() == b""
