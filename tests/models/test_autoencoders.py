"""Autoencoders behind one interface: SD-VAE (+EDM2), VA-VAE / E2E-VA-VAE (LDM format), DC-AE.

Tiny random-initialised networks in each original format (diffusers for SD-VAE and DC-AE, LDM for VA-VAE)
are written to disk, loaded through the registry, and checked for shapes, strides and agreement with
diffusers run directly. The LDM VA-VAE reproduces the reference fixture ``vavae_ldm_tiny.pt``; the
full-size f16d32 layout converts on ``meta``. Nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import require_file
from diffusers import AutoencoderDC, AutoencoderKL

from ucgm_core.autoencoders import available_autoencoders, get_autoencoder
from ucgm_core.models.convert import CheckpointError, load_layout, save_state_dict
from ucgm_core.autoencoders.vavae import (
    VAVAE_F16D32_DDCONFIG,
    diffusers_to_ldm_key,
    diffusers_to_ldm_state_dict,
    is_attention_projection,
    ldm_to_diffusers_key,
    ldm_vae_config_to_diffusers,
)

# threads: set once in tests/conftest.py

# posterior tensors / decoded images, as fixture README section 7 suggests
TOL_POSTERIOR = 1e-5
TOL_DECODED = 5e-5

TINY_SD = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[32, 32, 32, 32],
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=32,
)
TINY_LDM = dict(
    double_z=True,
    z_channels=8,
    resolution=32,
    in_channels=3,
    out_ch=3,
    ch=32,
    ch_mult=[1, 2, 2],
    num_res_blocks=1,
    attn_resolutions=[8],
    dropout=0.0,
)
TINY_DC = dict(
    in_channels=3,
    latent_channels=8,
    attention_head_dim=8,
    encoder_block_types=["ResBlock", "ResBlock", "EfficientViTBlock"],
    decoder_block_types=["ResBlock", "ResBlock", "EfficientViTBlock"],
    encoder_block_out_channels=[8, 16, 32],
    decoder_block_out_channels=[8, 16, 32],
    encoder_layers_per_block=[1, 1, 1],
    decoder_layers_per_block=[1, 1, 1],
    encoder_qkv_multiscales=[[], [], [5]],
    decoder_qkv_multiscales=[[], [], [5]],
)


def _images(b=2, size=16, seed=0):
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _perturb_norms(model, seed=1):
    """GroupNorm/RMSNorm affine params start at 1/0: make them random so the test sees them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn(p.shape, generator=g))
    # Quirk: the loaders return frozen networks (requires_grad False), and torch's linear can take another float32
    # kernel for weights that require grad, even under no_grad: on an AVX-512 FP16 Xeon (family 6 model 167) the
    # attention's to_q differed by 3.6e-7 with bitwise-equal weights and inputs, and these perturbed norms amplify
    # that to 1.4e-4 in the decoded image. Frozen like the loaders' networks, the reference runs the same kernels.
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def tiny_sd():
    torch.manual_seed(0)
    return _perturb_norms(AutoencoderKL(**TINY_SD))


@pytest.fixture(scope="module")
def tiny_ldm_vae():
    torch.manual_seed(0)
    return _perturb_norms(AutoencoderKL(**ldm_vae_config_to_diffusers(TINY_LDM, 8)))


def test_registry_names():
    names = set(available_autoencoders())
    assert {
        "sdvae_ema_f8c4",
        "sdvae_mse_f8c4",
        "sdvae_f8c4",
        "edm2_sdvae_f8c4",
        "vavae_f16d32",
        "e2evavae_f16d32",
        "dcae_f32c32",
    } <= names


# ------------------------------------------------------------------------------------------------ SD-VAE


