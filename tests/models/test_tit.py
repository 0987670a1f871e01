"""TiT against the official fixtures (tit_forward.pt): forward, intermediates, CFG, init, sizes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from ucgm_core.models import TIT_CONFIGS, TiT

ATOL = 1e-5
HOOKS = {
    "x_embedder": "x_embed",
    "t_embedder": "t_emb",
    "y_embedder": "y_emb",
    "blocks.0": "block0",
    "blocks.1": "block1",
    "final_layer": "final_tokens",
}


@pytest.fixture(scope="module")
def ref(fixtures_dir: Path) -> dict:
    return torch.load(fixtures_dir / "ucgm_reference" / "tit_forward.pt", weights_only=True)


def _build(ref: dict, patch: str) -> TiT:
    torch.manual_seed(ref[patch]["init_seed"])
    return TiT(**ref["config"], patch_size=ref[patch]["patch_size"])


def _loaded(ref: dict, patch: str) -> TiT:
    model = _build(ref, patch)
    model.load_state_dict(ref[patch]["state_dict"], strict=True)
    return model.eval()


@pytest.mark.parametrize("patch", ["p1", "p2"])
def test_state_dict_names_and_shapes(ref, patch):
    mine = _build(ref, patch).state_dict()
    theirs = ref[patch]["state_dict"]
    assert list(mine) == list(theirs)
    assert {k: tuple(v.shape) for k, v in mine.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    for k in ("pos_embed", "feat_rope.freqs_cos", "feat_rope.freqs_sin"):  # fixed tables: recomputed exactly
        torch.testing.assert_close(mine[k], theirs[k], atol=1e-6, rtol=0)


@pytest.mark.parametrize("patch", ["p1", "p2"])
def test_official_init_and_weight_recipe(ref, patch):
    """Official init + the README's perturbation recipe reproduce the fixture weights."""
    model, std = _build(ref, patch), ref["perturb"]
    gen = torch.Generator().manual_seed(ref[patch]["perturb_seed"])
    rules = [
        (r".*adaLN_modulation\.1\.", std["s_ada"]),
        (r"final_layer\.linear\.", std["s_fin"]),
        (r"t_embedder\.mlp\.[02]\.weight", std["s_temb"]),
        (r"y_embedder\.embedding_table", std["s_y"]),
    ]
    with torch.no_grad():
        for name, p in model.named_parameters():
            s = next((s for pat, s in rules if re.match(pat, name)), None)
            if s is not None:
                p.copy_(torch.randn(p.shape, generator=gen) * s)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, ref[patch]["state_dict"][k], atol=1e-6, rtol=0, msg=k)
    assert not model.pos_embed.requires_grad


@pytest.mark.parametrize("patch", ["p1", "p2"])
def test_forward_and_intermediates(ref, patch):
    model, rec = _loaded(ref, patch), ref[patch]
    acts = {}
    for name, mod in model.named_modules():
        if name in HOOKS:
            mod.register_forward_hook(lambda m, i, o, key=HOOKS[name]: acts.__setitem__(key, o))
    with torch.no_grad():
        out = model(ref["x"], ref["t"], ref["y"])
        out_train = model.train()(ref["x"], ref["t"], ref["y"])
    torch.testing.assert_close(out, rec["out"], atol=ATOL, rtol=0)
    torch.testing.assert_close(out_train, rec["out_train_mode"], atol=ATOL, rtol=0)
    for key, want in rec["intermediates"].items():
        torch.testing.assert_close(acts[key], want, atol=ATOL, rtol=0, msg=key)


@pytest.mark.parametrize("patch", ["p1", "p2"])
def test_forward_with_cfg(ref, patch):
    model, cfg = _loaded(ref, patch), ref[patch]["cfg"]
    with torch.no_grad():
        for where in ("inside", "outside"):
            out = model.forward_with_cfg(cfg["x"], cfg[f"t_{where}"], cfg["y"], cfg["cfg_scale"], cfg["cfg_interval"])
            torch.testing.assert_close(out, cfg[f"out_{where}"], atol=ATOL, rtol=0, msg=where)


