"""Webdataset tar shards: writing (with the ADM center crop) and deterministic reading.

Layout of a shard folder (one per dataset x resolution, or per autoencoder for latents)::

    <dir>/{split}-{index:06d}.tar     samples_per_shard samples each (the last may hold fewer)
    <dir>/{split}.json                manifest, written last: kind, counts, shard names, shapes, and per shard
                                      (``shard_info``) its sample count, sha256 and size

Readers check the shards against the manifest (:func:`read_manifest`: sizes; :func:`iter_split_samples`:
counts, and sha256 before a shard is read), so a shard cut at a member boundary (a valid, shorter tar) or
rewritten since is an error naming the shard, the expected and the found value, never a silently smaller
split. Version-1 manifests (before ``shard_info``) are read with counts derived from ``samples_per_shard``.

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

The stage (:func:`build_image_shards`, :func:`merge_image_parts_logged`) is run by the workflow's shards rules
through ``workflow/scripts/shards.py``, which holds its command line.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import sys
import tarfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..io import atomic_write_bytes, sha256_file

__all__ = [
    "adm_center_crop",
    "prepare_image",
    "encode_field",
    "decode_field",
    "TarShardWriter",
    "write_manifest",
    "read_manifest",
    "shard_paths",
    "ShardIntegrityError",
    "REBUILD_HINT",
    "rebuild_hint",
    "shard_records",
    "verify_shard",
    "iter_split_samples",
    "split_fingerprint",
    "iter_samples",
    "iter_images",
    "load_images",
    "write_image_shards",
    "part_shards",
    "iter_source_range",
    "write_image_shards_part",
    "merge_image_parts",
    "ImageSourceError",
    "build_image_shards",
    "read_part_manifests",
    "atomic_write_bytes",
    "iter_tar_files",
    "npy_bytes",
    "npy_array",
]

#: 2: per-shard ``shard_info`` (name, num_samples, sha256, size). Version 1 manifests (no shard_info) are read
#: with per-shard counts derived from ``samples_per_shard`` (every shard but the last is full).
MANIFEST_VERSION = 2


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
    plain USTAR tar (readable by ``tar``, :mod:`tarfile` and webdataset). ``records`` lists, per
    finished shard, its ``name``, ``num_samples``, ``sha256`` and ``size`` (hashed while writing, so the
    manifest can record them without reading the shard again).
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
        self.records: List[Dict[str, Any]] = []
        self.count = 0
        self._f: Optional[io.BufferedWriter] = None
        self._tmp: Optional[Path] = None
        self._in_shard = 0
        self._hash = hashlib.sha256()
        self._size = 0

    def shard_name(self, index: int) -> str:
        return f"{self.split}-{index:06d}.tar"

    def _open(self) -> None:
        name = self.shard_name(self.shard_index)
        self._tmp = self.out_dir / f".{name}.tmp"
        self._f = open(self._tmp, "wb", buffering=1 << 20)
        self._in_shard = 0
        self._hash = hashlib.sha256()
        self._size = 0

    def _put(self, data: bytes) -> None:
        """Write ``data`` to the open shard and hash it."""
        self._f.write(data)  # type: ignore[union-attr]
        self._hash.update(data)
        self._size += len(data)

    def _close_shard(self) -> None:
        if self._f is None:
            return
        self._put(b"\0" * 1024)  # end-of-archive marker
        if self._size % 10240:  # pad to the default record size like tar(1)
            self._put(b"\0" * (10240 - self._size % 10240))
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        name = self.shard_name(self.shard_index)
        os.replace(self._tmp, self.out_dir / name)  # type: ignore[arg-type]
        self.shards.append(name)
        self.records.append({"name": name, "num_samples": self._in_shard, "sha256": self._hash.hexdigest(),
                             "size": self._size})
        self.shard_index += 1
        self._f = None
        self._tmp = None

    def write(self, key: str, fields: Dict[str, bytes]) -> None:
        if "." in key or "/" in key:
            raise ValueError(f"sample key {key!r} may not contain '.' or '/'")
        if self._f is None:
            self._open()
        for field, data in fields.items():
            self._put(_ustar_header(f"{key}.{field}", len(data)))
            self._put(data)
            if len(data) % 512:
                self._put(b"\0" * (512 - len(data) % 512))
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
    """Atomically write ``{split}.json`` (adds ``version`` and ``split``); ``info`` must carry ``shard_info``
    (per shard: name, num_samples, sha256, size), which readers check the shards against."""
    path = manifest_path(shard_dir, split)
    if "shard_info" not in info:
        raise ValueError(f"{path}: a manifest needs shard_info (name, num_samples, sha256, size per shard)")
    _check_shard_info(path, info)
    data = {"version": MANIFEST_VERSION, "split": split, **info}
    atomic_write_bytes(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())
    return path


class ShardIntegrityError(ValueError):
    """A shard disagrees with its manifest: missing samples (cut or short), other bytes (corrupt or
    rewritten since), or a manifest that cannot describe its shards."""


#: How to rebuild a split, by manifest kind (for error messages).
REBUILD_HINT = {
    "images": "rebuild the image shards with python workflow/scripts/shards.py (the workflow's shards rule)",
    "latents": "rebuild the latents with python workflow/scripts/latents.py --no-resume (the workflow's latents rule)",
}


def rebuild_hint(info: Dict[str, Any]) -> str:
    """How to rebuild the split a manifest describes."""
    return REBUILD_HINT.get(str(info.get("kind")), "rebuild it with the stage that wrote it")


def _check_shard_info(path: Path, info: Dict[str, Any]) -> None:
    """``shard_info`` of a version-2 manifest: one record per shard, in order, with a count, sha256 and size."""
    records = info["shard_info"]
    if not isinstance(records, list) or [r.get("name") if isinstance(r, dict) else None for r in records] != info["shards"]:
        raise ShardIntegrityError(f"{path}: shard_info does not list the shards {info['shards']} in order; "
                                  f"{rebuild_hint(info)}")
    for r in records:
        ok = (isinstance(r.get("num_samples"), int) and r["num_samples"] >= 0 and isinstance(r.get("size"), int)
              and isinstance(r.get("sha256"), str) and len(r["sha256"]) == 64)
        if not ok:
            raise ShardIntegrityError(f"{path}: shard_info record {r!r}: expected name, num_samples >= 0, size and a "
                                      f"64-digit sha256; {rebuild_hint(info)}")
    total = sum(r["num_samples"] for r in records)
    if "num_samples" in info and total != info["num_samples"]:
        raise ShardIntegrityError(f"{path}: shard_info counts add up to {total}, num_samples is {info['num_samples']}; "
                                  f"{rebuild_hint(info)}")


def read_manifest(shard_dir: os.PathLike | str, split: str) -> Dict[str, Any]:
    """Read ``{split}.json`` and check it against the disk: every shard exists and, where the manifest records
    sizes (version 2), has that size (a cheap check that catches a shard cut anywhere)."""
    path = manifest_path(shard_dir, split)
    if not path.is_file():
        raise FileNotFoundError(f"no manifest {path}; build the shards first")
    try:
        info = json.loads(path.read_text())
    except ValueError as e:
        raise ShardIntegrityError(f"{path}: not a JSON manifest ({e}); rebuild the split") from None
    if not isinstance(info, dict) or not isinstance(info.get("shards"), list):
        raise ShardIntegrityError(f"{path}: expected a JSON object with a list 'shards'; rebuild the split")
    version = info.get("version", 1)
    if not isinstance(version, int) or not 1 <= version <= MANIFEST_VERSION:
        raise ShardIntegrityError(f"{path}: manifest version {version!r}, this code reads 1 to {MANIFEST_VERSION}; "
                                  f"{rebuild_hint(info)}")
    missing = [s for s in info["shards"] if not (Path(shard_dir) / s).is_file()]
    if missing:
        raise FileNotFoundError(f"{path}: shards missing on disk: {missing}")
    if version >= 2 and "shard_info" not in info:
        raise ShardIntegrityError(f"{path}: a version-{version} manifest without shard_info; {rebuild_hint(info)}")
    if "shard_info" in info:
        _check_shard_info(path, info)
        for r in info["shard_info"]:
            found = (Path(shard_dir) / r["name"]).stat().st_size
            if found != r["size"]:
                raise ShardIntegrityError(f"{Path(shard_dir) / r['name']}: {found} bytes, the manifest {path} records "
                                          f"{r['size']} (a cut, short or rewritten shard); {rebuild_hint(info)}")
    return info


def shard_paths(shard_dir: os.PathLike | str, split: str) -> List[Path]:
    """Shard paths of ``split`` in manifest order."""
    return [Path(shard_dir) / s for s in read_manifest(shard_dir, split)["shards"]]


def shard_records(shard_dir: os.PathLike | str, split: str, info: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
    """Per shard of a split: ``name``, ``path``, expected ``num_samples`` and the recorded ``sha256`` and ``size``.

    Version 1 manifests record no hashes (``sha256``/``size`` None); their counts are derived from
    ``samples_per_shard`` (every shard but the last is full, as the writers make them), or None when the
    manifest lacks it."""
    info = read_manifest(shard_dir, split) if info is None else info
    names = info["shards"]
    if "shard_info" in info:
        return [{**r, "path": Path(shard_dir) / r["name"]} for r in info["shard_info"]]
    sps, total = info.get("samples_per_shard"), info.get("num_samples")
    counts: List[Optional[int]] = [None] * len(names)
    if isinstance(sps, int) and isinstance(total, int) and names:
        last = total - sps * (len(names) - 1)
        if not 1 <= last <= sps:
            raise ShardIntegrityError(f"{manifest_path(shard_dir, split)}: {total} samples cannot fill {len(names)} "
                                      f"shards of {sps}; {rebuild_hint(info)}")
        counts = [sps] * (len(names) - 1) + [last]
    return [{"name": n, "path": Path(shard_dir) / n, "num_samples": c, "sha256": None, "size": None}
            for n, c in zip(names, counts)]


def verify_shard(record: Dict[str, Any], manifest: os.PathLike | str, hint: str) -> None:
    """Check a shard's size and sha256 against its record (a no-op for what the record lacks)."""
    path = record["path"]
    if record.get("size") is not None and path.stat().st_size != record["size"]:
        raise ShardIntegrityError(f"{path}: {path.stat().st_size} bytes, the manifest {manifest} records "
                                  f"{record['size']} (a cut, short or rewritten shard); {hint}")
    if record.get("sha256"):
        found = sha256_file(path)
        if found != record["sha256"]:
            raise ShardIntegrityError(f"{path}: sha256 {found}, the manifest {manifest} records {record['sha256']} "
                                      f"(a corrupt or rewritten shard); {hint}")


