"""Raw-format readers (IDX, CIFAR-10, ImageFolder, ILSVRC tar), ADM crop, image shards."""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from ucgm_core.data import shards as sh
from ucgm_core.data.datasets import (
    CATALOGUE,
    FASHION_MNIST_SHA256,
    get_dataset,
    load_idx_pair,
    read_cifar10,
    read_idx,
    read_ilsvrc_train_tar,
    read_image_folder,
)
from ucgm_core.data.download import fetch_all
from ucgm_core.data.shards import (
    adm_center_crop,
    iter_images,
    load_images,
    prepare_image,
    read_manifest,
    write_image_shards,
)

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
TOOL = Path(__file__).resolve().parents[2] / "workflow" / "scripts" / "shards.py"


def _load_tool():
    """The shards stage tool (its command line; the library has none)."""
    spec = importlib.util.spec_from_file_location("ucgm_shards_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


tool = _load_tool()


# ---------------------------------------------------------------------------------------------
# Helpers writing tiny files in the real formats
# ---------------------------------------------------------------------------------------------


def _idx_bytes(arr: np.ndarray) -> bytes:
    assert arr.dtype == np.uint8
    return bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.tobytes()


def _write_idx_dataset(root: Path, n_train: int = 30, n_test: int = 10, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(x)))
        (root / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(y)))
        out[prefix] = (x, y)
    return out


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


# ---------------------------------------------------------------------------------------------
# IDX
# ---------------------------------------------------------------------------------------------


def test_idx_roundtrip_and_catalogue_reader(tmp_path):
    data = _write_idx_dataset(tmp_path)
    ds = get_dataset("fashion-mnist")
    train = ds.read(tmp_path, "train")
    assert len(train) == 30 and train.channels == 1
    np.testing.assert_array_equal(train.images[..., 0], data["train"][0])
    np.testing.assert_array_equal(train.labels, data["train"][1])
    test = get_dataset("mnist").read(tmp_path, "test")
    np.testing.assert_array_equal(test.images[..., 0], data["t10k"][0])
    # uncompressed IDX is read too
    raw = tmp_path / "raw.idx"
    raw.write_bytes(_idx_bytes(data["t10k"][0]))
    np.testing.assert_array_equal(read_idx(raw), data["t10k"][0])


@pytest.mark.parametrize(
    "blob,match",
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "not an IDX file"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "unknown IDX dtype"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x02\x00\x00\x00\x02\x01\x02\x03", "need 4 data bytes, file has 3"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x01", "truncated IDX header"),
    ],
)
def test_idx_validation(tmp_path, blob, match):
    p = tmp_path / "bad.idx"
    p.write_bytes(blob)
    with pytest.raises(ValueError, match=match):
        read_idx(p)


def test_idx_pair_validation(tmp_path):
    x = np.zeros((3, 4, 4), np.uint8)
    (tmp_path / "x").write_bytes(_idx_bytes(x))
    (tmp_path / "y").write_bytes(_idx_bytes(np.array([0, 1], np.uint8)))
    with pytest.raises(ValueError, match="3 images but .* 2 labels"):
        load_idx_pair(tmp_path / "x", tmp_path / "y", 10)
    (tmp_path / "y").write_bytes(_idx_bytes(np.array([0, 1, 12], np.uint8)))
    with pytest.raises(ValueError, match="labels outside"):
        load_idx_pair(tmp_path / "x", tmp_path / "y", 10)
    with pytest.raises(ValueError, match="expected uint8 labels with 1 dim"):
        load_idx_pair(tmp_path / "x", tmp_path / "x", 10)


# ---------------------------------------------------------------------------------------------
# CIFAR-10 tarball
# ---------------------------------------------------------------------------------------------


def _write_cifar(path: Path, n_per_batch: int = 4, seed: int = 0, evil: bool = False):
    rng = np.random.default_rng(seed)
    batches = {}
    with tarfile.open(path, "w:gz") as tf:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            data = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
            labels = [int(v) for v in rng.integers(0, 10, size=n_per_batch)]
            obj = {
                b"batch_label": name.encode(),
                b"labels": labels,
                b"data": data,
                b"filenames": [b"f.png"] * n_per_batch,
            }
            blob = pickle.dumps(obj, protocol=2)
            if evil and name == "test_batch":
                blob = pickle.dumps(os.system, protocol=2)
            _add(tf, f"cifar-10-batches-py/{name}", blob)
            batches[name] = (data, labels)
        _add(tf, "cifar-10-batches-py/batches.meta", pickle.dumps({b"label_names": []}))
    return batches