def test_cfg_uses_first_half_and_t0_only(ref):
    model, cfg = _loaded(ref, "p2"), ref["p2"]["cfg"]
    x = cfg["x"].clone()
    x[3:] = torch.randn_like(x[3:])  # the second half of x is ignored
    t = cfg["t_inside"].clone()
    t[1:] = 0.9  # only t[0] decides the branch
    with torch.no_grad():
        out = model.forward_with_cfg(x, t, cfg["y"], cfg["cfg_scale"], cfg["cfg_interval"])
        half = model(torch.cat([x[:3], x[:3]]), t, cfg["y"])
    cond, uncond = half.chunk(2)
    torch.testing.assert_close(out[:3], uncond + 2.0 * (cond - uncond))
    torch.testing.assert_close(out[3:], out[:3])
    with torch.no_grad():  # closed interval: t[0] on a bound still guides
        on_bound = model.forward_with_cfg(cfg["x"], torch.full((6,), 0.75), cfg["y"], 2.0, [0.0, 0.75])
        plain = model(cfg["x"], torch.full((6,), 0.75), cfg["y"])
    c, u = plain.chunk(2)
    torch.testing.assert_close(on_bound[:3], u + 2.0 * (c - u))


def test_official_sizes_param_counts(ref):
    assert sorted(TIT_CONFIGS) == sorted(s["name"] for s in ref["sizes"])
    for s in ref["sizes"]:
        cfg = TIT_CONFIGS[s["name"]]
        assert (cfg["depth"], cfg["hidden_size"], cfg["num_heads"], cfg["patch_size"]) == (
            s["depth"],
            s["hidden"],
            s["heads"],
            s["patch"],
        )
        with torch.device("meta"):
            model = TiT(input_size=s["input_size"], in_channels=s["in_channels"], num_classes=1000, **cfg)
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert (total, trainable) == (s["params_total"], s["params_trainable"]), s["name"]
        assert model.blocks[0].mlp.w3.in_features == s["mlp_hidden"]
        assert model.feat_rope.freqs_cos.shape == (s["tokens"], s["head_dim"])


def _tiny() -> TiT:
    torch.manual_seed(0)
    return TiT(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=4, num_classes=10)


@pytest.mark.parametrize("bad_y, match", [([0, 11], "label 11"), ([-1, 3], "label -1")])
def test_bad_labels_raise(bad_y, match):
    with pytest.raises(ValueError, match=match):
        _tiny()(torch.randn(2, 4, 8, 8), torch.rand(2), torch.tensor(bad_y))


@pytest.mark.parametrize(
    "x_shape, t_shape, y_shape",
    [
        ((2, 3, 8, 8), (2,), (2,)),  # wrong channels
        ((2, 4, 16, 16), (2,), (2,)),  # wrong size
        ((4, 8, 8), (2,), (2,)),  # no batch dim
        ((2, 4, 8, 8), (3,), (2,)),  # t batch mismatch
        ((2, 4, 8, 8), (2,), (3,)),  # y batch mismatch
    ],
)
def test_bad_shapes_raise(x_shape, t_shape, y_shape):
    with pytest.raises(ValueError, match="must"):
        _tiny()(torch.randn(x_shape), torch.rand(t_shape), torch.zeros(y_shape, dtype=torch.long))


def test_float_labels_and_odd_cfg_batch_raise():
    model = _tiny()
    with pytest.raises(ValueError, match="integer"):
        model(torch.randn(2, 4, 8, 8), torch.rand(2), torch.zeros(2))
    with pytest.raises(ValueError, match="even batch"):
        model.forward_with_cfg(torch.randn(3, 4, 8, 8), torch.rand(3), torch.zeros(3, dtype=torch.long), 2.0)


def test_zero_init_output_and_bf16_autocast():
    model = _tiny()
    x, t, y = torch.randn(2, 4, 8, 8), torch.rand(2), torch.tensor([1, 10])
    assert model(x, t, y).abs().max() == 0  # adaLN-Zero: the final layer starts at zero
    torch.nn.init.normal_(model.final_layer.linear.weight)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, t, y)
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("flag", ["use_qknorm", "use_swiglu", "use_rope", "use_rmsnorm"])
def test_ablation_flags_run(flag):
    model = TiT(
        input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=1, num_heads=4, num_classes=10, **{flag: False}
    )
    assert model(torch.randn(2, 4, 8, 8), torch.rand(2), torch.tensor([0, 10])).shape == (2, 4, 8, 8)
