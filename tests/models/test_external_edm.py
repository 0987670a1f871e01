"""EDM2 U-Net (S/L/XXL) and EDM SongUNet (DDPM++, UCGM's "UNet+") against the original-code fixtures.

Fixtures: ``external_models/{edm2_tiny.pt, songunet_tiny.pt, edm2_full_keys.json,
songunet_cifar10_full_keys.json}`` (README sections 5 and 6). Tolerance 1e-5 absolute, float32 CPU.
The pickle tests write their own small pickles that mimic ``torch_utils.persistence`` snapshots.
"""

from __future__ import annotations

import json
import pickle
import sys
import types
from pathlib import Path

import pytest
import torch
from conftest import require_file
from torch import nn

from ucgm_core.models import MODELS, build_model
from ucgm_core.models.convert import CheckpointError, UnsafeCheckpointError, save_state_dict
from ucgm_core.models.edm2 import (
    EDM2_SIZES,
    EDM2UNet,
    MPConv,
    MPFourier,
    convert_edm2_checkpoint,
    edm2_kwargs_from_original,
)
from ucgm_core.models.songunet import (
    SONGUNET_CIFAR10,
    SongUNet,
    convert_songunet_checkpoint,
    songunet_kwargs_from_original,
)
from ucgm_core.sampling.guidance import guided

# threads: set once in tests/conftest.py
TOL = 1e-5

# README, section 5 (UNet parameters = Precond minus the logvar head) and section 6 (UCGM port counts).
EDM2_UNET_PARAMS = {"EDM2-S": 280_212_709, "EDM2-L": 777_497_957, "EDM2-XXL": 1_523_164_645}
EDM2_PRECOND_PARAMS = {"EDM2-S": 280_212_837, "EDM2-L": 777_498_085, "EDM2-XXL": 1_523_164_773}
SONGUNET_PARAMS = {1: 55_732_739, 10: 55_734_147}
SONGUNET_ORIGINAL_PARAMS = {1: 55_733_891, 10: 55_735_299}


# --- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ext_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "external_models"


def _need(ext_dir: Path, name: str) -> Path:
    return require_file(ext_dir / name)


@pytest.fixture(scope="module")
def edm2_blob(ext_dir):
    return torch.load(_need(ext_dir, "edm2_tiny.pt"), weights_only=True)


@pytest.fixture(scope="module")
def edm2_net(edm2_blob):
    kw = edm2_kwargs_from_original(edm2_blob["config"])
    net = EDM2UNet(**kw).eval()
    net.load_state_dict(convert_edm2_checkpoint(edm2_blob["state_dict"], kw), strict=True)
    return net


@pytest.fixture(scope="module")
def song_blob(ext_dir):
    return torch.load(_need(ext_dir, "songunet_tiny.pt"), weights_only=True)


def _song_net(blob):
    kw = songunet_kwargs_from_original(blob["config"])
    net = SongUNet(**kw).eval()
    net.load_state_dict(convert_songunet_checkpoint({"ema": blob["state_dict"]}, **kw), strict=True)
    return net


def _close(a, b, what, tol=TOL):
    err = (a - b).abs().max().item()
    assert a.shape == b.shape and err <= tol, f"{what}: max |diff| {err:.3g} > {tol}"


# --- EDM2 tiny parity ----------------------------------------------------------------------------------