def iter_split_samples(shard_dir: os.PathLike | str, split: str, *, verify_hash: bool = True,
                       info: Optional[Dict[str, Any]] = None) -> Iterator[Dict[str, Any]]:
    """:func:`iter_samples` over a split's shards, checked against the manifest: each shard's sample count
    (a shard cut at a member boundary is otherwise a valid, shorter tar), and with ``verify_hash`` its
    sha256 before it is read (where the manifest records one). Samples carry ``__shard__`` (the shard's
    path) besides ``__key__``. Raises :class:`ShardIntegrityError` naming the shard, the expected and the
    found count or hash."""
    info = read_manifest(shard_dir, split) if info is None else info
    mpath, hint = manifest_path(shard_dir, split), rebuild_hint(info)
    total = 0
    for rec in shard_records(shard_dir, split, info):
        path = rec["path"]
        if verify_hash:
            verify_shard(rec, mpath, hint)
        n = 0
        for sample in iter_samples([path]):
            sample["__shard__"] = str(path)
            n += 1
            yield sample
        if rec["num_samples"] is not None and n != rec["num_samples"]:
            raise ShardIntegrityError(f"{path}: {n} samples, the manifest {mpath} records {rec['num_samples']} "
                                      f"(a short or cut shard); {hint}")
        total += n
    if isinstance(info.get("num_samples"), int) and total != info["num_samples"]:
        raise ShardIntegrityError(f"{shard_dir}: {total} samples in the shards of {split!r}, the manifest {mpath} "
                                  f"records {info['num_samples']}; {hint}")


