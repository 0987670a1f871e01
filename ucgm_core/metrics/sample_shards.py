"""Sample shards (``workflow/scripts/sample.py``'s ``.npz`` files) as a stream of images for evaluation.

:func:`open_sample_shards` reads only each shard's small members (``meta``, ``indices``) and the header of
its ``images`` array, checks that the shards belong to one evaluation (same checkpoint, sampler and settings;
no image index twice; same image shape) and returns a :class:`SampleShards`. Its :meth:`SampleShards.images`
is a :class:`~ucgm_core.metrics.features.ChunkedImages` that reads the images in blocks of at most
``block_bytes`` (an uncompressed member is read at its offset in the file, a compressed one is decompressed
as a stream), so evaluating 50,000 images at 512 px holds one block, not 39 GB.
"""

from __future__ import annotations

import functools
import json
import os
import struct
import zipfile
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .features import ChunkedImages

__all__ = [
    "NpzArray",
    "SampleShards",
    "open_sample_shards",
    "expected_meta_problems",
    "PER_SHARD_KEYS",
    "UNCOMPARED_KEYS",
    "DEFAULT_BLOCK_BYTES",
]

# metadata that differs from shard to shard by design; left out of the evaluation contract
PER_SHARD_KEYS = ("count", "shard", "first_index", "seconds")
# also not compared between shards: the checkpoint's path (its sha256 is compared; a moved project folder
# gives other paths for the same file)
UNCOMPARED_KEYS = PER_SHARD_KEYS + ("checkpoint",)
DEFAULT_BLOCK_BYTES = 64 << 20

_LOCAL_HEADER = struct.Struct("<4s5H3I2H")  # zip local file header: signature ... name length, extra length
_LOCAL_SIGNATURE = b"PK\x03\x04"


class NpzArray:
    """One array of an ``.npz`` file, read in row ranges without loading the whole array.

    ``shape`` and ``dtype`` come from the ``.npy`` header. An uncompressed member (``np.savez``) is read with
    a seek to its offset in the file; a compressed one (``np.savez_compressed``) through a decompressing
    stream that stays open while rows are read in order (reading backwards restarts it). Arrays in Fortran
    order or with an unusual header are loaded whole on the first read.
    """

    def __init__(self, path: str | os.PathLike, name: str):
        self.path = os.fspath(path)
        self.name = name
        self._stream = None  # (pid, ZipFile, member file, position) of a compressed member
        self._whole: np.ndarray | None = None
        with zipfile.ZipFile(self.path) as zf:
            try:
                info = zf.getinfo(name + ".npy")
            except KeyError:
                raise ValueError(f"{self.path}: no array {name!r} (has {sorted(zf.namelist())})") from None
            with zf.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    shape, fortran, dtype = None, None, None
                self._header_bytes = f.tell()
        if shape is None or fortran or dtype.hasobject or len(shape) == 0:
            self._load_whole()
            shape, dtype = self._whole.shape, self._whole.dtype
        self.shape: tuple[int, ...] = tuple(int(s) for s in shape)
        self.dtype: np.dtype = np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._stored = info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1
        self._data_offset = None
        if self._whole is None and info.file_size < self._header_bytes + self.shape[0] * self.row_bytes:
            raise ValueError(f"{self.path}: array {name!r} is truncated")
        if self._stored and self._whole is None:
            with open(self.path, "rb") as f:
                f.seek(info.header_offset)
                head = f.read(_LOCAL_HEADER.size)
            if len(head) != _LOCAL_HEADER.size or head[:4] != _LOCAL_SIGNATURE:
                raise ValueError(f"{self.path}: bad zip local header for {name!r}")
            fields = _LOCAL_HEADER.unpack(head)
            name_len, extra_len = fields[-2], fields[-1]
            self._data_offset = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len + self._header_bytes

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self):  # for data-loader workers started by spawn: no open file travels
        state = dict(self.__dict__)
        state["_stream"] = None
        return state

    def _load_whole(self) -> None:
        with np.load(self.path, allow_pickle=False) as z:
            self._whole = z[self.name]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as a new array."""
        start, stop = max(0, int(start)), min(len(self), int(stop))
        stop = max(start, stop)
        if self._whole is not None:
            return self._whole[start:stop].copy()
        out = np.empty((stop - start,) + self.shape[1:], self.dtype)
        buf = memoryview(out.reshape(-1).view(np.uint8))
        offset = start * self.row_bytes
        if self._data_offset is not None:
            with open(self.path, "rb") as f:
                f.seek(self._data_offset + offset)
                _read_exactly(f, buf, self)
            return out
        pid = os.getpid()
        if self._stream is None or self._stream[0] != pid or self._stream[3] != offset:
            self._close_stream()
            zf = zipfile.ZipFile(self.path)
            f = zf.open(self.name + ".npy")
            f.seek(self._header_bytes + offset)  # forward: decompresses and drops what comes before
            self._stream = [pid, zf, f, offset]
        _read_exactly(self._stream[2], buf, self)
        self._stream[3] = offset + len(buf)
        if self._stream[3] >= len(self) * self.row_bytes:
            self._close_stream()
        return out

    def _close_stream(self) -> None:
        if self._stream is not None and self._stream[0] == os.getpid():
            self._stream[2].close()
            self._stream[1].close()
        self._stream = None


def _read_exactly(f, buf: memoryview, what: NpzArray) -> None:
    done = 0
    while done < len(buf):
        got = f.readinto(buf[done:])
        if not got:
            raise EOFError(f"{what.path}: array {what.name!r} ended early")
        done += got


def _check_coverage(paths: list[str], uniq: np.ndarray, num_samples: int) -> None:
    """The (unique, sorted) image indices of the shards must be exactly 0 .. num_samples - 1."""
    if len(uniq) == num_samples and (num_samples == 0 or (uniq[0] == 0 and uniq[-1] == num_samples - 1)):
        return
    missing = np.setdiff1d(np.arange(num_samples), uniq)
    extra = uniq[(uniq < 0) | (uniq >= num_samples)]
    raise ValueError(
        f"sample shards {paths[0]} ... {paths[-1]} ({len(paths)} files) hold {len(uniq)} images, "
        f"expected images 0..{num_samples - 1}: {len(missing)} missing (e.g. {missing[:3].tolist()}), "
        f"{len(extra)} outside (e.g. {extra[:3].tolist()})"
    )


@dataclass
class SampleShards:
    """The sample shards of one evaluation, checked for consistency; the images are not loaded."""

    paths: list[str]
    metas: list[dict[str, Any]]
    indices: np.ndarray  # every image index, in shard order
    image_arrays: list[NpzArray] = field(repr=False)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def meta(self) -> dict[str, Any]:
        """The shards' common metadata (the first shard's without :data:`PER_SHARD_KEYS`)."""
        return {k: v for k, v in self.metas[0].items() if k not in PER_SHARD_KEYS}

    @property
    def sampling_seconds(self) -> float:
        return round(sum(m.get("seconds", 0.0) for m in self.metas), 3)

    def images(self, block_bytes: int = DEFAULT_BLOCK_BYTES) -> ChunkedImages:
        """All images, in shard order, read in blocks of at most ``block_bytes`` (at least one image)."""
        chunks = []
        for arr in self.image_arrays:
            rows = max(1, int(block_bytes) // max(1, arr.row_bytes))
            for lo in range(0, len(arr), rows):
                hi = min(lo + rows, len(arr))
                chunks.append((hi - lo, functools.partial(arr.read, lo, hi)))
        return ChunkedImages(chunks)


def expected_meta_problems(meta: Mapping[str, Any], expect: Mapping[str, Any]) -> list[str]:
    """Each key of ``expect`` whose value in a shard's ``meta`` differs (missing counts as differing)."""
    return [f"{k} is {meta.get(k, '(missing)')!r}, expected {v!r}" for k, v in expect.items() if meta.get(k) != v]