def test_edm2_tiny_all_variants(edm2_blob, edm2_net):
    i, o, u = edm2_blob["inputs"], edm2_blob["outputs"], edm2_blob["ucgm"]
    assert u["config"] == {**edm2_kwargs_from_original(edm2_blob["config"])}
    with torch.no_grad():
        _close(edm2_net.unet(o["unet_in"], o["unet_c_noise"], i["class_labels_onehot"]), o["unet_F"], "raw UNet F")
        _close(edm2_net.denoise(i["x_noisy"], i["sigma"], i["class_labels_onehot"]), o["D"], "Precond D")
        _close(
            edm2_net.denoise(i["x_noisy"], i["sigma"], i["class_labels_onehot_zero_row3"]),
            o["D_zero_label_row3"],
            "Precond D, zero label row 3",
        )
        # UCGM convention: c_in-scaled input, model time t, integer labels; 1000 = no label branch.
        f = edm2_net(u["inputs"]["x_t"], u["inputs"]["t"], u["inputs"]["y"])
        _close(f, u["F"], "F(x_t, t, y)")
        _close(f, o["unet_F"], "F(x_t, t, y) vs original UNet")
        f_null = edm2_net(u["inputs"]["x_t"], u["inputs"]["t"], torch.full_like(u["inputs"]["y"], 1000))
        _close(f_null, u["F_uncond"], "F(x_t, t, null)")
        # per-row null label: mixed batch equals the separate calls
        y_mix = u["inputs"]["y"].clone()
        y_mix[1] = 1000
        f_mix = edm2_net(u["inputs"]["x_t"], u["inputs"]["t"], y_mix)
        _close(f_mix[1], u["F_uncond"][1], "mixed batch, null row")
        _close(f_mix[[0, 2, 3]], u["F"][[0, 2, 3]], "mixed batch, labelled rows")
        # EDM-transport inversion (x_t is c_in-scaled): x_hat = (alpha_in F - alpha_to x_t) / 2 = D
        sigma = i["sigma"][:, None, None, None]
        n = (sigma**2 + 0.25).sqrt()
        x_hat = (sigma / n * f + 0.5 / n * u["inputs"]["x_t"]) / 2
        _close(x_hat, o["D"], "x_hat from the EDM transport")


def test_edm2_tiny_guidance(edm2_blob, edm2_net):
    u = edm2_blob["ucgm"]
    x, t, y = u["inputs"]["x_t"], u["inputs"]["t"], u["inputs"]["y"]
    w = 1.5
    want = u["F_uncond"] + w * (u["F"] - u["F_uncond"])
    with torch.no_grad():
        out = edm2_net.forward_with_cfg(
            torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, 1000)]), w, [0.0, 1.0]
        )
        _close(out[:4], want, "forward_with_cfg inside the interval")
        _close(out[4:], want, "forward_with_cfg second half")
        net = guided(edm2_net, y, 1000, w, [0.0, 1.0])
        _close(net(x, t), want, "sampler guided() inside the interval")
        net = guided(edm2_net, y, 1000, w, [float(t[0]) + 0.01, 1.0])
        _close(net(x, t), u["F"], "sampler guided() outside the interval")


# --- SongUNet tiny parity ------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["unconditional", "conditional"])
def test_songunet_tiny_all_variants(song_blob, variant):
    blob = song_blob if variant == "unconditional" else song_blob["conditional"]
    net = _song_net(blob)
    i, o, u = blob["inputs"], blob["outputs"], blob["ucgm"]
    onehot = i.get("class_labels_onehot")
    y = i["class_labels_int"] if onehot is not None else torch.zeros(2, dtype=torch.long)
    with torch.no_grad():
        _close(net.unet(o["unet_in"], o["noise_labels"], onehot), o["F"], f"{variant}: raw SongUNet F")
        _close(net.denoise(i["x_noisy"], i["sigma"], onehot), o["D"], f"{variant}: EDMPrecond D")
        f = net(u["inputs"]["x_t"], u["inputs"]["t"], y)
        _close(f, u["F"], f"{variant}: F(x_t, t, y)")
        _close(f, o["F"], f"{variant}: F(x_t, t, y) vs original")
        if onehot is None:
            # no label map: labels are ignored, so guidance is the identity
            out = net.forward_with_cfg(
                torch.cat([u["inputs"]["x_t"]] * 2), torch.cat([u["inputs"]["t"]] * 2), torch.tensor([0, 0, 1, 1]), 3.0
            )
            _close(out[:2], o["F"], "unconditional: forward_with_cfg")
            return
        _close(net.denoise(i["x_noisy"], i["sigma"]), o["D_no_label"], "conditional: D without labels")
        null = torch.full_like(y, 10)
        _close(net(u["inputs"]["x_t"], u["inputs"]["t"], null), o["F_no_label"], "conditional: F(null label)")
        w = 2.0
        want = o["F_no_label"] + w * (o["F"] - o["F_no_label"])
        out = guided(net, y, 10, w, [0.0, 1.0])(u["inputs"]["x_t"], u["inputs"]["t"])
        # Guidance sums the two outputs with weights (1 - w, w): each output is within TOL of the
        # original, so the guided one is within (|1 - w| + |w|) TOL = 3 TOL. Measured: 1.00e-5 (AVX-512),
        # 1.05e-5 (AVX2), 0.98e-5 (scalar "default" kernels), the outputs themselves 3.9-4.5e-6.
        _close(out, want, "conditional: guided inside the interval", tol=(abs(1 - w) + abs(w)) * TOL)
        out = guided(net, y, 10, w, [0.0, float(u["inputs"]["t"][0]) - 0.01])(u["inputs"]["x_t"], u["inputs"]["t"])
        _close(out, o["F"], "conditional: guided outside the interval")


