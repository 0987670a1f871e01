"""Webdataset tar shards: writing (with the ADM center crop) and deterministic reading.

Layout of a shard folder (one per dataset x resolution, or per autoencoder for latents)::

    <dir>/{split}-{index:06d}.tar     samples_per_shard samples each (the last may hold fewer)
    <dir>/{split}.json                manifest, written last: kind, counts, shard names, shapes

A split can also be written by K independent jobs (``--part k --parts K``), each writing the shards of
one contiguous range of shard indices (so of image indices) plus a part manifest, and a merge
(``--merge-parts``) that checks the parts and writes ``{split}.json``; the shards and the manifest are
byte-identical to those of one job, whatever K.

Each sample is a group of consecutive tar members ``<key>.<field>`` sharing ``__key__`` =
``{split}-{sample_index:08d}``: ``png`` or ``npy`` (image, ``uint8 [H, W, C]``) and ``cls``
(ASCII integer label) for image shards; ``latent.npy``, ``latent_flip.npy`` and ``cls`` for
latent shards (:mod:`ucgm_core.data.latents`). Members carry mtime 0 and no owner, so the same
input gives byte-identical shards. Every shard and manifest is written to a temporary name and
renamed into place, so a crash never leaves a half-written file under its final name.

CLI::

    python -m ucgm_core.data.shards --dataset fashion_mnist --raw-dir resources/raw/fashion_mnist \\
        --out-dir resources/shards/fashion_mnist_28 [--resolution 28] [--samples-per-shard 10000]
    # the same split in 3 jobs (run side by side), then the merge:
    python -m ucgm_core.data.shards ... --splits train --part 0 --parts 3 --part-manifest parts/0.json
    python -m ucgm_core.data.shards --out-dir ... --splits train --merge-parts parts/0.json parts/1.json parts/2.json
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import os
import sys
import tarfile
import time
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..io import atomic_write_bytes

__all__ = [
    "adm_center_crop",
    "prepare_image",
    "encode_field",
    "decode_field",
    "TarShardWriter",
    "write_manifest",
    "read_manifest",
    "shard_paths",
    "iter_samples",
    "iter_images",
    "load_images",
    "write_image_shards",
    "part_shards",
    "iter_source_range",
    "write_image_shards_part",
    "merge_image_parts",
    "read_part_manifests",
    "atomic_write_bytes",
    "iter_tar_files",
    "npy_bytes",
    "npy_array",
]

MANIFEST_VERSION = 1


# ---------------------------------------------------------------------------------------------
# Image preprocessing
# ---------------------------------------------------------------------------------------------


def _to_pil(arr: np.ndarray):
    from PIL import Image

    if arr.ndim == 3 and arr.shape[2] == 1:
        return Image.fromarray(arr[:, :, 0], mode="L")
    return Image.fromarray(arr, mode="RGB")


def adm_center_crop(image, size: int):
    """ADM center crop of a PIL image to ``size x size``.

    While the short side is at least ``2 * size`` halve the image with a BOX filter; then resize
    so that the short side equals ``size`` (BICUBIC); then crop the center square.
    """
    from PIL import Image

    while min(image.size) >= 2 * size:
        image = image.resize(tuple(s // 2 for s in image.size), resample=Image.BOX)
    scale = size / min(image.size)
    image = image.resize(tuple(round(s * scale) for s in image.size), resample=Image.BICUBIC)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    return image.crop((left, top, left + size, top + size))


def prepare_image(arr: np.ndarray, size: Optional[int]) -> np.ndarray:
    """``uint8 [H, W, C]`` -> ``uint8 [size, size, C]`` (ADM crop unless already that size)."""
    if arr.ndim == 2:
        arr = arr[..., None]
    if size is None or (arr.shape[0] == size and arr.shape[1] == size):
        return arr
    out = np.asarray(adm_center_crop(_to_pil(arr), size), dtype=np.uint8)
    return out[..., None] if out.ndim == 2 else out


# ---------------------------------------------------------------------------------------------
# Field codecs
# ---------------------------------------------------------------------------------------------

_NPY_MAGIC = b"\x93NUMPY"
_npy_header_cache: Dict[Tuple[str, Tuple[int, ...]], bytes] = {}
_npy_parse_cache: Dict[bytes, Tuple[np.dtype, Tuple[int, ...], bool, int]] = {}


def npy_bytes(value: Any) -> bytes:
    """Serialise an array in the ``.npy`` format (v1.0), caching the header per dtype/shape.

    Byte-identical to ``np.save(..., allow_pickle=False)`` for C-contiguous numeric arrays.
    """
    arr = np.ascontiguousarray(value)
    if arr.dtype.hasobject:
        raise ValueError("object arrays cannot be stored as npy fields")
    key = (arr.dtype.str, arr.shape)
    header = _npy_header_cache.get(key)
    if header is None:
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, np.lib.format.header_data_from_array_1_0(arr))
        header = _npy_header_cache[key] = buf.getvalue()
    return header + arr.tobytes()


def npy_array(data: bytes, copy: bool = True) -> np.ndarray:
    """Parse ``.npy`` bytes (v1/v2/v3 headers, no pickles) into an array.

    With ``copy=False`` the result is a read-only view of ``data`` (faster when the caller
    copies it into a preallocated buffer anyway).
    """
    if data[:6] != _NPY_MAGIC:
        raise ValueError("not npy data")
    major = data[6]
    if major == 1:
        hlen, start = int.from_bytes(data[8:10], "little"), 10
    else:
        hlen, start = int.from_bytes(data[8:12], "little"), 12
    header = data[start : start + hlen]
    parsed = _npy_parse_cache.get(header)
    if parsed is None:
        d = ast.literal_eval(header.decode("latin1"))
        shape = tuple(d["shape"])
        parsed = (np.dtype(d["descr"]), shape, bool(d["fortran_order"]), int(np.prod(shape, dtype=np.int64)))
        if parsed[0].hasobject:
            raise ValueError("refusing npy data with object dtype")
        if len(_npy_parse_cache) < 1024:
            _npy_parse_cache[header] = parsed
    dtype, shape, fortran, count = parsed
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=start + hlen)
    arr = arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)
    return arr.copy() if copy else arr


def encode_field(field: str, value: Any) -> bytes:
    """Encode one sample field by its extension (``png``, ``npy`` or ``*.npy``, ``cls``, ``json``)."""
    ext = field.rsplit(".", 1)[-1]
    if ext == "png":
        buf = io.BytesIO()
        _to_pil(np.asarray(value, dtype=np.uint8)).save(buf, format="PNG", compress_level=1)
        return buf.getvalue()
    if ext == "npy":
        return npy_bytes(value)
    if ext == "cls":
        return str(int(value)).encode("ascii")
    if ext == "json":
        return json.dumps(value, sort_keys=True).encode()
    if isinstance(value, bytes):
        return value
    raise ValueError(f"no encoder for field {field!r}")


def decode_field(field: str, data: bytes) -> Any:
    """Inverse of :func:`encode_field`; png decodes to ``uint8 [H, W, C]``."""
    ext = field.rsplit(".", 1)[-1]
    if ext == "png":
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            arr = np.asarray(im, dtype=np.uint8)
        return arr[..., None] if arr.ndim == 2 else arr
    if ext == "npy":
        return npy_array(data)
    if ext == "cls":
        return int(data)
    if ext == "json":
        return json.loads(data)
    return data


# ---------------------------------------------------------------------------------------------
# Atomic writes and the shard writer
# ---------------------------------------------------------------------------------------------


def _ustar_header(name: str, size: int) -> bytes:
    """A 512-byte USTAR header for a regular file (mode 0644, mtime 0, no owner)."""
    raw = name.encode("utf-8")
    if len(raw) > 100:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, 0, 0o644
        return info.tobuf(format=tarfile.PAX_FORMAT)
    hdr = bytearray(512)
    hdr[0 : len(raw)] = raw
    hdr[100:108] = b"0000644\0"
    hdr[108:116] = b"0000000\0"
    hdr[116:124] = b"0000000\0"
    hdr[124:136] = b"%011o\0" % size
    hdr[136:148] = b"00000000000\0"
    hdr[148:156] = b"        "
    hdr[156:157] = b"0"
    hdr[257:265] = b"ustar\x0000"
    hdr[329:337] = b"0000000\0"
    hdr[337:345] = b"0000000\0"
    hdr[148:156] = b"%06o\0 " % sum(hdr)
    return bytes(hdr)


class TarShardWriter:
    """Writes samples into ``{split}-{index:06d}.tar`` shards of ``samples_per_shard`` samples.

    Use as a context manager; :meth:`write` takes a key and a dict ``{field: encoded bytes}``.
    Each shard is written under a temporary name and renamed when complete. The output is a
    plain USTAR tar (readable by ``tar``, :mod:`tarfile` and webdataset).
    """

    def __init__(self, out_dir: os.PathLike | str, split: str, samples_per_shard: int, start_index: int = 0):
        if samples_per_shard < 1:
            raise ValueError("samples_per_shard must be >= 1")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.split = split
        self.samples_per_shard = samples_per_shard
        self.shard_index = start_index
        self.shards: List[str] = []
        self.count = 0
        self._f: Optional[io.BufferedWriter] = None
        self._tmp: Optional[Path] = None
        self._in_shard = 0

    def shard_name(self, index: int) -> str:
        return f"{self.split}-{index:06d}.tar"

    def _open(self) -> None:
        name = self.shard_name(self.shard_index)
        self._tmp = self.out_dir / f".{name}.tmp"
        self._f = open(self._tmp, "wb", buffering=1 << 20)
        self._in_shard = 0

    def _close_shard(self) -> None:
        if self._f is None:
            return
        self._f.write(b"\0" * 1024)  # end-of-archive marker
        pos = self._f.tell()
        if pos % 10240:  # pad to the default record size like tar(1)
            self._f.write(b"\0" * (10240 - pos % 10240))
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        name = self.shard_name(self.shard_index)
        os.replace(self._tmp, self.out_dir / name)  # type: ignore[arg-type]
        self.shards.append(name)
        self.shard_index += 1
        self._f = None
        self._tmp = None

    def write(self, key: str, fields: Dict[str, bytes]) -> None:
        if "." in key or "/" in key:
            raise ValueError(f"sample key {key!r} may not contain '.' or '/'")
        if self._f is None:
            self._open()
        f = self._f
        for field, data in fields.items():
            f.write(_ustar_header(f"{key}.{field}", len(data)))  # type: ignore[union-attr]
            f.write(data)  # type: ignore[union-attr]
            if len(data) % 512:
                f.write(b"\0" * (512 - len(data) % 512))  # type: ignore[union-attr]
        self._in_shard += 1
        self.count += 1
        if self._in_shard >= self.samples_per_shard:
            self._close_shard()

    def close(self) -> List[str]:
        self._close_shard()
        return self.shards

    def abort(self) -> None:
        if self._f is not None:
            self._f.close()
            Path(self._tmp).unlink(missing_ok=True)  # type: ignore[arg-type]
            self._f = None

    def __enter__(self) -> "TarShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# ---------------------------------------------------------------------------------------------
# Manifests
# ---------------------------------------------------------------------------------------------


def manifest_path(shard_dir: os.PathLike | str, split: str) -> Path:
    return Path(shard_dir) / f"{split}.json"


def write_manifest(shard_dir: os.PathLike | str, split: str, info: Dict[str, Any]) -> Path:
    """Atomically write ``{split}.json`` (adds ``version`` and ``split``)."""
    data = {"version": MANIFEST_VERSION, "split": split, **info}
    path = manifest_path(shard_dir, split)
    atomic_write_bytes(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())
    return path


def read_manifest(shard_dir: os.PathLike | str, split: str) -> Dict[str, Any]:
    """Read ``{split}.json`` and check that its shards exist."""
    path = manifest_path(shard_dir, split)
    if not path.is_file():
        raise FileNotFoundError(f"no manifest {path}; build the shards first")
    info = json.loads(path.read_text())
    missing = [s for s in info["shards"] if not (Path(shard_dir) / s).is_file()]
    if missing:
        raise FileNotFoundError(f"{path}: shards missing on disk: {missing}")
    return info


def shard_paths(shard_dir: os.PathLike | str, split: str) -> List[Path]:
    """Shard paths of ``split`` in manifest order."""
    return [Path(shard_dir) / s for s in read_manifest(shard_dir, split)["shards"]]


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def _octal(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256
        return int.from_bytes(field[1:], "big")
    field = field.split(b"\0", 1)[0].strip()
    return int(field, 8) if field else 0


def _pax_path(data: bytes) -> Optional[str]:
    pos = 0
    while pos < len(data):
        sp = data.index(b" ", pos)
        length = int(data[pos:sp])
        rec = data[sp + 1 : pos + length - 1]
        k, _, v = rec.partition(b"=")
        if k == b"path":
            return v.decode("utf-8")
        pos += length
    return None


def iter_tar_files(path: os.PathLike | str) -> Iterator[Tuple[str, bytes]]:
    """Yield ``(member name, content)`` of the regular files of an uncompressed tar, in order.

    A small streaming USTAR/pax/GNU-longname parser (several times faster than :mod:`tarfile`
    on shards of many tiny members); header checksums are verified.
    """
    with open(path, "rb", buffering=1 << 20) as f:
        long_name: Optional[str] = None
        while True:
            hdr = f.read(512)
            if len(hdr) < 512:
                if hdr.strip(b"\0"):
                    raise ValueError(f"{path}: truncated tar header")
                return
            if not hdr.strip(b"\0"):
                return  # end-of-archive marker
            chk = _octal(hdr[148:156])
            if chk != sum(hdr[:148]) + 256 + sum(hdr[156:]):
                raise ValueError(f"{path}: bad tar header checksum at offset {f.tell() - 512}")
            size = _octal(hdr[124:136])
            kind = hdr[156:157]
            data = f.read(size)
            if len(data) < size:
                raise ValueError(f"{path}: truncated member data")
            if size % 512:
                f.seek(512 - size % 512, 1)
            if kind in (b"x", b"L"):
                long_name = _pax_path(data) if kind == b"x" else data.split(b"\0", 1)[0].decode("utf-8")
                continue
            if kind not in (b"0", b"\0"):
                long_name = None
                continue  # directories, links, global headers: not sample data
            if long_name is not None:
                name, long_name = long_name, None
            else:
                name = hdr[0:100].split(b"\0", 1)[0].decode("utf-8")
                if hdr[257:262] == b"ustar" and hdr[345] != 0:
                    name = hdr[345:500].split(b"\0", 1)[0].decode("utf-8") + "/" + name
            yield name, data


def iter_samples(paths: Iterable[os.PathLike | str]) -> Iterator[Dict[str, Any]]:
    """Yield raw samples ``{"__key__": key, field: bytes, ...}`` in shard and member order.

    Members ``<key>.<field>`` with the same key must be consecutive (webdataset convention).
    """
    for path in paths:
        current: Optional[Dict[str, Any]] = None
        for name, data in iter_tar_files(path):
            base = name.rsplit("/", 1)[-1]
            key, _, field = base.partition(".")
            if current is None or current["__key__"] != key:
                if current is not None:
                    yield current
                current = {"__key__": key}
            current[field] = data
        if current is not None:
            yield current


def iter_images(shard_dir: os.PathLike | str, split: str) -> Iterator[Tuple[str, np.ndarray, int]]:
    """Yield ``(key, uint8 [H, W, C] image, label)`` from image shards, deterministically."""
    for s in iter_samples(shard_paths(shard_dir, split)):
        field = "png" if "png" in s else "npy"
        if field not in s or "cls" not in s:
            raise ValueError(f"sample {s['__key__']} lacks an image or cls field (has {sorted(s)})")
        img = decode_field(field, s[field])
        yield s["__key__"], (img[..., None] if img.ndim == 2 else img), decode_field("cls", s["cls"])


def load_images(shard_dir: os.PathLike | str, split: str) -> Tuple[np.ndarray, np.ndarray]:
    """All images ``uint8 [N, H, W, C]`` and labels ``int64 [N]`` of a split."""
    imgs, labels = [], []
    for _, img, lab in iter_images(shard_dir, split):
        imgs.append(img)
        labels.append(lab)
    return np.stack(imgs), np.asarray(labels, dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# Building image shards
# ---------------------------------------------------------------------------------------------


def _encode_sample(args: Tuple[np.ndarray, int, Optional[int], str]) -> Tuple[bytes, bytes]:
    arr, label, size, fmt = args
    img = prepare_image(arr, size)
    return encode_field(fmt, img), encode_field("cls", label)


def part_shards(num_shards: int, part: int, parts: int) -> range:
    """Shard indices of part ``part`` of ``parts``: contiguous ranges covering ``0 .. num_shards - 1``
    in order, of ``num_shards // parts`` or one more shards each (empty when ``parts > num_shards``)."""
    if not 0 <= part < parts:
        raise ValueError(f"part {part} is not in [0, {parts})")
    return range(part * num_shards // parts, (part + 1) * num_shards // parts)


def iter_source_range(source: Iterable[Tuple[np.ndarray, int]], start: int, stop: int) -> Iterator[Tuple[np.ndarray, int]]:
    """Items ``start .. stop - 1`` of an image source, decoding only those where the source can
    (``iter_range`` of :mod:`ucgm_core.data.datasets`' sources), else by skipping the first ones."""
    iter_range = getattr(source, "iter_range", None)
    if iter_range is not None:
        return iter_range(start, stop)
    import itertools

    return itertools.islice(source, start, stop)


def _remove_shards(out_dir: Path, split: str, keep=lambda index: False) -> None:
    """Delete ``{split}-NNNNNN.tar`` shards (and their temporary files) whose index ``keep`` rejects."""
    for path in [*out_dir.glob(f"{split}-*.tar"), *out_dir.glob(f".{split}-*.tar.tmp")]:
        digits = path.name.lstrip(".")[len(split) + 1:].split(".", 1)[0]
        if not (digits.isdigit() and keep(int(digits))):
            path.unlink(missing_ok=True)


def _write_images(
    items: Iterable[Tuple[np.ndarray, int]],
    out_dir: Path,
    split: str,
    *,
    first_index: int,
    resolution: Optional[int],
    samples_per_shard: int,
    image_format: str,
    num_classes: int,
    workers: int,
) -> Tuple[List[str], np.ndarray, Optional[Tuple[int, ...]]]:
    """Encode ``items`` (image indices ``first_index, first_index + 1, ...``; ``first_index`` a multiple of
    ``samples_per_shard``) into shards from ``first_index // samples_per_shard`` on.
    Returns the shard names, the class counts and the image shape (None when ``items`` was empty)."""
    jobs = ((arr, int(lab), resolution, image_format) for arr, lab in items)
    counts = np.zeros(num_classes, dtype=np.int64)
    shape: Optional[Tuple[int, ...]] = None
    pool = None
    if workers > 1:
        import multiprocessing as mp

        pool = mp.get_context("spawn" if sys.platform == "darwin" else "fork").Pool(workers)
        encoded: Iterable[Tuple[bytes, bytes]] = pool.imap(_encode_sample, jobs, chunksize=64)
    else:
        encoded = map(_encode_sample, jobs)
    try:
        with TarShardWriter(out_dir, split, samples_per_shard, start_index=first_index // samples_per_shard) as w:
            for i, (img_b, cls_b) in enumerate(encoded, start=first_index):
                lab = int(cls_b)
                if not 0 <= lab < num_classes:
                    raise ValueError(f"sample {i}: label {lab} outside [0, {num_classes})")
                counts[lab] += 1
                if shape is None:
                    shape = tuple(decode_field(image_format, img_b).shape)
                w.write(f"{split}-{i:08d}", {image_format: img_b, "cls": cls_b})
        return w.shards, counts, shape
    finally:
        if pool is not None:
            pool.close()
            pool.join()


def _images_manifest(counts: Sequence[int], samples_per_shard: int, shards: List[str], image_format: str,
                     shape: Tuple[int, ...], num_classes: int, extra_info: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    return {
        "kind": "images",
        "num_samples": int(sum(counts)),
        "samples_per_shard": samples_per_shard,
        "shards": shards,
        "image_format": image_format,
        "resolution": int(shape[0]),
        "channels": int(shape[2]),
        "num_classes": int(num_classes),
        "class_counts": [int(c) for c in counts],
        **(extra_info or {}),
    }


def write_image_shards(
    source: Iterable[Tuple[np.ndarray, int]],
    out_dir: os.PathLike | str,
    split: str,
    *,
    resolution: Optional[int],
    samples_per_shard: int = 10000,
    image_format: str = "png",
    num_classes: int,
    limit: Optional[int] = None,
    workers: int = 1,
    extra_info: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Write ``(uint8 [H, W, C] image, label)`` pairs into image shards plus the manifest.

    Images whose size differs from ``resolution`` get the ADM center crop. ``workers > 1``
    preprocesses in a process pool (order preserved). Returns the manifest dict.
    """
    if image_format not in ("png", "npy"):
        raise ValueError("image_format must be 'png' or 'npy'")
    out_dir = Path(out_dir)
    _remove_shards(out_dir, split)
    manifest_path(out_dir, split).unlink(missing_ok=True)
    items = iter(source) if limit is None else iter_source_range(source, 0, limit)
    shards, counts, shape = _write_images(items, out_dir, split, first_index=0, resolution=resolution,
                                          samples_per_shard=samples_per_shard, image_format=image_format,
                                          num_classes=num_classes, workers=workers)
    if shape is None:
        raise ValueError(f"split {split!r}: the source yielded no images")
    info = _images_manifest(counts, samples_per_shard, shards, image_format, shape, num_classes, extra_info)
    write_manifest(out_dir, split, info)
    return info


def write_image_shards_part(
    source: Iterable[Tuple[np.ndarray, int]],
    out_dir: os.PathLike | str,
    split: str,
    *,
    part: int,
    parts: int,
    part_manifest: os.PathLike | str,
    resolution: Optional[int],
    samples_per_shard: int = 10000,
    image_format: str = "png",
    num_classes: int,
    limit: Optional[int] = None,
    workers: int = 1,
    extra_info: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Part ``part`` of ``parts`` of :func:`write_image_shards`: the shards of :func:`part_shards` of the
    split (image indices ``first * samples_per_shard`` up to the next part's), plus the part manifest
    ``part_manifest`` (written atomically, last). ``source`` must be sized (``len``). The parts are
    independent (run them side by side); :func:`merge_image_parts` then writes ``{split}.json``.
    A rerun rewrites the part's shards. Returns the part manifest dict.
    """
    if image_format not in ("png", "npy"):
        raise ValueError("image_format must be 'png' or 'npy'")
    out_dir = Path(out_dir)
    total = len(source)  # type: ignore[arg-type]
    if limit is not None:
        total = min(total, limit)
    own = part_shards(-(-total // samples_per_shard), part, parts)
    start, stop = own.start * samples_per_shard, min(own.stop * samples_per_shard, total)
    manifest_path(out_dir, split).unlink(missing_ok=True)  # its shards are being rewritten
    _remove_shards(out_dir, split, keep=lambda index: index not in own)
    items = iter_source_range(source, start, stop) if start < stop else iter(())
    shards, counts, shape = _write_images(items, out_dir, split,
                                          first_index=start, resolution=resolution,
                                          samples_per_shard=samples_per_shard, image_format=image_format,
                                          num_classes=num_classes, workers=workers)
    if int(counts.sum()) != stop - start:
        raise ValueError(f"split {split!r}: the source yielded {int(counts.sum())} images for indices "
                         f"{start}..{stop - 1} ({total} in all by its length)")
    info = {
        "kind": "images-part",
        "split": split,
        "part": part,
        "parts": parts,
        "total_samples": total,
        "first_shard": own.start,
        "manifest": None if shape is None else
        _images_manifest(counts, samples_per_shard, shards, image_format, shape, num_classes, extra_info),
        "samples_per_shard": samples_per_shard,
        "image_format": image_format,
        "num_classes": int(num_classes),
        "extra_info": extra_info or {},
    }
    atomic_write_bytes(part_manifest, (json.dumps(info, indent=1, sort_keys=True) + "\n").encode())
    return info


def read_part_manifests(paths: Sequence[os.PathLike | str], kind: str, split: str, same: Sequence[str]) -> List[Dict[str, Any]]:
    """Read the part manifests ``paths`` (parts 0 .. K-1 in order) and check that they belong together."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    if not parts:
        raise ValueError("no part manifests to merge")
    for k, (path, info) in enumerate(zip(paths, parts)):
        want = {"kind": kind, "split": split, "part": k, "parts": len(parts)}
        got = {key: info.get(key) for key in want}
        if got != want:
            raise ValueError(f"{path}: part manifest {got}, expected {want} (give the parts in order)")
        for key in same:
            if info.get(key) != parts[0].get(key):
                raise ValueError(f"{path}: {key} = {info.get(key)!r} differs from part 0's {parts[0].get(key)!r}")
    return parts


def merge_image_parts(out_dir: os.PathLike | str, split: str, part_manifests: Sequence[os.PathLike | str]) -> Dict[str, Any]:
    """Write ``{split}.json`` from the part manifests of :func:`write_image_shards_part` (all K of them, in
    order), after checking that their shards cover the split in order; shards of the split that no part
    wrote (left by an earlier, larger run) are deleted. The manifest is the one :func:`write_image_shards`
    writes. Returns it."""
    out_dir = Path(out_dir)
    parts = read_part_manifests(part_manifests, "images-part", split,
                         ("total_samples", "samples_per_shard", "image_format", "num_classes", "extra_info"))
    first = parts[0]
    sps, total = int(first["samples_per_shard"]), int(first["total_samples"])
    if total == 0:
        raise ValueError(f"split {split!r}: the source yielded no images")
    shards: List[str] = []
    counts = np.zeros(int(first["num_classes"]), dtype=np.int64)
    shape: Optional[Tuple[int, ...]] = None
    for path, info in zip(part_manifests, parts):
        if info["first_shard"] != len(shards):
            raise ValueError(f"{path}: starts at shard {info['first_shard']}, the parts before end at {len(shards)}")
        m = info["manifest"]
        if m is None:
            continue
        part_shape = (m["resolution"], m["resolution"], m["channels"])
        if shape is not None and part_shape != shape:
            raise ValueError(f"{path}: images {part_shape}, part 0's are {shape}")
        shape = part_shape
        shards += m["shards"]
        counts += np.asarray(m["class_counts"], dtype=np.int64)
    if len(shards) != -(-total // sps) or int(counts.sum()) != total or shape is None:
        raise ValueError(f"split {split!r}: the parts hold {int(counts.sum())} images in {len(shards)} shards, "
                         f"expected {total} in {-(-total // sps)}")
    info = _images_manifest(counts, sps, shards, first["image_format"], shape, first["num_classes"],
                            first["extra_info"])
    _remove_shards(out_dir, split, keep=lambda index: index < len(shards))
    write_manifest(out_dir, split, info)
    read_manifest(out_dir, split)  # every shard is on disk
    return info


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ucgm_core.data.shards",
        description="Read a dataset's raw files and write webdataset image shards "
        "({split}-{index:06d}.tar + {split}.json) with the ADM center crop; or one part of a split "
        "(--part/--parts), or the merge of the parts (--merge-parts).",
    )
    p.add_argument("--dataset", help="catalogue name: fashion_mnist, mnist, cifar10, imagenet, imagefolder")
    p.add_argument("--raw-dir", "--source", dest="raw_dir",
                   help="download folder (fashion_mnist, mnist, cifar10) or on-disk dataset (imagefolder, imagenet)")
    p.add_argument("--out-dir", required=True, help="shard folder to write")
    p.add_argument("--resolution", type=int, default=None, help="output size (default: the dataset's native size)")
    p.add_argument("--samples-per-shard", type=int, default=10000, help="samples per tar shard (default 10000)")
    p.add_argument("--image-format", choices=("png", "npy"), default="png", help="image field (default png)")
    p.add_argument("--splits", nargs="+", default=None, help="splits to write (default: all of the dataset's)")
    p.add_argument("--limit", type=int, default=None, help="only the first N samples per split (smoke tests)")
    p.add_argument("--workers", type=int, default=1, help="preprocessing processes (default 1)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="class count to expect instead of the catalogue's (e.g. a subset of ImageNet)")
    p.add_argument("--part", type=int, default=None, help="write only part PART (0-based) of --parts (one split)")
    p.add_argument("--parts", type=int, default=None, help="number of parts the split is written in")
    p.add_argument("--part-manifest", default=None, help="where the part's manifest goes (with --part)")
    p.add_argument("--merge-parts", nargs="+", default=None, metavar="PART_MANIFEST",
                   help="write {split}.json from these part manifests (parts 0 .. K-1 in order; one split)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .datasets import get_dataset

    parser = _build_parser()
    args = parser.parse_args(argv)
    if (args.part is not None or args.merge_parts) and (not args.splits or len(args.splits) != 1):
        parser.error("--part and --merge-parts take exactly one split (--splits)")
    if args.merge_parts:
        t0 = time.time()
        info = merge_image_parts(args.out_dir, args.splits[0], args.merge_parts)
        print(f"{args.splits[0]}: {info['num_samples']} images in {len(info['shards'])} shards from "
              f"{len(args.merge_parts)} parts -> {args.out_dir} ({time.time() - t0:.1f}s)")
        return 0
    if (args.part is None) != (args.parts is None) or (args.part is not None and not args.part_manifest):
        parser.error("--part, --parts and --part-manifest go together")
    if not args.dataset or not args.raw_dir:
        parser.error("--dataset and --raw-dir are required")
    ds = get_dataset(args.dataset)
    resolution = args.resolution or ds.image_size
    if resolution is None:
        print(f"error: dataset {ds.name!r} has variable-size images; pass --resolution", file=sys.stderr)
        return 2
    if not os.path.exists(args.raw_dir):
        print(f"error: --raw-dir {args.raw_dir}: no such file or folder (dataset {ds.name})", file=sys.stderr)
        return 2
    for split in args.splits or ds.splits:
        t0 = time.time()
        source = ds.read(args.raw_dir, split) if args.num_classes is None else \
            ds.reader(Path(args.raw_dir), split, args.num_classes)
        common = dict(
            resolution=resolution,
            samples_per_shard=args.samples_per_shard,
            image_format=args.image_format,
            num_classes=args.num_classes or ds.num_classes or source.num_classes,
            limit=args.limit,
            workers=args.workers,
            extra_info={"dataset": ds.name},
        )
        if args.part is not None:
            part = write_image_shards_part(source, args.out_dir, split, part=args.part, parts=args.parts,
                                           part_manifest=args.part_manifest, **common)
            m = part["manifest"] or {"num_samples": 0, "shards": []}
            rate = m["num_samples"] / max(time.time() - t0, 1e-9)
            print(f"{split} part {args.part}/{args.parts}: {m['num_samples']} of {part['total_samples']} images in "
                  f"{len(m['shards'])} shards from shard {part['first_shard']} -> {args.out_dir} "
                  f"({time.time() - t0:.1f}s, {rate:.0f} images/s)")
            continue
        info = write_image_shards(source, args.out_dir, split, **common)
        print(
            f"{split}: {info['num_samples']} images {info['resolution']}x{info['resolution']}x{info['channels']} "
            f"in {len(info['shards'])} shards -> {args.out_dir} ({time.time() - t0:.1f}s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
