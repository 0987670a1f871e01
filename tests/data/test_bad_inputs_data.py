"""Bad inputs of the data stages (issue 16, data provenance and integrity): each case is refused with a message
naming the file, key or value and what was expected, or the stale artefact is rebuilt (never silently reused).

* ``REFUSED`` lists the refusals (case id, what triggers it, exception type, expected message); add a row for a
  new case.
* The resume tests show latent shards made from other inputs (autoencoder, its kwargs or weights file, the
  image shards) re-encoded, with the reason in the log, and unchanged shards reused.
* The reference-cache tests show features of image shards rebuilt from other data recomputed (the FID is that
  of the new images), and the fingerprint recorded in the evaluation JSON.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import tarfile
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import pytest
import torch

from ucgm_core.autoencoders.base import Autoencoder
from ucgm_core.autoencoders.identity import IdentityAutoencoder
from ucgm_core.data import latents as lt
from ucgm_core.data.datasets import ArraySource
from ucgm_core.data.loader import LatentLoader, LatentNormalizer, load_latent_arrays
from ucgm_core.data.shards import (
    ShardIntegrityError,
    TarShardWriter,
    encode_field,
    iter_images,
    iter_tar_files,
    load_images,
    read_manifest,
    split_fingerprint,
    write_image_shards,
)
from ucgm_core.io import sha256_file

ROOT = Path(__file__).resolve().parents[2]
N, C, S, SPS, K = 20, 3, 8, 10, 5  # images, channels, size, samples per shard, classes
QUIET = dict(log=lambda m: None)


def _images(seed: int, n: int = N):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, S, S, C), dtype=np.uint8), np.arange(n) % K


def _write_images(folder: Path, seed: int = 0, split: str = "train") -> Path:
    x, y = _images(seed)
    write_image_shards(ArraySource(x, y, K), folder, split, resolution=S, samples_per_shard=SPS, num_classes=K)
    return folder


def _edit_manifest(folder: Path, split: str, edit: Callable[[Dict], None]) -> None:
    path = folder / f"{split}.json"
    info = json.loads(path.read_text())
    edit(info)
    path.write_text(json.dumps(info))


def _as_version_1(info: Dict) -> None:
    """What a manifest looked like before per-shard counts and hashes."""
    info["version"] = 1
    info.pop("shard_info", None)
    info.pop("fingerprint", None)
    info.pop("made_from", None)


def _rewrite_shard(folder: Path, split: str, index: int, samples: List[Dict[str, bytes]], keys: List[str]) -> None:
    """Replace shard ``index`` by a well-formed tar of ``samples`` and make the manifest (and a latent shard's
    record) agree with its bytes, so that only the count / shape / label checks can tell."""
    with TarShardWriter(folder, split, samples_per_shard=1 << 30, start_index=index) as w:
        for key, fields in zip(keys, samples):
            w.write(key, fields)
    rec = w.records[0]

    def fix(info: Dict) -> None:
        info["shard_info"][index].update(sha256=rec["sha256"], size=rec["size"])

    _edit_manifest(folder, split, fix)
    side = folder / f"{rec['name']}.json"
    if side.is_file():
        side.write_text(json.dumps({**json.loads(side.read_text()), "sha256": rec["sha256"], "size": rec["size"]}))


def _samples(path: Path) -> List[Dict[str, bytes]]:
    out: Dict[str, Dict[str, bytes]] = {}
    for name, data in iter_tar_files(path):
        key, _, field = name.partition(".")
        out.setdefault(key, {})[field] = data
    return [dict(v, __key__=k) for k, v in out.items()]  # type: ignore[arg-type]


@pytest.fixture()
def images(tmp_path) -> Path:
    return _write_images(tmp_path / "img")


@pytest.fixture()
def latents(images, tmp_path) -> Path:
    out = tmp_path / "lat"
    lt.encode_split(
        images,
        out,
        "train",
        IdentityAutoencoder(C),
        batch_size=7,
        autoencoder_name="identity",
        autoencoder_kwargs={"channels": C},
        **QUIET,
    )
    return out


# ---------------------------------------------------------------------------------------------------------------
# refusals: (id, trigger(images folder, latents folder, tmp_path), exception, message)


def _cut_at_member_boundary(images: Path) -> Path:
    """Cut shard 0 after its 5th sample (a valid, shorter tar without the end-of-archive marker)."""
    path = images / "train-000000.tar"
    with tarfile.open(path) as tf:
        offset = tf.getmembers()[10].offset  # 2 members (png, cls) per sample
    data = path.read_bytes()[:offset]
    path.write_bytes(data)
    return path


def cut_shard_v2(images, latents, tmp):
    _cut_at_member_boundary(images)
    list(iter_images(images, "train"))


def cut_shard_v1(images, latents, tmp):
    """A version-1 manifest records no size or hash: the tar reader itself refuses the missing end marker."""
    _cut_at_member_boundary(images)
    _edit_manifest(images, "train", _as_version_1)
    list(iter_images(images, "train"))


def short_shard(images, latents, tmp):
    """Shard 0 rewritten with 5 of its 10 images (a well-formed tar, hash and size in the manifest updated)."""
    samples = _samples(images / "train-000000.tar")[:5]
    _rewrite_shard(
        images,
        "train",
        0,
        [{k: v for k, v in s.items() if k != "__key__"} for s in samples],
        [s["__key__"] for s in samples],
    )
    list(iter_images(images, "train"))


def short_shard_v1(images, latents, tmp):
    """A version-1 manifest (no hashes): the count derived from samples_per_shard still catches it."""
    samples = _samples(images / "train-000000.tar")[:5]
    with TarShardWriter(images, "train", samples_per_shard=1 << 30, start_index=0) as w:
        for s in samples:
            w.write(s["__key__"], {k: v for k, v in s.items() if k != "__key__"})
    _edit_manifest(images, "train", _as_version_1)
    load_images(images, "train")


def corrupt_shard(images, latents, tmp):
    path = images / "train-000001.tar"
    data = bytearray(path.read_bytes())
    data[700] ^= 0xFF  # inside the first image's data: same size, other bytes
    path.write_bytes(bytes(data))
    list(iter_images(images, "train"))


def image_label_out_of_range(images, latents, tmp):
    _edit_manifest(images, "train", lambda i: i.update(num_classes=3))
    list(iter_images(images, "train"))


def newer_manifest(images, latents, tmp):
    _edit_manifest(images, "train", lambda i: i.update(version=99))
    read_manifest(images, "train")


def latents_from_v1_images(images, latents, tmp):
    _edit_manifest(images, "train", _as_version_1)
    lt.encode_split(images, tmp / "new", "train", IdentityAutoencoder(C), autoencoder_name="identity", **QUIET)


def latents_from_short_image_shard(images, latents, tmp):
    samples = _samples(images / "train-000000.tar")[:5]
    _rewrite_shard(
        images,
        "train",
        0,
        [{k: v for k, v in s.items() if k != "__key__"} for s in samples],
        [s["__key__"] for s in samples],
    )
    lt.encode_split(images, tmp / "new", "train", IdentityAutoencoder(C), autoencoder_name="identity", **QUIET)


def latents_v1_manifest(images, latents, tmp):
    _edit_manifest(latents, "train", _as_version_1)
    load_latent_arrays(latents, "train")


def latent_shape_broadcasts(images, latents, tmp):
    """A [1, h, w] latent among [3, h, w] ones would broadcast into its slot."""
    samples = _samples(latents / "train-000000.tar")
    samples[3]["latent.npy"] = encode_field("npy", np.zeros((1, S, S), np.float32))
    _rewrite_shard(
        latents,
        "train",
        0,
        [{k: v for k, v in s.items() if k != "__key__"} for s in samples],
        [s["__key__"] for s in samples],
    )
    load_latent_arrays(latents, "train")


def latent_label_out_of_range(images, latents, tmp):
    samples = _samples(latents / "train-000001.tar")
    samples[0]["cls"] = encode_field("cls", 7)
    _rewrite_shard(
        latents,
        "train",
        1,
        [{k: v for k, v in s.items() if k != "__key__"} for s in samples],
        [s["__key__"] for s in samples],
    )
    load_latent_arrays(latents, "train")


def latent_shard_corrupt(images, latents, tmp):
    path = latents / "train-000000.tar"
    data = bytearray(path.read_bytes())
    data[600] ^= 0x01
    path.write_bytes(bytes(data))
    load_latent_arrays(latents, "train")


def _save_stats(tmp: Path, mean, std) -> Path:
    path = tmp / "stats.pt"
    lt.save_latent_stats(
        path, {"mean": torch.tensor(mean).view(1, -1, 1, 1), "std": torch.tensor(std).view(1, -1, 1, 1)}
    )
    return path


def stats_std_zero(images, latents, tmp):
    lt.load_latent_stats(_save_stats(tmp, [0.0, 0.1, 0.2], [1.0, 0.0, 1.0]))


def stats_nan(images, latents, tmp):
    LatentNormalizer.from_stats(_save_stats(tmp, [0.0, float("nan"), 0.2], [1.0, 1.0, 1.0]))


def stats_std_nan_in_config(images, latents, tmp):
    LatentNormalizer(
        torch.zeros(1, 3, 1, 1),
        torch.tensor([1.0, float("nan"), 1.0]).view(1, 3, 1, 1),
        1.0,
        source="data.latent_stats",
    )


def stats_wrong_channels(images, latents, tmp):
    """data.latent_stats with 4 channels for 3-channel latents (EDM2's stats on another autoencoder)."""
    norm = LatentNormalizer(torch.zeros(1, 4, 1, 1), torch.ones(1, 4, 1, 1), 1.0, source="data.latent_stats")
    LatentLoader(load_latent_arrays(latents, "train"), 4, normalizer=norm)


def stats_mean_std_disagree(images, latents, tmp):
    LatentNormalizer(torch.zeros(1, 4, 1, 1), torch.ones(1, 3, 1, 1), 1.0, source="data.latent_stats")


def merge_differing_fingerprints(images, latents, tmp):
    out = tmp / "parts"
    for k, kwargs in enumerate(({"channels": C}, {"channels": C, "scale": 2})):
        lt.encode_part(
            images,
            out,
            "train",
            IdentityAutoencoder(C),
            part=k,
            parts=2,
            part_manifest=out / f"p{k}.json",
            part_stats=out / f"s{k}.pt",
            autoencoder_name="identity",
            autoencoder_kwargs=kwargs,
            **QUIET,
        )
    lt.merge_latent_parts(out, "train", [out / "p0.json", out / "p1.json"], [out / "s0.pt", out / "s1.pt"])


def merge_replaced_shard(images, latents, tmp):
    """Parts merged after another job replaced one of their shards (a different autoencoder)."""
    out = tmp / "parts"
    for k in range(2):
        lt.encode_part(
            images,
            out,
            "train",
            IdentityAutoencoder(C),
            part=k,
            parts=2,
            part_manifest=out / f"p{k}.json",
            part_stats=out / f"s{k}.pt",
            autoencoder_name="identity",
            **QUIET,
        )
    lt.encode_part(
        images,
        out,
        "train",
        _Scaled(),
        part=1,
        parts=2,
        part_manifest=tmp / "other.json",
        part_stats=tmp / "other.pt",
        autoencoder_name="scaled",
        **QUIET,
    )
    lt.merge_latent_parts(out, "train", [out / "p0.json", out / "p1.json"], [out / "s0.pt", out / "s1.pt"])


REFUSED = [
    (
        "cut shard (v2 manifest: size)",
        cut_shard_v2,
        ShardIntegrityError,
        r"img/train-000000.tar: \d+ bytes, the manifest .*train.json records \d+ \(a cut, short or rewritten shard\); "
        r"rebuild the image shards with python workflow/scripts/shards.py",
    ),
    (
        "cut shard, version-1 manifest",
        cut_shard_v1,
        ValueError,
        r"train-000000.tar: ends at byte \d+ without the end-of-archive marker",
    ),
    (
        "short shard (5 of 10 images)",
        short_shard,
        ShardIntegrityError,
        r"train-000000.tar: 5 samples, the manifest .*train.json records 10 \(a short or cut shard\)",
    ),
    (
        "short shard, version-1 manifest",
        short_shard_v1,
        ShardIntegrityError,
        r"train-000000.tar: 5 samples, the manifest .*train.json records 10",
    ),
    (
        "corrupt shard (same size)",
        corrupt_shard,
        ShardIntegrityError,
        r"train-000001.tar: sha256 [0-9a-f]{64}, the manifest .*train.json records [0-9a-f]{64} "
        r"\(a corrupt or rewritten shard\)",
    ),
    (
        "image label >= num_classes",
        image_label_out_of_range,
        ShardIntegrityError,
        r"train-000000.tar: sample train-00000003 has label 3, outside \[0, 3\) \(num_classes of .*train.json\)",
    ),
    (
        "manifest from a newer version",
        newer_manifest,
        ShardIntegrityError,
        r"train.json: manifest version 99, this code reads 1 to 2",
    ),
    (
        "latents from a version-1 image manifest",
        latents_from_v1_images,
        ShardIntegrityError,
        r"img/train.json: an image manifest without per-shard counts and sha256 .*rebuild the image shards with "
        r"python workflow/scripts/shards.py",
    ),
    (
        "latents from a short image shard",
        latents_from_short_image_shard,
        ShardIntegrityError,
        r"img/train-000000.tar: 5 samples, the manifest .*img/train.json records 10",
    ),
    (
        "latents without fingerprint (version 1)",
        latents_v1_manifest,
        ShardIntegrityError,
        r"lat/train.json: latents without a fingerprint of what made them .*rebuild the latents with "
        r"python workflow/scripts/latents.py --no-resume",
    ),
    (
        "latent shape that broadcasts",
        latent_shape_broadcasts,
        ShardIntegrityError,
        r"lat/train-000000.tar: sample train-00000003: latent.npy has shape \(1, 8, 8\), the manifest .*train.json "
        r"says latent_shape \[3, 8, 8\]",
    ),
    (
        "latent label >= num_classes",
        latent_label_out_of_range,
        ShardIntegrityError,
        r"lat/train-000001.tar: sample train-00000010 has label 7, outside \[0, 5\) \(num_classes of .*train.json\)",
    ),
    (
        "corrupt latent shard",
        latent_shard_corrupt,
        ShardIntegrityError,
        r"lat/train-000000.tar: sha256 [0-9a-f]{64}, the manifest .*lat/train.json records [0-9a-f]{64}",
    ),
    (
        "stats std = 0",
        stats_std_zero,
        ValueError,
        r"stats.pt: std of channel\(s\) \[1\] is \[0.0\]; expected finite values > 0",
    ),
    (
        "stats mean NaN",
        stats_nan,
        ValueError,
        r"stats.pt: mean of channel\(s\) \[1\] is \[nan\]; expected finite values",
    ),
    (
        "data.latent_stats std NaN",
        stats_std_nan_in_config,
        ValueError,
        r"^data.latent_stats: std of channel\(s\) \[1\] is \[nan\]; expected finite values > 0",
    ),
    (
        "data.latent_stats channels != latent channels",
        stats_wrong_channels,
        ValueError,
        r"^data.latent_stats: statistics for 4 channels, the latents have 3 \(\[3, 8, 8\]\); expected one mean and "
        r"std per latent channel",
    ),
    (
        "data.latent_stats mean/std shapes differ",
        stats_mean_std_disagree,
        ValueError,
        r"^data.latent_stats: mean \[1, 4, 1, 1\] and std \[1, 3, 1, 1\], expected both \[1, C, 1, 1\]",
    ),
    (
        "merge of parts with differing fingerprints",
        merge_differing_fingerprints,
        ValueError,
        r"parts/p1.json: fingerprint = '[0-9a-f]{64}' differs from part 0's \(.*parts/p0.json\) '[0-9a-f]{64}'",
    ),
    (
        "merge after a shard was replaced",
        merge_replaced_shard,
        ValueError,
        r"parts/train-000001.tar: made from fingerprint [0-9a-f]{16} with sha256 [0-9a-f]{64}, but .*parts/p1.json "
        r"lists fingerprint [0-9a-f]{16} and sha256 [0-9a-f]{64} \(replaced since\); rerun that part",
    ),
]


@pytest.mark.parametrize("case, trigger, exc, message", REFUSED, ids=[c[0] for c in REFUSED])
def test_bad_data_input_is_refused(case, trigger, exc, message, images, latents, tmp_path):
    with pytest.raises(exc) as info:
        trigger(images, latents, tmp_path)
    assert re.search(message, str(info.value)), f"{case}: {info.value}"


def test_intact_data_passes_every_check(images, latents):
    """The checks do not refuse good data: the same images and latents as written."""
    x, y = _images(0)
    got, labels = load_images(images, "train")
    assert np.array_equal(got, x) and labels.tolist() == y.tolist()
    data = load_latent_arrays(latents, "train")
    assert torch.equal(data.latents, torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1)
    info = read_manifest(latents, "train")
    assert [r["num_samples"] for r in info["shard_info"]] == [10, 10]
    assert all(r["sha256"] == sha256_file(latents / r["name"]) for r in info["shard_info"])


# ---------------------------------------------------------------------------------------------------------------
# latents resumed: shards made from other inputs are re-encoded, the log says which and why


class _Scaled(Autoencoder):
    """Another "autoencoder": twice the identity's latents."""

    def __init__(self):
        super().__init__()
        self.latent_channels, self.stride = C, 1

    def encode(self, images):
        return 2 * images

    def decode(self, latents):
        return latents / 2


def _encode(images: Path, out: Path, ae, name: str, kwargs=None) -> List[str]:
    log: List[str] = []
    lt.encode_split(
        images, out, "train", ae, batch_size=7, autoencoder_name=name, autoencoder_kwargs=kwargs, log=log.append
    )
    return log


def test_resume_with_another_autoencoder_reencodes_every_shard(images, latents):
    before = load_latent_arrays(latents, "train").latents
    log = _encode(images, latents, _Scaled(), "scaled")
    assert not any("skipped" in m for m in log)
    assert (
        sum("not reused, made from other inputs" in m and "autoencoder 'identity' -> 'scaled'" in m for m in log) == 2
    ), log
    info = read_manifest(latents, "train")
    assert info["autoencoder"] == "scaled" and info["made_from"]["autoencoder"] == "scaled"
    assert torch.equal(load_latent_arrays(latents, "train").latents, 2 * before)  # the new encoder's latents
    # and the same inputs again: every shard reused
    log = _encode(images, latents, _Scaled(), "scaled")
    assert sum("same fingerprint), skipped" in m for m in log) == 2, log


def test_resume_with_other_kwargs_or_weights_file_reencodes(images, latents, tmp_path):
    log = _encode(images, latents, IdentityAutoencoder(C), "identity", {"channels": C, "precision": "bf16"})
    assert sum("autoencoder_kwargs" in m and "re-encoding" in m for m in log) == 2, log
    weights = tmp_path / "vae.safetensors"
    weights.write_bytes(b"weights one")
    kwargs = {"channels": C, "source": str(weights)}
    _encode(images, latents, IdentityAutoencoder(C), "identity", kwargs)
    assert read_manifest(latents, "train")["made_from"]["autoencoder_files_sha256"] == {"source": sha256_file(weights)}
    weights.write_bytes(b"weights two, same path")
    log = _encode(images, latents, IdentityAutoencoder(C), "identity", kwargs)
    assert sum("autoencoder_files_sha256" in m and "re-encoding" in m for m in log) == 2, log


def test_resume_after_image_shards_rebuilt_from_other_data(images, latents):
    _write_images(images, seed=5)  # same folder, same names, other images
    log = _encode(images, latents, IdentityAutoencoder(C), "identity", {"channels": C})
    assert sum("source_manifest_sha256" in m and "re-encoding" in m for m in log) == 2, log
    x, _ = _images(5)
    assert torch.equal(
        load_latent_arrays(latents, "train").latents, torch.from_numpy(x).permute(0, 3, 1, 2) / 127.5 - 1
    )


def test_resume_with_damaged_or_unrecorded_shards(images, latents):
    (latents / "train-000000.tar.json").unlink()  # e.g. a crash between the shard and its record
    path = latents / "train-000001.tar"
    data = bytearray(path.read_bytes())
    data[600] ^= 0x01
    path.write_bytes(bytes(data))
    log = _encode(images, latents, IdentityAutoencoder(C), "identity", {"channels": C})
    assert any("train-000000.tar: not reused, no record train-000000.tar.json" in m for m in log), log
    assert any(re.search(r"train-000001.tar: not reused, sha256 [0-9a-f]{64}, its record says", m) for m in log), log
    x, _ = _images(0)
    assert torch.equal(
        load_latent_arrays(latents, "train").latents, torch.from_numpy(x).permute(0, 3, 1, 2) / 127.5 - 1
    )


def test_cli_resume_with_other_ae_kwargs(images, tmp_path, capsys):
    """The CLI the latents rule runs: kwargs changed between runs -> re-encoded, manifest names the new ones."""
    out = tmp_path / "cli"
    args = ["--image-dir", str(images), "--out-dir", str(out), "--splits", "train", "--autoencoder", "identity"]
    spec = importlib.util.spec_from_file_location("ucgm_latents_tool_h3", ROOT / "workflow" / "scripts" / "latents.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(args + ["--ae-kwargs", json.dumps({"channels": C})]) == 0
    capsys.readouterr()
    assert tool.main(args + ["--ae-kwargs", json.dumps({"channels": C, "tf32": False})]) == 0
    assert capsys.readouterr().out.count("re-encoding") == 2
    assert read_manifest(out, "train")["autoencoder_kwargs"] == {"channels": C, "tf32": False}


# ---------------------------------------------------------------------------------------------------------------
# reference features: image shards rebuilt from other data under the same folder name are not served stale


@pytest.fixture(scope="module")
def classifier_spec(tmp_path_factory):
    from ucgm_core.metrics import classifier as clf_mod
    from ucgm_core.metrics.fidelity import FeatureExtractorSpec

    x, y = _images(1, 200)
    cfg = clf_mod.ClassifierConfig(
        in_channels=C, resolution=S, num_classes=K, widths=(4, 8), pool_size=2, feature_dim=16, dropout=0.0
    )
    path = str(tmp_path_factory.mktemp("clf") / "clf.pt")
    clf_mod.train_classifier(
        torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(y),
        path,
        seed=0,
        steps=5,
        batch_size=32,
        config=cfg,
    )
    return FeatureExtractorSpec(clf_mod.CLASSIFIER_EXTRACTOR_NAME, path)


def test_reference_cache_follows_the_shards_content(classifier_spec, tmp_path):
    from ucgm_core.metrics import fidelity as fid_mod
    from ucgm_core.metrics.fidelity import EvaluationResult, ReferenceSet, evaluate

    folder = tmp_path / "shards" / "toy_8"  # the reference id is "<folder>-<split>", whatever the content
    generated = torch.from_numpy(_images(9)[0]).permute(0, 3, 1, 2).contiguous()
    cache = str(tmp_path / "cache")
    kw = dict(metrics=("fid",), cache_dir=cache)

    _write_images(folder, seed=0, split="test")
    ref_a = ReferenceSet.from_image_shards(folder, "test")
    r1 = evaluate(generated, ref_a, classifier_spec, **kw)
    assert r1.reference_source == "computed" and ref_a.id == "toy_8-test"
    assert r1.reference_fingerprint == split_fingerprint(folder, "test")
    assert (
        evaluate(generated, ReferenceSet.from_image_shards(folder, "test"), classifier_spec, **kw).reference_source
        == "cache"
    )

    _write_images(folder, seed=3, split="test")  # rebuilt from another data.source: same folder, same names
    ref_b = ReferenceSet.from_image_shards(folder, "test")
    assert ref_b.id == ref_a.id and ref_b.fingerprint != ref_a.fingerprint
    n0 = fid_mod.reference_compute_count()
    r2 = evaluate(generated, ref_b, classifier_spec, **kw)
    assert r2.reference_source == "computed" and fid_mod.reference_compute_count() == n0 + 1
    fresh = evaluate(
        generated,
        ReferenceSet.from_image_shards(folder, "test"),
        classifier_spec,
        metrics=("fid",),
        cache_dir=str(tmp_path / "fresh"),
    )
    assert r2.fid == fresh.fid != r1.fid  # the new images' FID (same code, same inputs: bit-identical)
    assert r2.reference_fingerprint == split_fingerprint(folder, "test") != r1.reference_fingerprint
    assert EvaluationResult.from_json(r2.to_json()).reference_fingerprint == r2.reference_fingerprint

    # a cache entry whose meta.json records another fingerprint (a copied or hand-edited folder) is recomputed
    entry = next(p for p in Path(cache).iterdir() if p.name.endswith(ref_b.fingerprint_digest()[:16]))
    meta = json.loads((entry / "meta.json").read_text())
    (entry / "meta.json").write_text(json.dumps({**meta, "reference_fingerprint": ref_a.fingerprint}))
    with pytest.warns(UserWarning, match=r"meta.json records other reference_fingerprint; recomputing"):
        r3 = evaluate(generated, ref_b, classifier_spec, **kw)
    assert r3.reference_source == "computed" and r3.fid == r2.fid
    assert json.loads((entry / "meta.json").read_text())["reference_fingerprint"] == ref_b.fingerprint


def test_evaluate_script_reference_mode_records_the_fingerprint(classifier_spec, tmp_path):
    spec = importlib.util.spec_from_file_location(
        "ucgm_evaluate_script_h3", ROOT / "workflow" / "scripts" / "evaluate.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    folder = _write_images(tmp_path / "toy_8", split="test")
    out = tmp_path / "ref.json"
    assert (
        script.main(
            [
                "reference",
                "--images",
                str(folder),
                "--split",
                "test",
                "--extractor",
                "classifier",
                "--weights",
                classifier_spec.weights_path,
                "--cache-dir",
                str(tmp_path / "c"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    info = json.loads(out.read_text())
    assert info["reference_fingerprint"] == split_fingerprint(folder, "test") and info["source"] == "computed"
    shutil.rmtree(folder)
    _write_images(folder, seed=4, split="test")
    assert (
        script.main(
            [
                "reference",
                "--images",
                str(folder),
                "--split",
                "test",
                "--extractor",
                "classifier",
                "--weights",
                classifier_spec.weights_path,
                "--cache-dir",
                str(tmp_path / "c"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads(out.read_text())["source"] == "computed"  # not the first shards' cached features