def open_sample_shards(
    paths: Sequence[str | os.PathLike],
    expect: Mapping[str, Any] | None = None,
    expect_source: str = "the evaluation's settings",
) -> SampleShards:
    """Open sample shards for evaluation and check that they belong together.

    Every shard's metadata must equal the first shard's in every key except :data:`UNCOMPARED_KEYS`
    (checkpoint sha256, sampler method, steps, NFE, options, guidance, weights, quantisation, seed, seed
    scheme, ...); each shard's ``indices`` must match its ``images`` in length (and its ``count``), no image
    index may occur twice, and all images must have one shape and dtype. With ``expect`` (metadata key ->
    value, e.g. the sampler's settings from the config; ``expect_source`` says where they come from), every
    shard must also hold those values, and with ``expect["num_samples"]`` the shards must hold exactly images
    0 .. num_samples - 1. A violation raises ``ValueError`` naming the shard file(s) and what differs.
    """
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise ValueError("no sample shards")
    expect = dict(expect or {})
    metas, indices, arrays = [], [], []
    for p in paths:
        with np.load(p, allow_pickle=False) as z:
            missing = [k for k in ("images", "indices", "meta") if k not in z.files]
            if missing:
                raise ValueError(f"{p}: not a sample shard (lacks {missing}; has {sorted(z.files)})")
            meta = json.loads(str(z["meta"]))
            idx = np.asarray(z["indices"], np.int64).reshape(-1)
        arr = NpzArray(p, "images")
        if len(idx) != len(arr) or ("count" in meta and int(meta["count"]) != len(arr)):
            raise ValueError(f"{p}: {len(arr)} images but {len(idx)} indices (meta count {meta.get('count')})")
        if metas:
            first = metas[0]
            differ = sorted(
                k for k in set(meta) | set(first) if k not in UNCOMPARED_KEYS and meta.get(k) != first.get(k)
            )
            if differ:
                detail = "; ".join(f"{k}: {meta.get(k)!r} here, {first.get(k)!r} in {paths[0]}" for k in differ)
                raise ValueError(
                    f"sample shard {p} differs from the first shard in {', '.join(differ)} ({detail}): "
                    "the shards of one evaluation must come from one checkpoint and sampler setting"
                )
            a0 = arrays[0]
            if arr.shape[1:] != a0.shape[1:] or arr.dtype != a0.dtype:
                raise ValueError(
                    f"sample shard {p} has images {arr.shape[1:]} {arr.dtype}, {paths[0]} has {a0.shape[1:]} {a0.dtype}"
                )
        wrong = expected_meta_problems(meta, expect)  # after the pairwise check: that one names both shards
        if wrong:
            raise ValueError(f"sample shard {p} was not made with {expect_source}: {'; '.join(wrong)}")
        metas.append(meta)
        indices.append(idx)
        arrays.append(arr)
    idx = np.concatenate(indices)
    uniq, counts = np.unique(idx, return_counts=True)
    if len(uniq) != len(idx):
        v = int(uniq[np.argmax(counts > 1)])
        where = [p for p, ix in zip(paths, indices) if np.any(ix == v)]
        raise ValueError(
            f"sample shards overlap: {len(idx) - len(uniq)} repeated image indices "
            f"(e.g. image {v} in {', '.join(where)})"
        )
    if "num_samples" in expect:
        _check_coverage(paths, uniq, int(expect["num_samples"]))
    return SampleShards(paths=paths, metas=metas, indices=idx, image_arrays=arrays)
