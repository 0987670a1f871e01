"""LightningDiT-XL/1 and DDT-XL/2 ports against the external-model fixtures (README sections 3 and 4).

Tiny nets: original-named weights -> converter -> our network, compared with the original's
outputs (and UCGM's guided outputs) within 1e-5. Full size: the converter on meta-device state
dicts built from ``*_full_keys.json``; parameter counts; converter errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import require_file

from ucgm_core.models import MODELS, build_model
from ucgm_core.models.convert import CheckpointError, load_layout
from ucgm_core.models.ddt import DDT, convert_ddt_checkpoint, ddt_rope
from ucgm_core.models.lightningdit import LightningDiT, convert_lightningdit_checkpoint

# threads: set once in tests/conftest.py
ATOL = 1e-5
LDIT_KWARGS = (
    "input_size",
    "patch_size",
    "in_channels",
    "hidden_size",
    "depth",
    "num_heads",
    "mlp_ratio",
    "class_dropout_prob",
    "num_classes",
)
FAMILIES = {
    "lightningdit": dict(
        cls=LightningDiT,
        convert=convert_lightningdit_checkpoint,
        name="LightningDiT-XL/1",
        params=675_256_736,
        nkeys=351,
        prefix="",
    ),
    "ddt": dict(
        cls=DDT, convert=convert_ddt_checkpoint, name="DDT-XL/2", params=674_646_352, nkeys=349, prefix="ema_denoiser."
    ),
}


def _ext(fixtures_dir: Path, name: str) -> Path:
    return require_file(fixtures_dir / "external_models" / name)


def _kwargs(fam: str, blob: dict) -> dict:
    if fam == "lightningdit":
        return {k: blob["config"][k] for k in LDIT_KWARGS}
    return dict(blob["ucgm"]["config"])


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def tiny(request, fixtures_dir):
    fam = request.param
    blob = torch.load(_ext(fixtures_dir, f"{fam}_tiny.pt"), weights_only=True)
    kwargs = _kwargs(fam, blob)
    state = {FAMILIES[fam]["prefix"] + k: v for k, v in blob["state_dict"].items()}  # as in the release file
    model = FAMILIES[fam]["cls"](**kwargs).eval()
    model.load_state_dict(FAMILIES[fam]["convert"](state, **kwargs), strict=True)
    return fam, blob, model


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@torch.no_grad()
def test_tiny_forward_matches_original(tiny):
    fam, blob, model = tiny
    x, t, y = blob["inputs"]["x"], blob["inputs"]["t"], blob["inputs"]["y"]
    assert _err(model(x, t, y), blob["outputs"]["out"]) < ATOL
    assert _err(model(x, t, torch.full_like(y, 1000)), blob["outputs"]["out_null_label"]) < ATOL


@torch.no_grad()
def test_tiny_ucgm_guidance(tiny):
    """UCGM's forward_with_cfg on [cond; null] with an inclusive interval on model-native t."""
    fam, blob, model = tiny
    u = blob["ucgm"]
    for case, ref in u["cfg_cases"].items():
        out = model.forward_with_cfg(
            u["cfg_inputs"]["x"], ref["t"], u["cfg_inputs"]["y"], u["cfg_scale"], u["cfg_interval"]
        )
        assert _err(out, ref["out"]) < ATOL, case


@torch.no_grad()
def test_tiny_original_guidance(tiny):
    fam, blob, model = tiny
    oc = blob["original_cfg"]
    if fam == "lightningdit":  # original: 3-channel guidance; rows 0..B-1 are the ones a sampler keeps
        for case, ref in oc["cases"].items():
            out = model.forward_with_cfg(
                oc["inputs"]["x"], ref["t"], oc["inputs"]["y"], oc["cfg_scale"], [oc["cfg_interval_start"], 1.0]
            )
            assert _err(out[:2], ref["out"][:2]) < ATOL, case
        guided = oc["cases"]["guided_t0.5"]["out"]
        cond = model(oc["inputs"]["x"][:2], oc["cases"]["guided_t0.5"]["t"][:2], oc["inputs"]["y"][:2])
        assert _err(guided[:2, 3:], cond[:, 3:]) < ATOL  # channels 3+ are not guided
        assert _err(guided[:2, :3], cond[:, :3]) > 1e-2
    else:  # DDT's own sampler: batch [uncond; cond], all channels
        raw = model(oc["inputs"]["x"], oc["t"], oc["inputs"]["y"])
        assert _err(raw, oc["raw_out"]) < ATOL
        uncond, cond = raw.chunk(2)
        assert _err(uncond + oc["guidance"] * (cond - uncond), oc["guided"]) < ATOL