def test_sdvae_diffusers_folder(tmp_path, tiny_sd):
    tiny_sd.save_pretrained(tmp_path / "vae")
    ae = get_autoencoder("sdvae_ema_f8c4", source=str(tmp_path / "vae"))
    assert (ae.latent_channels, ae.stride) == (4, 8)
    assert (ae.default_normalize, ae.default_multiplier) == (False, 0.18215)
    x = _images()
    z = ae.encode(x)
    assert z.shape == (2, 4, 2, 2) and z.dtype == torch.float32
    with torch.no_grad():
        ref_z = tiny_sd.encode(x).latent_dist.mean
        ref_img = ((tiny_sd.decode(ref_z).sample + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(z, ref_z, rtol=0, atol=1e-6)  # posterior mean, no scaling factor
    img = ae.decode(z)
    assert img.shape == (2, 3, 16, 16) and 0 <= img.min() and img.max() <= 1
    torch.testing.assert_close(img, ref_img, rtol=0, atol=1e-6)
    # flipped copies (as the latent pipeline encodes them) and batch independence
    torch.testing.assert_close(
        ae.encode(torch.flip(x, dims=[3]))[:1], ae.encode(torch.flip(x[:1], dims=[3])), rtol=0, atol=1e-5
    )
    with pytest.raises(ValueError):
        ae.encode(_images(size=12))  # not divisible by the stride


def test_sdvae_single_file_diffusers_and_ldm_names(tmp_path, tiny_sd):
    x = _images()
    ref = get_autoencoder("sdvae_mse_f8c4", source=_save_folder(tiny_sd, tmp_path / "ref")).encode(x)
    sd = tiny_sd.state_dict()
    save_state_dict(sd, tmp_path / "diffusers_names.safetensors")
    save_state_dict(diffusers_to_ldm_state_dict(sd), tmp_path / "ldm_names.pt")  # torch.save({'state_dict': ...})
    for name in ("diffusers_names.safetensors", "ldm_names.pt"):
        ae = get_autoencoder("sdvae_f8c4", source=str(tmp_path / name), config=TINY_SD)
        torch.testing.assert_close(ae.encode(x), ref, rtol=0, atol=1e-6)


def _save_folder(model, path: Path) -> str:
    model.save_pretrained(path)
    return str(path)


def test_sdvae_sample_posterior_uses_cpu_rng(tmp_path, tiny_sd):
    ae = get_autoencoder("sdvae_ema_f8c4", source=_save_folder(tiny_sd, tmp_path / "vae"), sample_posterior=True)
    x = _images()
    mean, std = ae.posterior(x)
    torch.manual_seed(7)
    z = ae.encode(x)
    torch.manual_seed(7)
    torch.testing.assert_close(z, mean + std * torch.randn(mean.shape), rtol=0, atol=0)


def test_edm2_sdvae_pixel_convention(tmp_path, tiny_sd):
    ae = get_autoencoder("edm2_sdvae_f8c4", source=_save_folder(tiny_sd, tmp_path / "vae"))
    assert (ae.default_normalize, ae.default_multiplier) == (True, 1.0)
    stats = ae.default_latent_stats
    assert stats["mean"].shape == stats["std"].shape == (1, 4, 1, 1)
    torch.testing.assert_close(stats["std"].flatten(), torch.tensor([4.17, 4.62, 3.71, 3.28]) / 0.5)
    x = _images()
    with torch.no_grad():
        ref_z = tiny_sd.encode((x + 1) / 2).latent_dist.mean  # EDM2 feeds the VAE [0, 1] pixels
        ref_img = tiny_sd.decode(ref_z).sample.clamp(0, 1)
    z = ae.encode(x)
    torch.testing.assert_close(z, ref_z, rtol=0, atol=1e-6)
    torch.testing.assert_close(ae.decode(z), ref_img, rtol=0, atol=1e-6)


def test_hub_id_is_not_fetched_without_permission(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="allow_download"):
        get_autoencoder("sdvae_ema_f8c4", source="ucgm-test-nonexistent/no-such-vae")
    with pytest.raises(CheckpointError, match="no such file"):
        get_autoencoder("dcae_f32c32", source=str(tmp_path / "missing" / "x.safetensors"))


# ------------------------------------------------------------------------------------------------ DC-AE


def test_dcae_diffusers_folder_and_single_file(tmp_path):
    torch.manual_seed(0)
    ref = _perturb_norms(AutoencoderDC(**TINY_DC))
    ref.save_pretrained(tmp_path / "dcae")
    ae = get_autoencoder("dcae_f32c32", source=str(tmp_path / "dcae"))
    assert (ae.latent_channels, ae.stride) == (8, 4)
    assert (ae.default_normalize, ae.default_multiplier) == (True, 1.0)
    x = _images()
    z = ae.encode(x)
    assert z.shape == (2, 8, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(z, ref.encode(x).latent, rtol=0, atol=1e-6)
        torch.testing.assert_close(ae.decode(z), ((ref.decode(z).sample + 1) / 2).clamp(0, 1), rtol=0, atol=1e-6)
    assert ae.decode(z).shape == (2, 3, 16, 16)
    # a bare weights file needs a config (DC-AE has no built-in one)
    save_state_dict(ref.state_dict(), tmp_path / "bare" / "dcae.safetensors")
    with pytest.raises(CheckpointError, match="config"):
        get_autoencoder("dcae_f32c32", source=str(tmp_path / "bare" / "dcae.safetensors"))
    ae2 = get_autoencoder(
        "dcae_f32c32", source=str(tmp_path / "bare" / "dcae.safetensors"), config=str(tmp_path / "dcae" / "config.json")
    )
    torch.testing.assert_close(ae2.encode(x), z, rtol=0, atol=0)


def test_dcae_full_size_default_config_builds_on_meta():
    with torch.device("meta"):
        m = AutoencoderDC()  # diffusers' defaults are the f32c32 shape: 6 stages -> stride 32, 32 channels
    assert m.spatial_compression_ratio == 32 and m.config.latent_channels == 32


# ------------------------------------------------------------------------------------------------ VA-VAE


def test_ldm_key_mapping_is_one_to_one(tiny_ldm_vae):
    keys = list(tiny_ldm_vae.state_dict())
    ldm = [diffusers_to_ldm_key(k, 3) for k in keys]
    assert None not in ldm and len(set(ldm)) == len(keys)
    assert [ldm_to_diffusers_key(k, 3) for k in ldm] == keys
    assert "decoder.up.2.attn.0.q.weight" in ldm and "encoder.down.1.block.0.nin_shortcut.weight" in ldm
    for bad in ("loss.logvar", "encoder.down.0.block.0.bogus.weight", "decoder.up.7.block.0.conv1.weight"):
        assert ldm_to_diffusers_key(bad, 3) is None
    assert (
        diffusers_to_ldm_key("decoder.up_blocks.0.attentions.0.to_out.0.weight", 3)
        == "decoder.up.2.attn.0.proj_out.weight"
    )


def _ldm_file(tmp_path, model, extra=None, name="vavae.ckpt"):
    state = diffusers_to_ldm_state_dict(model.state_dict())
    state.update(extra or {})
    path = tmp_path / name
    torch.save({"state_dict": state}, path)
    return path, state


def test_vavae_tiny_ldm_roundtrip(tmp_path, tiny_ldm_vae):
    path, _ = _ldm_file(
        tmp_path, tiny_ldm_vae, extra={"loss.logvar": torch.zeros(()), "linear_proj.weight": torch.zeros(4, 8, 1, 1)}
    )
    x = _images(size=32)
    e2e = get_autoencoder("e2evavae_f16d32", checkpoint=str(path), ddconfig=TINY_LDM, embed_dim=8)
    va = get_autoencoder("vavae_f16d32", checkpoint=str(path), ddconfig=TINY_LDM, embed_dim=8, seed=3)
    for ae in (e2e, va):
        assert (ae.latent_channels, ae.stride) == (8, 4)
        assert (ae.default_normalize, ae.default_multiplier) == (True, 1.0)
    with torch.no_grad():
        ref = tiny_ldm_vae.encode(x).latent_dist
    z = e2e.encode(x)
    assert z.shape == (2, 8, 8, 8)
    torch.testing.assert_close(z, ref.mean, rtol=0, atol=1e-6)  # E2E-VA-VAE: posterior mean
    zs = va.encode(x)  # VA-VAE: posterior sample, noise from the CPU generator
    eps = torch.randn(z.shape, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(zs, ref.mean + ref.std * eps, rtol=0, atol=1e-6)
    assert e2e.decode(z).shape == (2, 3, 32, 32)


def test_vavae_f16d32_full_layout_on_meta(fixtures_dir):
    path = require_file(fixtures_dir / "external_models" / "vavae_f16d32_full_keys.json")
    info = json.loads(path.read_text())
    assert ldm_vae_config_to_diffusers(VAVAE_F16D32_DDCONFIG, 32) == info["diffusers_mapping_check"]["config"]
    layout = load_layout(path)
    extras = load_layout(path, "sampling_irrelevant_keys")  # a raw training checkpoint's extra keys
    assert len(layout) == 342
    state = {k: torch.empty(s, device="meta") for k, s in {**layout, **extras}.items()}
    ae = get_autoencoder("vavae_f16d32", checkpoint=state)
    assert (ae.latent_channels, ae.stride) == (32, 16)
    loaded = ae.vae.state_dict()
    assert len(loaded) == 342 and all(v.is_meta for v in loaded.values())
    assert sum(p.numel() for p in ae.vae.parameters()) == info["param_count_total"] == 69_836_067
    mapped = {diffusers_to_ldm_key(k, 5): k for k in loaded}
    assert set(mapped) == set(layout)  # every LDM key used once
    for ldm, k in mapped.items():  # same shapes; the 1x1 attention kernels squeezed
        want = tuple(layout[ldm])[:2] if is_attention_projection(k) else tuple(layout[ldm])
        assert tuple(loaded[k].shape) == want, k


def test_vavae_reproduces_ldm_fixture(tmp_path, fixtures_dir):
    path = require_file(fixtures_dir / "external_models" / "vavae_ldm_tiny.pt")
    blob = torch.load(path, weights_only=True)
    ckpt = tmp_path / "vavae_tiny.safetensors"
    save_state_dict(blob["state_dict"], ckpt)
    ddconfig, embed_dim = blob["config"]["ddconfig"], blob["config"]["embed_dim"]
    assert ldm_vae_config_to_diffusers(ddconfig, embed_dim) == blob["diffusers_check"]["config"]
    ae = get_autoencoder("e2evavae_f16d32", checkpoint=str(ckpt), ddconfig=ddconfig, embed_dim=embed_dim)
    x, out = blob["inputs"]["x"], blob["outputs"]
    mean, std = ae.posterior(x)
    errors = {
        "posterior_mean": (mean - out["posterior_mean"]).abs().max().item(),
        "posterior_std": (std - out["posterior_std"]).abs().max().item(),
        "decoded_mean": (ae.decode_raw(out["posterior_mean"]) - out["decoded_mean"]).abs().max().item(),
        "decoded_mean_images01": (ae.decode(ae.encode(x)) - out["decoded_mean_images01"]).abs().max().item(),
        "decoded_sample": (ae.decode_raw(out["z_sample"]) - out["decoded_sample"]).abs().max().item(),
    }
    print("max |error| vs vavae_ldm_tiny.pt:", errors)
    assert errors["posterior_mean"] < TOL_POSTERIOR and errors["posterior_std"] < TOL_POSTERIOR
    for k in ("decoded_mean", "decoded_mean_images01", "decoded_sample"):
        assert errors[k] < TOL_DECODED, (k, errors[k])
    # the stochastic VA-VAE encode is mean + std * eps with eps from the (CPU) RNG
    va = get_autoencoder("vavae_f16d32", checkpoint=str(ckpt), ddconfig=ddconfig, embed_dim=embed_dim)
    torch.manual_seed(11)
    z = va.encode(x)
    torch.manual_seed(11)
    eps = torch.randn(out["posterior_mean"].shape)
    assert (z - (out["posterior_mean"] + out["posterior_std"] * eps)).abs().max() < 1e-4


# ------------------------------------------------------------------------------------------------ bad files


def test_mismatched_vavae_checkpoint_names_file_and_keys(tmp_path, tiny_ldm_vae):
    state = diffusers_to_ldm_state_dict(tiny_ldm_vae.state_dict())
    del state["decoder.mid.attn_1.q.weight"]
    state["encoder.conv_in.weight"] = torch.zeros(5, 3, 3, 3)
    state["encoder.bogus.weight"] = torch.zeros(1)
    path = tmp_path / "broken_vavae.ckpt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError) as e:
        get_autoencoder("vavae_f16d32", checkpoint=str(path), ddconfig=TINY_LDM, embed_dim=8)
    msg = str(e.value)
    assert str(path) in msg
    for key in ("decoder.mid.attn_1.q.weight", "encoder.conv_in.weight", "encoder.bogus.weight"):
        assert key in msg
    # the full-size default config does not fit a tiny file: every mismatch is listed, none loads
    with pytest.raises(CheckpointError, match="mis-shaped"):
        get_autoencoder("vavae_f16d32", checkpoint=str(_ldm_file(tmp_path, tiny_ldm_vae)[0]))


def test_mismatched_sdvae_folder_names_file_and_keys(tmp_path, tiny_sd):
    folder = tmp_path / "vae"
    tiny_sd.save_pretrained(folder)
    state = dict(tiny_sd.state_dict())
    state.pop("decoder.conv_out.bias")
    state["quant_conv.weight"] = torch.zeros(8, 8, 3, 3)
    save_state_dict(state, folder / "diffusion_pytorch_model.safetensors")
    with pytest.raises(CheckpointError) as e:
        get_autoencoder("sdvae_ema_f8c4", source=str(folder))
    msg = str(e.value)
    assert "diffusion_pytorch_model.safetensors" in msg
    assert "decoder.conv_out.bias" in msg and "quant_conv.weight" in msg


@pytest.mark.parametrize("name", ["corrupt.safetensors", "corrupt.ckpt"])
def test_corrupt_files_raise_checkpoint_error(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x00not a checkpoint\xff" * 10)
    with pytest.raises(CheckpointError, match=name):
        get_autoencoder("vavae_f16d32", checkpoint=str(path))
    with pytest.raises(CheckpointError, match=name):
        get_autoencoder("sdvae_ema_f8c4", source=str(path))
