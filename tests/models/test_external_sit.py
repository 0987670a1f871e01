"""SiT (REPA / REPA-E) against the external-model fixtures: forward and guidance parity with the
original code's outputs, converter checks on the full-size released layouts, parameter counts, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import require_file

from ucgm_core.models import MODELS, build_model
from ucgm_core.models.convert import CheckpointError
from ucgm_core.models.sit import (
    SIT_CHECKPOINT_VARIANT,
    SIT_VARIANTS,
    SiT,
    convert_sit_checkpoint,
    sit_kwargs_from_original,
)

# threads: set once in tests/conftest.py

ATOL = 1e-5
FILES = {"repa": "sit_repa", "repae": "sit_repae"}
# Parameter counts from the fixture README (pos_embed included, projectors / bn excluded).
SAMPLING_PARAMS = {"repa": 675_111_184, "repae": 675_148_064}
TOTAL_PARAMS = {"repa": 683_242_512, "repae": 683_279_392}


@pytest.fixture(scope="module")
def ext_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "external_models"


def _tiny(ext_dir: Path, variant: str) -> dict:
    return torch.load(require_file(ext_dir / f"{FILES[variant]}_tiny.pt"), weights_only=True)


def _full(ext_dir: Path, variant: str) -> dict:
    with open(ext_dir / f"{FILES[variant]}_full_keys.json") as f:
        return json.load(f)


def _loaded(blob: dict, variant: str) -> SiT:
    kwargs = sit_kwargs_from_original(blob["config"])
    state = convert_sit_checkpoint(blob["state_dict"], variant, **kwargs)
    net = SiT(**kwargs)
    net.load_state_dict(state, strict=True)
    return net.eval()


@pytest.mark.parametrize("variant", ["repa", "repae"])
def test_tiny_forward_matches_original(ext_dir, variant):
    blob = _tiny(ext_dir, variant)
    net, inp, out = _loaded(blob, variant), blob["inputs"], blob["outputs"]
    with torch.no_grad():
        v = net(inp["x"], inp["t"], inp["y"])
        v_null = net(inp["x"], inp["t"], torch.full_like(inp["y"], 1000))
    err, err_null = (v - out["out"]).abs().max().item(), (v_null - out["out_null_label"]).abs().max().item()
    print(f"{variant}: max|out diff| = {err:.2e}, max|null-label diff| = {err_null:.2e}")
    assert err < ATOL and err_null < ATOL


@pytest.mark.parametrize("variant", ["repa", "repae"])
def test_tiny_guidance(ext_dir, variant):
    """Guidance as REPA's sampler applies it (all channels, u + w (c - u)) and UCGM's stored cases."""
    blob = _tiny(ext_dir, variant)
    net, inp, out, ucgm = _loaded(blob, variant), blob["inputs"], blob["outputs"], blob["ucgm"]
    w, b = 1.8, inp["x"].shape[0]
    x2, t2 = torch.cat([inp["x"], inp["x"]]), torch.cat([inp["t"], inp["t"]])
    y2 = torch.cat([inp["y"], torch.full_like(inp["y"], 1000)])
    expected = out["out_null_label"] + w * (out["out"] - out["out_null_label"])
    with torch.no_grad():
        guided = net.forward_with_cfg(x2, t2, y2, w)
        inside = net.forward_with_cfg(x2, t2, y2, w, [0.0, 0.7])  # t[0] = 0.05: guided
        outside = net.forward_with_cfg(x2, t2, y2, w, [0.1, 0.7])  # t[0] = 0.05: conditional only
    assert (guided[:b] - expected).abs().max().item() < ATOL
    assert (inside[:b] - expected).abs().max().item() < ATOL
    assert (outside[:b] - out["out"]).abs().max().item() < ATOL
    assert torch.equal(guided[:b], guided[b:])
    for name, case in ucgm["cfg_cases"].items():
        with torch.no_grad():
            got = net.forward_with_cfg(
                ucgm["cfg_inputs"]["x"], case["t"], ucgm["cfg_inputs"]["y"], ucgm["cfg_scale"], ucgm["cfg_interval"]
            )
        err = (got - case["out"]).abs().max().item()
        print(f"{variant} UCGM cfg {name}: max|diff| = {err:.2e}")
        assert err < ATOL, name


@pytest.mark.parametrize("variant", ["repa", "repae"])
def test_fixed_table_and_scalar_time(ext_dir, variant):
    blob = _tiny(ext_dir, variant)
    kwargs = sit_kwargs_from_original(blob["config"])
    fresh = SiT(**kwargs).state_dict()
    torch.testing.assert_close(fresh["pos_embed"], blob["state_dict"]["pos_embed"], atol=1e-6, rtol=0)
    net, x, y = _loaded(blob, variant), blob["inputs"]["x"], blob["inputs"]["y"]
    with torch.no_grad():
        torch.testing.assert_close(net(x, torch.tensor(0.3), y), net(x, torch.full((4,), 0.3), y))


@pytest.mark.parametrize("variant", ["repa", "repae"])
def test_full_size_layout_converts(ext_dir, variant):
    """A meta-device copy of the released layout (with wrapper prefixes and the irrelevant keys) converts
    to exactly the sampling keys and shapes of ``*_full_keys.json``."""
    full = _full(ext_dir, variant)
    original = {f"module.{k}": torch.empty(shape, device="meta") for k, shape in full["state_dict"].items()}
    blob = {"model": {"module.junk": torch.empty(1, device="meta")}, "ema": original, "steps": 4000000}
    state = convert_sit_checkpoint(blob, variant)
    irrelevant = set(full["sampling_irrelevant_keys"])
    expected = {k: list(s) for k, s in full["state_dict"].items() if k not in irrelevant}
    assert {k: list(v.shape) for k, v in state.items()} == expected
    assert list(state) == list(full["ucgm_port"]["state_dict"])
    assert {k: list(v.shape) for k, v in state.items()} == full["ucgm_port"]["state_dict"]
    assert sorted(full["ucgm_port"]["keys_in_original_not_in_ucgm"]) == sorted(irrelevant)
    with torch.device("meta"):
        net = SiT(**SIT_VARIANTS[variant])
    net.load_state_dict(state, strict=True, assign=True)


@pytest.mark.parametrize("variant", ["repa", "repae"])
def test_parameter_counts(ext_dir, variant):
    full = _full(ext_dir, variant)
    with torch.device("meta"):
        net = SiT(**SIT_VARIANTS[variant])
    n = sum(p.numel() for p in net.parameters())
    print(f"{variant}: {n:,} sampling parameters")
    assert n == SAMPLING_PARAMS[variant] == full["param_count_sampling"] == full["ucgm_port"]["param_count_total"]
    assert full["param_count_total"] == TOTAL_PARAMS[variant]
    assert full["ucgm_port"]["constructor_kwargs"] == SIT_VARIANTS[variant]
    assert sit_kwargs_from_original(full["constructor_kwargs"]) == {
        **SIT_VARIANTS[variant],
        "mlp_ratio": 4.0,
        "class_dropout_prob": 0.1,
    }


def test_registry_entries(ext_dir):
    sizes = {"repa": dict(input_size=32, in_channels=4), "repae": dict(input_size=16, in_channels=32)}
    for name, variant in SIT_CHECKPOINT_VARIANT.items():
        spec = MODELS[name]
        assert spec.transport == "Linear" and spec.builder is SiT
        with torch.device("meta"):
            net = build_model(name, num_classes=1000, **sizes[variant])
        shapes = {k: list(v.shape) for k, v in net.state_dict().items()}
        assert shapes == _full(ext_dir, variant)["ucgm_port"]["state_dict"]


def test_corrupt_file_names_the_file(tmp_path):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="last.pt"):
        convert_sit_checkpoint(bad, "repa")
    with pytest.raises(CheckpointError, match="missing.pt"):
        convert_sit_checkpoint(tmp_path / "missing.pt", "repa")


def test_mismatched_state_dict_names_file_and_keys(ext_dir, tmp_path):
    blob = _tiny(ext_dir, "repa")
    kwargs = sit_kwargs_from_original(blob["config"])
    state = dict(blob["state_dict"])
    del state["blocks.0.attn.qkv.bias"]
    state["blocks.0.attn.q_norm.weight"] = torch.ones(16)
    state["final_layer.linear.weight"] = torch.zeros(8, 64)
    path = tmp_path / "0400000.pt"
    torch.save({"ema": state, "args": {"model": "SiT-XL/2"}}, path)
    with pytest.raises(CheckpointError) as info:
        convert_sit_checkpoint(path, "repa", **kwargs)
    msg = str(info.value)
    for needle in (str(path), "blocks.0.attn.qkv.bias", "blocks.0.attn.q_norm.weight", "final_layer.linear.weight"):
        assert needle in msg, (needle, msg)
    # The right weights converted as the wrong variant: the patch conv has the wrong shape.
    with pytest.raises(CheckpointError, match="x_embedder.proj.weight"):
        convert_sit_checkpoint(blob["state_dict"], "repae", source="repa-weights")
    with pytest.raises(CheckpointError, match="no state_dict"):
        convert_sit_checkpoint({"args": {}, "steps": 3}, "repa")


def test_legacy_decoder_block_names(ext_dir):
    """Old REPA files call the blocks after the encoder ``decoder_blocks.i`` (= ``blocks.(i + encoder_depth)``)."""
    blob = _tiny(ext_dir, "repa")
    kwargs, enc = sit_kwargs_from_original(blob["config"]), blob["config"]["encoder_depth"]
    legacy = {}
    for k, v in blob["state_dict"].items():
        if k.startswith("blocks.") and int(k.split(".")[1]) >= enc:
            _, i, rest = k.split(".", 2)
            k = f"decoder_blocks.{int(i) - enc}.{rest}"
        legacy[k] = v
    converted = convert_sit_checkpoint(legacy, "repa", **kwargs)
    reference = convert_sit_checkpoint(blob["state_dict"], "repa", **kwargs)
    assert list(converted) == list(reference)
    assert all(torch.equal(converted[k], reference[k]) for k in reference)


def test_unsupported_original_options():
    with pytest.raises(NotImplementedError):
        sit_kwargs_from_original({"hidden_size": 64, "qk_norm": True})
    with pytest.raises(NotImplementedError):
        sit_kwargs_from_original({"hidden_size": 64, "decoder_hidden_size": 32})