# --- full-size layouts and parameter counts ------------------------------------------------------------


@pytest.mark.parametrize("name", ["EDM2-S", "EDM2-L", "EDM2-XXL"])
def test_edm2_full_layout(ext_dir, name):
    info = json.loads(_need(ext_dir, "edm2_full_keys.json").read_text())["models"][name]
    layout = info["state_dict"]
    meta = {k: torch.empty(v, device="meta") for k, v in layout.items()}
    state = convert_edm2_checkpoint({"ema": meta}, name)
    irrelevant = set(info["sampling_irrelevant_keys"])
    want = {k[len("unet.") :]: tuple(v) for k, v in layout.items() if k not in irrelevant}
    assert len(want) == len(layout) - 3 == 200 and all(k.startswith("unet.") or k in irrelevant for k in layout)
    assert {k: tuple(v.shape) for k, v in state.items()} == want
    assert list(state) == list(want)  # same order too
    spec = MODELS[name]
    assert spec.transport == "EDM"
    with torch.device("meta"):
        net = build_model(name, input_size=64, in_channels=4, num_classes=1000)
    n = sum(p.numel() for p in net.parameters())
    assert n == EDM2_UNET_PARAMS[name] == info["param_count_unet"] == info["ucgm_port"]["param_count_total"]
    logvar = sum(torch.Size(layout[k]).numel() for k in ("logvar_linear.weight",))
    assert n + logvar == EDM2_PRECOND_PARAMS[name] == info["param_count_total"]
    assert edm2_kwargs_from_original(info["constructor_kwargs"]) == {
        "input_size": 64,
        "in_channels": 4,
        "num_classes": 1000,
        **EDM2_SIZES[name[5:]],
    }


@pytest.mark.parametrize("num_classes", [1, 10])
def test_songunet_full_layout(ext_dir, num_classes):
    info = json.loads(_need(ext_dir, "songunet_cifar10_full_keys.json").read_text())
    orig = info if num_classes == 1 else info["conditional"]
    layout = orig["state_dict"]
    meta = {k: torch.empty(v, device="meta") for k, v in layout.items()}
    state = convert_songunet_checkpoint({"ema": meta})  # num_classes inferred from map_label
    want = {k[len("model.") :]: tuple(v) for k, v in layout.items() if k not in info["sampling_irrelevant_keys"]}
    assert len(want) == orig["num_keys"] - 1
    assert {k: tuple(v.shape) for k, v in state.items()} == want
    assert list(state) == list(want)
    if num_classes == 1:
        assert {k: tuple(v) for k, v in info["ucgm_port"]["state_dict"].items()} == want
    assert MODELS["SongUNet-CIFAR10"].transport == "EDM"
    with torch.device("meta"):
        net = build_model("SongUNet-CIFAR10", input_size=32, in_channels=3, num_classes=num_classes)
    n = sum(p.numel() for p in net.parameters())
    assert n == SONGUNET_PARAMS[num_classes]
    assert n + 128 * 9 == SONGUNET_ORIGINAL_PARAMS[num_classes] == orig["param_count_total"]  # + map_augment
    if num_classes == 1:
        assert n == info["ucgm_port"]["param_count_total"]
    else:
        assert n == info["ucgm_port"]["conditional_num_classes_10"]["param_count_total"]
    kw = songunet_kwargs_from_original(orig["constructor_kwargs"])
    assert kw["num_classes"] == num_classes and kw["model_channels"] == SONGUNET_CIFAR10["model_channels"]