def split_fingerprint(shard_dir: os.PathLike | str, split: str) -> Dict[str, Any]:
    """What a split's shards hold, independent of where they lie: the manifest's kind, counts and sha256 and
    one sha256 over every shard's (name, sha256). Version-2 manifests give the shards' sha256 (their sizes are
    checked; their content when they are read); for version-1 manifests the shard files are hashed here.
    Caches keyed by it (reference features, latents) see a split rebuilt from other data as different."""
    info = read_manifest(shard_dir, split)
    h = hashlib.sha256()
    for rec in shard_records(shard_dir, split, info):
        h.update(f"{rec['name']} {rec['sha256'] or sha256_file(rec['path'])}\n".encode())
    return {
        "split": split,
        "kind": info.get("kind"),
        "num_samples": info.get("num_samples"),
        "num_shards": len(info["shards"]),
        "manifest_sha256": sha256_file(manifest_path(shard_dir, split)),
        "shards_sha256": h.hexdigest(),
    }


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
                # a cut at a member boundary would otherwise read as a complete, shorter tar
                raise ValueError(f"{path}: ends at byte {f.tell()} without the end-of-archive marker "
                                 "(a cut or half-copied tar)")
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
    """Yield ``(key, uint8 [H, W, C] image, label)`` from image shards, deterministically.

    Every shard is checked against the manifest (:func:`iter_split_samples`: count and sha256), every image
    has the manifest's ``resolution`` x ``resolution`` x ``channels`` and every label is in
    ``[0, num_classes)``."""
    info = read_manifest(shard_dir, split)
    mpath, hint = manifest_path(shard_dir, split), rebuild_hint(info)
    res, ch, ncls = info.get("resolution"), info.get("channels"), info.get("num_classes")
    for s in iter_split_samples(shard_dir, split, info=info):
        field = "png" if "png" in s else "npy"
        if field not in s or "cls" not in s:
            raise ShardIntegrityError(f"{s['__shard__']}: sample {s['__key__']} lacks an image or cls field "
                                      f"(has {sorted(k for k in s if not k.startswith('__'))}); {hint}")
        img = decode_field(field, s[field])
        img = img[..., None] if img.ndim == 2 else img
        if res is not None and ch is not None and img.shape != (res, res, ch):
            raise ShardIntegrityError(f"{s['__shard__']}: sample {s['__key__']} is an image {img.shape}, the manifest "
                                      f"{mpath} says {res}x{res}x{ch}; {hint}")
        label = decode_field("cls", s["cls"])
        if ncls is not None and not 0 <= label < ncls:
            raise ShardIntegrityError(f"{s['__shard__']}: sample {s['__key__']} has label {label}, outside "
                                      f"[0, {ncls}) (num_classes of {mpath}); {hint}")
        yield s["__key__"], img, label


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
) -> Tuple[List[Dict[str, Any]], np.ndarray, Optional[Tuple[int, ...]]]:
    """Encode ``items`` (image indices ``first_index, first_index + 1, ...``; ``first_index`` a multiple of
    ``samples_per_shard``) into shards from ``first_index // samples_per_shard`` on.
    Returns the shards' records (:class:`TarShardWriter`), the class counts and the image shape (None when
    ``items`` was empty)."""
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
        return w.records, counts, shape
    finally:
        if pool is not None:
            pool.close()
            pool.join()


