"""U-Net and registry: shapes, gradients, guidance semantics, input checks."""

from __future__ import annotations

import pytest
import torch

from ucgm_core.models import MODELS, TIT_CONFIGS, ModelSpec, TiT, UNet, build_model

SMALL = ["TiT-Tiny/2", "TiT-Tiny/4", "UNet-S"]


def _perturb(model: torch.nn.Module) -> torch.nn.Module:
    """Give zero-initialised layers small weights so outputs depend on x, t and y."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad and p.abs().max() == 0:
                p.normal_(std=0.05)
    return model


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize("size, channels", [(28, 1), (32, 3)])
def test_small_presets_forward_backward(name, size, channels):
    torch.manual_seed(0)
    model = build_model(name, input_size=size, in_channels=channels, num_classes=10)
    x, t, y = torch.randn(4, channels, size, size), torch.rand(4), torch.tensor([0, 3, 9, 10])
    out = model(x, t, y)
    assert out.shape == x.shape and out.dtype == torch.float32
    (out - x).square().mean().backward()  # zero-init output: grads reach the last layer
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_unet_param_budget_and_zero_output():
    model = build_model("UNet-S", input_size=28, in_channels=1, num_classes=10)
    assert 0.7e6 <= sum(p.numel() for p in model.parameters()) <= 1.0e6
    x = torch.randn(2, 1, 28, 28)
    assert model(x, torch.rand(2), torch.tensor([1, 10])).abs().max() == 0  # zero-init output conv


@pytest.mark.parametrize("unshuffle, size", [(True, 28), (True, 32), (False, 28), (False, 20)])
def test_unet_sizes(unshuffle, size):
    model = UNet(
        input_size=size,
        in_channels=2,
        num_classes=5,
        channels=(8, 16, 16),
        num_blocks=2,
        unshuffle=unshuffle,
        mid_block=True,
        emb_dim=32,
    )
    out = model(torch.randn(3, 2, size, size), torch.rand(3), torch.tensor([0, 4, 5]))
    assert out.shape == (3, 2, size, size)


def test_unet_depends_on_t_and_y():
    model = _perturb(UNet(input_size=28, in_channels=1, num_classes=10)).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        base = model(x, torch.tensor([0.3, 0.3]), torch.tensor([1, 1]))
        assert not torch.allclose(base, model(x, torch.tensor([0.6, 0.6]), torch.tensor([1, 1])))
        assert not torch.allclose(base, model(x, torch.tensor([0.3, 0.3]), torch.tensor([2, 10])))


def test_unet_time_scale_multiplies_t_before_the_embedding():
    plain = _perturb(UNet(input_size=28, in_channels=1, num_classes=10)).eval()
    scaled = UNet(input_size=28, in_channels=1, num_classes=10, time_scale=1000.0).eval()
    scaled.load_state_dict(plain.state_dict())  # no parameter of its own: the same weights fit
    x, y, t = torch.randn(2, 1, 28, 28), torch.tensor([1, 7]), torch.tensor([0.25, 0.5])
    with torch.no_grad():
        torch.testing.assert_close(scaled(x, t, y), plain(x, t * 1000.0, y), rtol=0, atol=0)
        assert not torch.allclose(scaled(x, t, y), plain(x, t, y))


@pytest.mark.parametrize("t_value, guided", [(0.4, True), (0.75, True), (0.9, False)])
def test_unet_forward_with_cfg(t_value, guided):
    model = _perturb(UNet(input_size=28, in_channels=1, num_classes=10)).eval()
    x_half, y = torch.randn(3, 1, 28, 28), torch.tensor([0, 5, 9, 10, 10, 10])
    x = torch.cat([x_half, torch.randn_like(x_half)])  # second half must be ignored
    t = torch.full((6,), t_value)
    with torch.no_grad():
        out = model.forward_with_cfg(x, t, y, 2.0, [0.0, 0.75])
        both = model(torch.cat([x_half, x_half]), t, y)
    cond, uncond = both.chunk(2)
    want = uncond + 2.0 * (cond - uncond) if guided else cond
    torch.testing.assert_close(out, torch.cat([want, want]))
    with torch.no_grad():  # no interval: always guided
        always = model.forward_with_cfg(x, t, y, 2.0)
    torch.testing.assert_close(always[:3], uncond + 2.0 * (cond - uncond))


def test_unet_input_checks():
    model = UNet(input_size=28, in_channels=1, num_classes=10)
    with pytest.raises(ValueError, match="label 11"):
        model(torch.randn(2, 1, 28, 28), torch.rand(2), torch.tensor([0, 11]))
    with pytest.raises(ValueError, match=r"\[B, 1, 28, 28\]"):
        model(torch.randn(2, 1, 32, 32), torch.rand(2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="even input_size"):
        UNet(input_size=27)


def test_registry_contents_and_errors():
    assert set(TIT_CONFIGS) | set(SMALL) <= set(MODELS)
    assert all(isinstance(s, ModelSpec) for s in MODELS.values())
    assert all(MODELS[n].transport == "Linear" for n in set(TIT_CONFIGS) | set(SMALL))
    assert {s.transport for s in MODELS.values()} == {"Linear", "ReLinear", "EDM"}  # with the ported networks
    with pytest.raises(ValueError, match="known models: .*TiT-XL/2"):
        build_model("TiT-Huge/3", input_size=32, in_channels=4, num_classes=1000)


def test_build_model_overrides_and_official_names():
    model = build_model("TiT-Tiny/4", input_size=32, in_channels=4, num_classes=1000, depth=2, learn_sigma=True)
    assert isinstance(model, TiT) and len(model.blocks) == 2
    assert model(torch.randn(1, 4, 32, 32), torch.rand(1), torch.tensor([1000])).shape == (1, 8, 32, 32)
    with torch.device("meta"):
        xl = build_model("TiT-XL/2", input_size=32, in_channels=4, num_classes=1000)
    assert sum(p.numel() for p in xl.parameters() if p.requires_grad) == 674_859_280