# --- bad files ------------------------------------------------------------------------------------------

TINY_EDM2 = dict(
    input_size=8,
    in_channels=2,
    num_classes=3,
    model_channels=8,
    channel_mult=[1, 2],
    num_blocks=1,
    attn_resolutions=[4],
    channels_per_head=8,
)
TINY_SONG = dict(
    input_size=8,
    in_channels=3,
    num_classes=1,
    model_channels=8,
    channel_mult=[1, 2],
    num_blocks=1,
    attn_resolutions=[4],
    dropout=0.0,
)


def test_corrupt_and_mismatched_files(tmp_path):
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"definitely not a checkpoint")
    for convert, kw in ((convert_edm2_checkpoint, dict(size=TINY_EDM2)), (convert_songunet_checkpoint, {})):
        with pytest.raises(CheckpointError, match="corrupt.pt"):
            convert(bad, **kw)
    with pytest.raises(CheckpointError, match="missing.safetensors"):
        convert_edm2_checkpoint(tmp_path / "missing.safetensors", "S")

    state = {f"unet.{k}": v for k, v in EDM2UNet(**TINY_EDM2).state_dict().items()}
    state.pop("unet.out_conv.weight")
    state["unet.enc.8x8_block0.conv_res0.weight"] = torch.zeros(8, 8, 1, 1)
    state["unet.surprise.weight"] = torch.zeros(1)
    path = save_state_dict(state, tmp_path / "edm2_mismatch.safetensors")
    with pytest.raises(CheckpointError) as err:
        convert_edm2_checkpoint(path, TINY_EDM2)
    msg = str(err.value)
    for part in (str(path), "out_conv.weight", "surprise.weight", "enc.8x8_block0.conv_res0.weight"):
        assert part in msg, msg

    song = {f"model.{k}": v for k, v in SongUNet(**TINY_SONG).state_dict().items()}
    song.pop("model.dec.8x8_aux_conv.bias")
    song["model.enc.8x8_conv.weight"] = torch.zeros(8, 3, 1, 1)
    path = save_state_dict(song, tmp_path / "song_mismatch.pt")
    with pytest.raises(CheckpointError) as err:
        convert_songunet_checkpoint(path, **TINY_SONG)
    msg = str(err.value)
    for part in (str(path), "dec.8x8_aux_conv.bias", "enc.8x8_conv.weight"):
        assert part in msg, msg

    # a full-size checkpoint of the wrong size
    with torch.device("meta"):
        s_state = EDM2UNet(**EDM2_SIZES["S"]).state_dict()
    with pytest.raises(CheckpointError, match="mis-shaped"):
        convert_edm2_checkpoint(s_state, "L")


# --- .pkl network snapshots -----------------------------------------------------------------------------

TRIPWIRE = {"calls": 0}


def _tripwire(meta):
    """Stands for EDM's _reconstruct_persistent_obj, which would exec meta['module_src']."""
    TRIPWIRE["calls"] += 1
    raise RuntimeError("embedded code executed")


class EasyDict(dict):
    """Like dnnlib.EasyDict: a dict subclass, pickled by class reference (unknown to the reader)."""


class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def _persistence_modules(monkeypatch):
    pkg = types.ModuleType("torch_utils")
    mod = types.ModuleType("torch_utils.persistence")
    _tripwire.__module__, _tripwire.__qualname__, _tripwire.__name__ = (
        "torch_utils.persistence",
        "_reconstruct_persistent_obj",
        "_reconstruct_persistent_obj",
    )
    mod._reconstruct_persistent_obj = _tripwire
    pkg.persistence = mod
    monkeypatch.setitem(sys.modules, "torch_utils", pkg)
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", mod)