def _images_manifest(counts: Sequence[int], samples_per_shard: int, records: List[Dict[str, Any]], image_format: str,
                     shape: Tuple[int, ...], num_classes: int, extra_info: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    return {
        "kind": "images",
        "num_samples": int(sum(counts)),
        "samples_per_shard": samples_per_shard,
        "shards": [r["name"] for r in records],
        "shard_info": [dict(r) for r in records],
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
    records, counts, shape = _write_images(items, out_dir, split, first_index=0, resolution=resolution,
                                          samples_per_shard=samples_per_shard, image_format=image_format,
                                          num_classes=num_classes, workers=workers)
    if shape is None:
        raise ValueError(f"split {split!r}: the source yielded no images")
    info = _images_manifest(counts, samples_per_shard, records, image_format, shape, num_classes, extra_info)
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
    records, counts, shape = _write_images(items, out_dir, split,
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
        _images_manifest(counts, samples_per_shard, records, image_format, shape, num_classes, extra_info),
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
                raise ValueError(f"{path}: {key} = {info.get(key)!r} differs from part 0's ({paths[0]}) "
                                 f"{parts[0].get(key)!r}; the parts must be made alike (rerun the odd one)")
    return parts


def merge_image_parts(out_dir: os.PathLike | str, split: str, part_manifests: Sequence[os.PathLike | str],
                      log: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Write ``{split}.json`` from the part manifests of :func:`write_image_shards_part` (all K of them, in
    order), after checking that their shards cover the split in order; shards of the split that no part
    wrote (left by an earlier, larger run) are deleted. The manifest is the one :func:`write_image_shards`
    writes. ``log``, when given, gets one line saying what was merged. Returns it."""
    t0 = time.time()
    out_dir = Path(out_dir)
    parts = read_part_manifests(part_manifests, "images-part", split,
                         ("total_samples", "samples_per_shard", "image_format", "num_classes", "extra_info"))
    first = parts[0]
    sps, total = int(first["samples_per_shard"]), int(first["total_samples"])
    if total == 0:
        raise ValueError(f"split {split!r}: the source yielded no images")
    shards: List[str] = []
    records: List[Dict[str, Any]] = []
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
        if "shard_info" not in m:
            raise ValueError(f"{path}: a part manifest without shard_info (written before shards recorded counts and "
                             "hashes); rerun that part")
        shards += m["shards"]
        records += m["shard_info"]
        counts += np.asarray(m["class_counts"], dtype=np.int64)
    if len(shards) != -(-total // sps) or int(counts.sum()) != total or shape is None:
        raise ValueError(f"split {split!r}: the parts hold {int(counts.sum())} images in {len(shards)} shards, "
                         f"expected {total} in {-(-total // sps)}")
    info = _images_manifest(counts, sps, records, first["image_format"], shape, first["num_classes"],
                            first["extra_info"])
    _remove_shards(out_dir, split, keep=lambda index: index < len(shards))
    write_manifest(out_dir, split, info)
    read_manifest(out_dir, split)  # every shard is on disk
    if log is not None:
        log(f"{split}: {info['num_samples']} images in {len(info['shards'])} shards from "
            f"{len(part_manifests)} parts -> {out_dir} ({time.time() - t0:.1f}s)")
    return info


class ImageSourceError(ValueError):
    """The dataset cannot be read as asked: its raw folder is missing, or its images vary in size and no
    resolution was given (:func:`build_image_shards`; the stage tool reports it in one line)."""


def build_image_shards(
    dataset: str,
    raw_dir: os.PathLike | str,
    out_dir: os.PathLike | str,
    *,
    splits: Optional[Sequence[str]] = None,
    resolution: Optional[int] = None,
    samples_per_shard: int = 10000,
    image_format: str = "png",
    limit: Optional[int] = None,
    workers: int = 1,
    num_classes: Optional[int] = None,
    part: Optional[int] = None,
    parts: Optional[int] = None,
    part_manifest: Optional[os.PathLike | str] = None,
    log: Callable[[str], None] = print,
) -> List[Dict[str, Any]]:
    """The shards stage (``workflow/scripts/shards.py``): read catalogue dataset ``dataset`` from ``raw_dir``
    and write the image shards of ``splits`` (default: all of the dataset's) into ``out_dir`` with
    :func:`write_image_shards`, or, with ``part``/``parts``/``part_manifest``, part ``part`` of the one split
    with :func:`write_image_shards_part`. ``resolution`` None: the dataset's native size; ``num_classes``
    None: the catalogue's (else a subset, e.g. of ImageNet). Logs one line per split; returns the manifests
    (part manifests with ``part``). Raises :class:`ImageSourceError` for a missing ``raw_dir`` or a
    variable-size dataset without ``resolution``."""
    from .datasets import get_dataset  # deferred: the catalogue's readers import this module

    ds = get_dataset(dataset)
    resolution = resolution or ds.image_size
    if resolution is None:
        raise ImageSourceError(f"dataset {ds.name!r} has variable-size images; pass --resolution")
    if not os.path.exists(raw_dir):
        raise ImageSourceError(f"--raw-dir {raw_dir}: no such file or folder (dataset {ds.name})")
    infos: List[Dict[str, Any]] = []
    for split in splits or ds.splits:
        t0 = time.time()
        source = ds.read(raw_dir, split) if num_classes is None else ds.reader(Path(raw_dir), split, num_classes)
        common: Dict[str, Any] = dict(
            resolution=resolution,
            samples_per_shard=samples_per_shard,
            image_format=image_format,
            num_classes=num_classes or ds.num_classes or source.num_classes,
            limit=limit,
            workers=workers,
            extra_info={"dataset": ds.name},
        )
        if part is not None:
            if parts is None or part_manifest is None:
                raise ValueError(f"split {split!r}: part {part} needs parts and part_manifest")
            info = write_image_shards_part(source, out_dir, split, part=part, parts=parts,
                                           part_manifest=part_manifest, **common)
            m = info["manifest"] or {"num_samples": 0, "shards": []}
            rate = m["num_samples"] / max(time.time() - t0, 1e-9)
            log(f"{split} part {part}/{parts}: {m['num_samples']} of {info['total_samples']} images in "
                f"{len(m['shards'])} shards from shard {info['first_shard']} -> {out_dir} "
                f"({time.time() - t0:.1f}s, {rate:.0f} images/s)")
        else:
            info = write_image_shards(source, out_dir, split, **common)
            log(f"{split}: {info['num_samples']} images {info['resolution']}x{info['resolution']}x{info['channels']} "
                f"in {len(info['shards'])} shards -> {out_dir} ({time.time() - t0:.1f}s)")
        infos.append(info)
    return infos

