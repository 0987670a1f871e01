"""The data package split by concept (issue 12 item 5): the stage modules keep their import paths, the codec keeps
its bytes, and no module grows back into several concepts.

The pinned sha256 below were computed with the tar/npy codec before the split (``ucgm_core/data/shards.py`` at
commit ff709d4) and are equal after it: they guard the on-disk format of every shard (manifests, latent
fingerprints and feature caches record shard hashes, so other bytes would rebuild every split). The shards use
the ``npy`` image field, whose bytes depend on neither zlib nor Pillow, so the pins hold on every platform.
"""

from __future__ import annotations

import hashlib
import importlib
import tarfile
from pathlib import Path

import numpy as np
import pytest

from ucgm_core.data.tarcodec import TarShardWriter, encode_field, iter_samples

DATA = Path(__file__).resolve().parents[2] / "ucgm_core" / "data"

#: Where the public names of the stage modules live since the split (each stage module re-exports them).
MOVED = {
    "shards": ("tarcodec", "manifest", "parts", "imageprep"),
    "latents": ("latent_encode", "latent_provenance", "latent_reader", "latent_stats"),
    "download": ("remote", "checksums", "extract"),
    "datasets": ("sources", "readers", "remote"),
}

#: ``__all__`` of the stage modules before the split (commit ff709d4): each name must stay importable from there.
BEFORE = {
    "shards": "adm_center_crop prepare_image encode_field decode_field TarShardWriter write_manifest read_manifest "
    "shard_paths ShardIntegrityError REBUILD_HINT rebuild_hint shard_records verify_shard iter_split_samples "
    "split_fingerprint iter_samples iter_images load_images write_image_shards part_shards iter_source_range "
    "write_image_shards_part merge_image_parts ImageSourceError build_image_shards read_part_manifests "
    "atomic_write_bytes iter_tar_files npy_bytes npy_array",
    "latents": "images_to_tensor encode_split encode_part encode_latents merge_latent_parts iter_latents "
    "compute_latent_stats save_latent_stats load_latent_stats check_latent_stats latents_fingerprint "
    "read_latent_manifest iter_latent_samples",
    "download": "RemoteFile DownloadError ChecksumError ChecksumRequiredError UnsafeNameError UnsafeArchiveError "
    "BadArchiveError DEFAULT_MAX_BYTES DEFAULT_DEADLINE_S check_file_name name_from_url fetch fetch_all "
    "file_digest verify_file resolve_mirror safe_extract",
    "datasets": "ImageSource ArraySource FileListSource IlsvrcTarSource DatasetSpec CATALOGUE get_dataset read_idx "
    "load_idx_pair read_cifar10 read_image_folder read_ilsvrc_train_tar IMAGE_EXTENSIONS",
}

#: sha256 of the two shards :func:`_write_pinned` writes, as the codec wrote them before the split.
PINNED = {
    "train-000000.tar": "1b2a66d8ef9058f29fbdb4d103d8c28d364ddb56fd3ee66a2db24ce68f989a7c",
    "train-000001.tar": "42243c384d3fc4f2128044c57857d2a65f49269970cf2cfe6746aa8e5c98b866",
}

#: The most lines a module of ucgm_core/data may hold, as formatted by ruff format (about 400 before formatting;
#: the largest today are latent_encode.py and shards.py, about 480).
MAX_LINES = 500


def _write_pinned(out: Path) -> TarShardWriter:
    """Three npy images with labels 0, 1, 2 in shards of two samples."""
    with TarShardWriter(out, "train", 2) as w:
        for i in range(3):
            img = (np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3) * (i + 1)).astype(np.uint8)
            w.write(f"train-{i:08d}", {"npy": encode_field("npy", img), "cls": encode_field("cls", i)})
    return w


@pytest.mark.parametrize("stage", sorted(MOVED))
def test_stage_modules_re_export_what_moved(stage):
    """Every name a stage module exported before the split is importable from it and is the very object of its
    new home, so callers that import from the stage module see no difference."""
    old = importlib.import_module(f"ucgm_core.data.{stage}")
    homes = [importlib.import_module(f"ucgm_core.data.{m}") for m in MOVED[stage]]
    lost = [n for n in BEFORE[stage].split() if n not in old.__all__ or not hasattr(old, n)]
    assert not lost, f"ucgm_core.data.{stage} no longer exports {lost} (callers import them from there)"
    missing = [n for n in old.__all__ if not hasattr(old, n)]
    assert not missing, f"ucgm_core.data.{stage}.__all__ lists names it lacks: {missing}"
    moved = 0
    for home in homes:
        for name in home.__all__:
            if name in old.__all__:
                assert getattr(old, name) is getattr(home, name), f"{stage}.{name} is not {home.__name__}.{name}"
                moved += 1
    assert moved >= len(homes), f"ucgm_core.data.{stage} re-exports only {moved} names of {MOVED[stage]}"


def test_tar_codec_bytes_are_the_pre_split_bytes(tmp_path):
    """The writer's shards hash to the pinned values, its records say so, and the members are plain USTAR files
    in the order given (mtime 0, mode 0644, no owner), read back by our reader and by tarfile alike."""
    w = _write_pinned(tmp_path)
    found = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(tmp_path.glob("*.tar"))}
    assert found == PINNED
    assert [(r["name"], r["num_samples"], r["sha256"], r["size"]) for r in w.records] == [
        (name, n, sha, 10240) for (name, sha), n in zip(PINNED.items(), (2, 1))
    ]
    with tarfile.open(tmp_path / "train-000000.tar") as tf:
        members = tf.getmembers()
    assert [m.name for m in members] == [
        "train-00000000.npy",
        "train-00000000.cls",
        "train-00000001.npy",
        "train-00000001.cls",
    ]
    assert {(m.mtime, m.mode, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0o644, 0, 0, "", "")}
    samples = list(iter_samples(sorted(tmp_path.glob("*.tar"))))
    assert [(s["__key__"], s["cls"]) for s in samples] == [(f"train-{i:08d}", str(i).encode()) for i in range(3)]


def test_data_modules_stay_small():
    """No module of ucgm_core/data grows back past the size of one concept."""
    sizes = {p.name: len(p.read_text().splitlines()) for p in sorted(DATA.glob("*.py"))}
    assert len(sizes) >= 18, f"expected the split data package in {DATA}, found {sorted(sizes)}"
    big = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert not big, f"modules of {DATA} over {MAX_LINES} lines (split them by concept): {big}"