def _make_persistent(module: nn.Module, class_name: str) -> None:
    """Make ``module`` pickle the way torch_utils.persistence does: (_reconstruct_persistent_obj, (meta,))
    with meta = {type, version, module_src, class_name, state=__dict__}."""

    def reduce_ex(self, protocol):
        meta = dict(
            type="class",
            version=6,
            class_name=class_name,
            state=dict(self.__dict__),
            module_src="raise RuntimeError('embedded module source executed')\n",
        )
        return sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (meta,)

    module.__class__ = type(class_name, (type(module),), {"__reduce_ex__": reduce_ex})


def _snapshot(net: nn.Module, child: str, extra: dict) -> nn.Module:
    """A Precond-like wrapper holding ``net`` as ``child``, every non-container module made persistent."""
    wrapper = nn.Module()
    setattr(wrapper, child, net)
    for name, mod in extra.items():
        setattr(wrapper, name, mod)
    for m in list(wrapper.modules()):
        if not isinstance(m, (nn.ModuleDict, nn.ModuleList)):
            _make_persistent(m, type(m).__name__ if m is not wrapper else "Precond")
    return wrapper


@pytest.mark.parametrize("family", ["edm2", "songunet"])
def test_pkl_refused_then_read_without_running_code(tmp_path, monkeypatch, family):
    torch.manual_seed(0)
    cls, kwargs = (EDM2UNet, TINY_EDM2) if family == "edm2" else (SongUNet, TINY_SONG)
    if family == "edm2":
        net = EDM2UNet(**TINY_EDM2).eval()
        snap = _snapshot(net, "unet", {"logvar_fourier": MPFourier(4), "logvar_linear": MPConv(4, 1, None)})
        convert = lambda p, **kw: convert_edm2_checkpoint(p, TINY_EDM2, **kw)  # noqa: E731
    else:
        net = SongUNet(**TINY_SONG).eval()
        snap = _snapshot(net, "model", {})
        convert = lambda p, **kw: convert_songunet_checkpoint(p, **TINY_SONG, **kw)  # noqa: E731
    want = {k: v.clone() for k, v in net.state_dict().items()}
    marker = tmp_path / "pwned"
    _persistence_modules(monkeypatch)
    data = pickle.dumps(dict(ema=snap, loss_fn=EasyDict(P_mean=-0.4), evil=Evil(marker), kimg=123))
    path = tmp_path / f"{family}-snapshot.pkl"
    path.write_bytes(data)

    # the mimic is faithful: an ordinary unpickler would run the persistence reconstruction
    with pytest.raises(RuntimeError, match="embedded code executed"):
        pickle.loads(data)
    TRIPWIRE["calls"] = 0

    with pytest.raises(UnsafeCheckpointError, match="allow-unsafe-pickle|allow_unsafe_pickle") as err:
        convert(path)
    assert str(path) in str(err.value)

    out = tmp_path / f"{family}.safetensors"
    state = convert(path, allow_unsafe_pickle=True, output=out)
    assert TRIPWIRE["calls"] == 0 and not marker.exists()
    assert list(state) == list(want) and all(torch.equal(state[k], want[k]) for k in want)

    # the written state_dict loads safely and reproduces the network
    monkeypatch.delitem(sys.modules, "torch_utils.persistence")
    monkeypatch.delitem(sys.modules, "torch_utils")
    again = convert(out)
    assert all(torch.equal(again[k], want[k]) for k in want)
    net2 = cls(**kwargs).eval()
    net2.load_state_dict(again, strict=True)
    x = torch.randn(2, net.in_channels, 8, 8)
    t, y = torch.tensor([0.3, 0.7]), torch.tensor([0, 1])
    with torch.no_grad():
        assert torch.equal(net2(x, t, y), cls.forward(net, x, t, y))