def test_fixed_tables(tiny):
    fam, blob, model = tiny
    if fam == "lightningdit":
        fresh = LightningDiT(**_kwargs(fam, blob)).state_dict()
        for k in ("pos_embed", "feat_rope.freqs_cos", "feat_rope.freqs_sin"):
            assert _err(fresh[k], blob["state_dict"][k]) < 1e-6, k
    else:
        cos, sin = ddt_rope(blob["config"]["hidden_size"] // blob["config"]["num_groups"], 8, 8)
        ref = blob["outputs"]["rope_freqs_cis_real"]
        assert _err(cos, ref[..., 0]) < 1e-6 and _err(sin, ref[..., 1]) < 1e-6


@pytest.mark.parametrize("fam", sorted(FAMILIES))
def test_full_size_layout_and_param_count(fam, fixtures_dir):
    path = _ext(fixtures_dir, f"{fam}_full_keys.json")
    spec = FAMILIES[fam]
    layout = load_layout(path)
    with open(path) as f:
        info = json.load(f)
    port = {k: tuple(v) for k, v in info["ucgm_port"]["state_dict"].items()}
    assert len(layout) == spec["nkeys"] and port == layout and info["param_count_total"] == spec["params"]
    meta = {spec["prefix"] + k: torch.empty(shape, device="meta") for k, shape in layout.items()}
    if fam == "ddt":  # the rest of a Lightning checkpoint: non-EMA copy and REPA projector, both dropped
        meta.update({"denoiser." + k: torch.empty(s, device="meta") for k, s in layout.items()})
        meta["diffusion_trainer.proj.0.weight"] = torch.empty(2048, 1152, device="meta")
        meta = {"state_dict": meta, "epoch": 0}
    else:
        meta = {"ema": {"module." + k: v for k, v in meta.items()}}
    out = spec["convert"](meta)
    assert {k: tuple(v.shape) for k, v in out.items()} == layout
    with torch.device("meta"):
        model = build_model(spec["name"], **info["ucgm_port"]["constructor_kwargs"])
    assert list(model.state_dict()) == list(layout)  # same keys, in the original's order
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == layout
    assert sum(p.numel() for p in model.parameters()) == spec["params"]
    assert MODELS[spec["name"]].transport == "ReLinear"


def test_picks_ema_weights(tiny, tmp_path):
    fam, blob, _ = tiny
    ema = blob["state_dict"]
    raw = {k: v + 1 for k, v in ema.items()}
    if fam == "ddt":
        blob_out = {
            "state_dict": {
                **{"ema_denoiser." + k: v for k, v in ema.items()},
                **{"denoiser." + k: v for k, v in raw.items()},
            }
        }
    else:
        blob_out = {"model": raw, "ema": {"module." + k: v for k, v in ema.items()}}
    path = tmp_path / "release.pt"
    torch.save(blob_out, path)
    out = FAMILIES[fam]["convert"](path, **_kwargs(fam, blob))
    assert set(out) == set(ema) and all(torch.equal(out[k], ema[k]) for k in ema)


def test_corrupt_file_names_file(tmp_path):
    bad = tmp_path / "broken_ckpt.pt"
    bad.write_bytes(b"not a checkpoint at all")
    for convert in (convert_lightningdit_checkpoint, convert_ddt_checkpoint):
        with pytest.raises(CheckpointError, match="broken_ckpt.pt"):
            convert(bad)


def test_mismatched_state_dict_names_keys(tiny, tmp_path):
    fam, blob, _ = tiny
    state = dict(blob["state_dict"])
    first_block_key = next(k for k in state if k.startswith("blocks.0."))
    del state["t_embedder.mlp.0.bias"]
    state["blocks.99.extra.weight"] = torch.zeros(3)
    state[first_block_key] = torch.zeros(7)
    path = tmp_path / f"{fam}_mismatch.pt"
    torch.save({"ema": state}, path)
    with pytest.raises(CheckpointError) as info:
        FAMILIES[fam]["convert"](path, **_kwargs(fam, blob))
    msg = str(info.value)
    for needle in (path.name, "t_embedder.mlp.0.bias", "blocks.99.extra.weight", first_block_key, "mis-shaped"):
        assert needle in msg
    with pytest.raises(CheckpointError, match="missing"):  # the default (XL) layout rejects the tiny weights
        FAMILIES[fam]["convert"](blob["state_dict"])