def test_cifar10_reader(tmp_path):
    batches = _write_cifar(tmp_path / "cifar-10-python.tar.gz")
    train = get_dataset("cifar10").read(tmp_path, "train")
    assert len(train) == 20 and train.images.shape == (20, 32, 32, 3)
    d1, l1 = batches["data_batch_1"]
    # CIFAR rows are channel-planar: R plane (1024), then G, then B
    np.testing.assert_array_equal(train.images[0, :, :, 0].ravel(), d1[0, :1024])
    np.testing.assert_array_equal(train.images[0, :, :, 2].ravel(), d1[0, 2048:])
    np.testing.assert_array_equal(train.labels[:4], l1)
    test = read_cifar10(tmp_path / "cifar-10-python.tar.gz", "test")
    np.testing.assert_array_equal(test.labels, batches["test_batch"][1])


def test_cifar10_reader_refuses_code_in_pickles(tmp_path):
    _write_cifar(tmp_path / "cifar-10-python.tar.gz", evil=True)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        read_cifar10(tmp_path, "test")


# ---------------------------------------------------------------------------------------------
# ImageFolder and ILSVRC tar
# ---------------------------------------------------------------------------------------------


def _image_folder(root: Path) -> dict:
    rng = np.random.default_rng(1)
    made = {}
    for split, n in (("train", 3), ("val", 2)):
        for cls in ("cat", "dog", "emu"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                arr = rng.integers(0, 256, size=(40 + 3 * i, 50, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")
                made[(split, cls, i)] = arr
    return made


def test_image_folder_reader_and_shards_with_adm_crop(tmp_path):
    made = _image_folder(tmp_path / "if")
    train = read_image_folder(tmp_path / "if", "train")
    assert train.class_names == ("cat", "dog", "emu") and len(train) == 9
    items = list(train)
    np.testing.assert_array_equal(items[0][0], made[("train", "cat", 0)])
    assert [lab for _, lab in items] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    test = get_dataset("imagefolder").read(tmp_path / "if", "test")  # falls back to val/
    assert [lab for _, lab in test] == [0, 0, 1, 1, 2, 2]

    info = write_image_shards(test, tmp_path / "sh", "test", resolution=16, samples_per_shard=4, num_classes=3)
    assert info["shards"] == ["test-000000.tar", "test-000001.tar"] and info["resolution"] == 16
    imgs, labels = load_images(tmp_path / "sh", "test")
    assert imgs.shape == (6, 16, 16, 3) and labels.tolist() == [0, 0, 1, 1, 2, 2]
    ref = prepare_image(made[("val", "cat", 1)], 16)
    np.testing.assert_array_equal(imgs[1], ref)


def test_ilsvrc_tar_of_class_tars_and_class_folders(tmp_path):
    rng = np.random.default_rng(2)
    imgs = {c: [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(2)] for c in ("n02", "n01")}
    outer = tmp_path / "ILSVRC2012_img_train.tar"
    with tarfile.open(outer, "w") as tf:
        for c in ("n02", "n01"):  # unsorted on purpose
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as inner:
                for i, a in enumerate(imgs[c]):
                    _add(inner, f"{c}_{i}.JPEG", _png(a))  # PNG bytes; PIL sniffs the content
            _add(tf, f"{c}.tar", buf.getvalue())
    src = get_dataset("imagenet").reader(tmp_path, "train", None)
    assert src.class_names == ("n01", "n02") and len(src) == 4
    got = list(src)
    assert [lab for _, lab in got] == [0, 0, 1, 1]
    np.testing.assert_array_equal(got[2][0], imgs["n02"][0])

    folders = tmp_path / "folders.tar"
    with tarfile.open(folders, "w") as tf:
        for c in ("n01", "n02"):
            for i, a in enumerate(imgs[c]):
                _add(tf, f"train/{c}/{c}_{i}.png", _png(a))
    src2 = read_ilsvrc_train_tar(folders, "train")
    got2 = list(src2)
    assert [lab for _, lab in got2] == [0, 0, 1, 1]
    np.testing.assert_array_equal(got2[1][0], imgs["n01"][1])


# ---------------------------------------------------------------------------------------------
# ADM crop and shards
# ---------------------------------------------------------------------------------------------


def test_adm_center_crop_non_square():
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 256, size=(200, 300, 3), dtype=np.uint8)  # H=200, W=300
    out = prepare_image(arr, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    # by hand: 300x200 -> BOX halve once (short 200 >= 128) -> 150x100 -> BICUBIC to 96x64 -> crop x 16..80
    im = Image.fromarray(arr).resize((150, 100), Image.BOX).resize((96, 64), Image.BICUBIC)
    np.testing.assert_array_equal(out, np.asarray(im)[:, 16:80])
    tall = adm_center_crop(Image.fromarray(arr[:, :50]), 32)  # 50x200 -> 32x128 -> rows 48..80
    assert tall.size == (32, 32)
    grey = prepare_image(rng.integers(0, 256, size=(28, 28, 1), dtype=np.uint8), 32)  # upsampling, grey
    assert grey.shape == (32, 32, 1)
    same = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    assert prepare_image(same, 32) is same


@pytest.mark.parametrize("fmt", ["png", "npy"])
def test_shard_roundtrip(tmp_path, fmt):
    data = _write_idx_dataset(tmp_path / "raw", n_train=25)
    src = get_dataset("fashion_mnist").read(tmp_path / "raw", "train")
    info = write_image_shards(
        src,
        tmp_path / "sh",
        "train",
        resolution=28,
        samples_per_shard=10,
        image_format=fmt,
        num_classes=10,
        extra_info={"dataset": "fashion_mnist"},
    )
    assert info["shards"] == [f"train-{i:06d}.tar" for i in range(3)]
    assert info["num_samples"] == 25 and info["class_counts"] == [3, 3, 3, 3, 3, 2, 2, 2, 2, 2]
    assert read_manifest(tmp_path / "sh", "train") == json.loads((tmp_path / "sh" / "train.json").read_text())
    keys, imgs, labels = zip(*iter_images(tmp_path / "sh", "train"))
    assert keys[0] == "train-00000000" and keys[-1] == "train-00000024"
    np.testing.assert_array_equal(np.stack(imgs)[..., 0], data["train"][0][:25])
    np.testing.assert_array_equal(labels, data["train"][1][:25])
    with tarfile.open(tmp_path / "sh" / "train-000000.tar") as tf:
        names = tf.getnames()
    assert names[:2] == [f"train-00000000.{fmt}", "train-00000000.cls"] and len(names) == 20
    assert not list((tmp_path / "sh").glob(".*"))  # no temporary files left
    # byte-identical on a rebuild
    first = (tmp_path / "sh" / "train-000001.tar").read_bytes()
    write_image_shards(
        src, tmp_path / "sh", "train", resolution=28, samples_per_shard=10, image_format=fmt, num_classes=10
    )
    assert (tmp_path / "sh" / "train-000001.tar").read_bytes() == first


def test_shards_readable_by_webdataset(tmp_path):
    data = _write_idx_dataset(tmp_path / "raw", n_train=12)
    src = get_dataset("fashion_mnist").read(tmp_path / "raw", "train")
    info = write_image_shards(src, tmp_path / "sh", "train", resolution=28, samples_per_shard=5, num_classes=10)
    urls = [str(tmp_path / "sh" / s) for s in info["shards"]]
    got = [(s["__key__"], int(s["cls"])) for s in wds.WebDataset(urls, shardshuffle=False)]
    assert [k for k, _ in got] == [f"train-{i:08d}" for i in range(12)]
    assert [c for _, c in got] == data["train"][1][:12].tolist()


def test_shards_cli(tmp_path, capsys):
    _write_idx_dataset(tmp_path / "raw", n_train=30, n_test=10)
    rc = tool.main(
        [
            "--dataset",
            "fashion_mnist",
            "--raw-dir",
            str(tmp_path / "raw"),
            "--out-dir",
            str(tmp_path / "sh"),
            "--resolution",
            "32",
            "--samples-per-shard",
            "16",
            "--limit",
            "20",
        ]
    )
    assert rc == 0
    tr, te = read_manifest(tmp_path / "sh", "train"), read_manifest(tmp_path / "sh", "test")
    assert (tr["num_samples"], len(tr["shards"]), tr["resolution"]) == (20, 2, 32)
    assert te["num_samples"] == 10
    with pytest.raises(SystemExit) as e:
        tool.main(["--help"])
    assert e.value.code == 0
    capsys.readouterr()
    missing = tmp_path / "nowhere"
    assert tool.main(["--dataset", "fashion_mnist", "--raw-dir", str(missing), "--out-dir", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err == f"error: --raw-dir {missing}: no such file or folder (dataset fashion_mnist)\n"
    assert not (tmp_path / "x").exists()


def test_catalogue_contents():
    assert {"fashion_mnist", "mnist", "cifar10", "imagenet", "imagefolder"} <= set(CATALOGUE)
    fm = get_dataset("fashion_mnist")
    assert fm.files[0].mirrors[0] == "file:///usr/share/datasets/fashion-mnist/"
    assert all(len(f.sha256 or "") == 64 for f in fm.files + get_dataset("mnist").files)
    assert get_dataset("cifar10").files[0].md5 and get_dataset("imagenet").on_disk


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist_offline(tmp_path):
    ds = get_dataset("fashion_mnist")
    paths = fetch_all(ds.files, tmp_path, log=lambda m: None)  # file:// mirror, checksums verified
    assert [p.name for p in paths] == list(FASHION_MNIST_SHA256)
    train, test = ds.read(tmp_path, "train"), ds.read(tmp_path, "test")
    assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
    assert np.bincount(train.labels, minlength=10).tolist() == [6000] * 10
    assert np.bincount(test.labels, minlength=10).tolist() == [1000] * 10


# ---------------------------------------------------------------------------------------------
# A split in K parts (data.prep_jobs): the same shards and manifest whatever K
# ---------------------------------------------------------------------------------------------


def _files(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _cli_parts(raw: Path, out: Path, split: str, parts: int, *extra: str, order=None) -> None:
    manifests = [str(out / "parts" / f"{k:04d}-of-{parts:04d}" / f"{split}.json") for k in range(parts)]
    for k in order or range(parts):  # independent: any order (side by side on a cluster)
        assert (
            tool.main(
                [
                    "--dataset",
                    "fashion_mnist",
                    "--raw-dir",
                    str(raw),
                    "--out-dir",
                    str(out),
                    "--splits",
                    split,
                    "--part",
                    str(k),
                    "--parts",
                    str(parts),
                    "--part-manifest",
                    manifests[k],
                    *extra,
                ]
            )
            == 0
        )
    assert tool.main(["--out-dir", str(out), "--splits", split, "--merge-parts", *manifests]) == 0


def test_parts_give_the_same_shards_and_manifest_whatever_k(tmp_path):
    """K = 1 (one job, as the workflow's default) against K = 3, 5 and 10 (more parts than the 7 shards: some
    write nothing): byte-identical shards and manifest, parts run in any order, with workers."""
    _write_idx_dataset(tmp_path / "raw", n_train=67, n_test=10)
    raw, common = tmp_path / "raw", ["--samples-per-shard", "10", "--resolution", "32"]
    assert (
        tool.main(
            [
                "--dataset",
                "fashion_mnist",
                "--raw-dir",
                str(raw),
                "--out-dir",
                str(tmp_path / "one"),
                "--splits",
                "train",
                *common,
            ]
        )
        == 0
    )
    one = _files(tmp_path / "one")
    assert sorted(one) == sorted(["train.json"] + [f"train-{i:06d}.tar" for i in range(7)])
    for parts, order in ((3, [2, 0, 1]), (5, None), (10, [9, 3, 0, 1, 2, 4, 5, 6, 7, 8])):
        out = tmp_path / f"k{parts}"
        _cli_parts(raw, out, "train", parts, *common, "--workers", "2" if parts == 3 else "1", order=order)
        assert _files(out) == one, f"K={parts}"
        assert not list(out.glob(".*"))
    sizes = [
        json.loads((tmp_path / "k10" / "parts" / f"{k:04d}-of-0010" / "train.json").read_text())["manifest"]
        for k in range(10)
    ]
    assert [0 if m is None else m["num_samples"] for m in sizes] == [0, 10, 10, 0, 10, 10, 0, 10, 10, 7]
    # with --limit too
    _cli_parts(raw, tmp_path / "lim", "train", 2, *common, "--limit", "25")
    assert read_manifest(tmp_path / "lim", "train")["num_samples"] == 25
    write_image_shards(
        get_dataset("fashion_mnist").read(raw, "train"),
        tmp_path / "lim1",
        "train",
        resolution=32,
        samples_per_shard=10,
        num_classes=10,
        limit=25,
        extra_info={"dataset": "fashion_mnist"},
    )
    assert _files(tmp_path / "lim") == _files(tmp_path / "lim1")


def test_part_rerun_and_merge_checks(tmp_path):
    _write_idx_dataset(tmp_path / "raw", n_train=40, n_test=10)
    raw, out = tmp_path / "raw", tmp_path / "sh"
    src = get_dataset("fashion_mnist").read(raw, "train")
    # an earlier, larger run left shards the new split does not have: the merge removes them
    write_image_shards(src, out, "train", resolution=28, samples_per_shard=5, num_classes=10)
    assert len(list(out.glob("train-*.tar"))) == 8
    kw = dict(resolution=28, samples_per_shard=10, num_classes=10)
    paths = [out / "parts" / f"{k}.json" for k in range(2)]
    for k in range(2):
        sh.write_image_shards_part(src, out, "train", part=k, parts=2, part_manifest=paths[k], **kw)
    assert not (out / "train.json").exists()  # a part never writes the split's manifest
    with pytest.raises(ValueError, match="give the parts in order"):
        sh.merge_image_parts(out, "train", paths[::-1])
    with pytest.raises(ValueError, match="expected"):
        sh.merge_image_parts(out, "train", paths[:1])
    info = sh.merge_image_parts(out, "train", paths)
    assert info == write_image_shards(src, tmp_path / "one", "train", **kw)
    assert sorted(p.name for p in out.glob("train-*.tar")) == [f"train-{i:06d}.tar" for i in range(4)]
    # a rerun of one part (killed job: a half-written temporary file) rewrites only its own shards
    (out / ".train-000003.tar.tmp").write_bytes(b"half")
    before = {n: b for n, b in _files(out).items() if n.endswith(".tar")}
    mtime0 = (out / "train-000000.tar").stat().st_mtime_ns
    sh.write_image_shards_part(src, out, "train", part=1, parts=2, part_manifest=paths[1], **kw)
    assert not (out / ".train-000003.tar.tmp").exists() and (out / "train-000000.tar").stat().st_mtime_ns == mtime0
    sh.merge_image_parts(out, "train", paths)
    assert {n: b for n, b in _files(out).items() if n.endswith(".tar")} == before
    with pytest.raises(ValueError, match="is not in"):
        sh.write_image_shards_part(src, out, "train", part=2, parts=2, part_manifest=paths[1], **kw)


def test_sources_read_a_range_without_the_images_before_it(tmp_path, monkeypatch):
    """iter_range of every source equals slicing its iteration, and decodes only the images in the range."""
    import ucgm_core.data.datasets as datasets
    import ucgm_core.data.sources as sources  # the image sources' decoder lives there

    _image_folder(tmp_path / "if")
    folder = read_image_folder(tmp_path / "if", "train")
    rng = np.random.default_rng(4)
    outer = tmp_path / "ILSVRC2012_img_train.tar"
    with tarfile.open(outer, "w") as tf:
        for c, n in (("n01", 3), ("n02", 1), ("n03", 4)):
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as inner:
                for i in range(n):
                    _add(inner, f"{c}_{i}.JPEG", _png(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)))
            _add(tf, f"{c}.tar", buf.getvalue())
    ilsvrc = read_ilsvrc_train_tar(outer, "train")
    arrays = datasets.ArraySource(rng.integers(0, 256, (9, 4, 4, 1), dtype=np.uint8), np.arange(9) % 3, 3)
    for src in (folder, ilsvrc, arrays):
        everything = list(src)
        for start, stop in ((0, 2), (2, 5), (3, 4), (4, 8), (8, 8), (7, 100)):
            got = list(sh.iter_source_range(src, start, stop))
            assert [lab for _, lab in got] == [lab for _, lab in everything[start:stop]]
            for (a, _), (b, _) in zip(got, everything[start:stop]):
                np.testing.assert_array_equal(a, b)
    decoded = []
    real = sources._decode_image
    monkeypatch.setattr(sources, "_decode_image", lambda data, ch: decoded.append(1) or real(data, ch))
    assert len(list(sh.iter_source_range(ilsvrc, 5, 7))) == 2 and len(decoded) == 2
    assert len(list(sh.iter_source_range(folder, 6, 100))) == 3 and len(decoded) == 5
