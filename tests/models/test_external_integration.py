"""The UCGM sampler and trainer drive every ported network the way they drive TiT, through the registry.

For one registry entry per ported family (SiT-REPA, SiT-REPAE, LightningDiT, DDT, EDM2, SongUNet, the
last also with labels) a TINY network is built with ``build_model(name, **tiny kwargs)`` and loaded with
the fixture weights through the family's converter, then:

(a) ``ucgm_sample`` (3 steps) runs with the entry's registered transport, with and without
    classifier-free guidance (``guided``, scale 1.5, null label = ``num_classes``), and a 1-step sample
    from pure noise equals the data prediction written out in the network's *own* convention
    (Linear: z - v(z, 1); ReLinear: z + v(z, 0); EDM: the original ``Precond`` denoiser at sigma(1)),
    which pins the orientation / time / sign convention of the registered transport;
(b) one ``UCGMObjective`` step (lambda = 1, frozen teacher, enhanced_ratio 1.5, ``fc-vs-xz``, train
    mode) gives a finite loss whose gradient reaches the parameters.

Fixtures: ``tests/fixtures/external_models/*_tiny.pt``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Tuple

import pytest
import torch
from conftest import require_file
from torch import nn

from ucgm_core.models import MODELS, build_model
from ucgm_core.models.ddt import DDT, convert_ddt_checkpoint
from ucgm_core.models.edm2 import EDM2UNet, convert_edm2_checkpoint, edm2_kwargs_from_original
from ucgm_core.models.external import EXTERNAL_MODELS
from ucgm_core.models.lightningdit import LightningDiT, convert_lightningdit_checkpoint
from ucgm_core.models.sit import SiT, convert_sit_checkpoint, sit_kwargs_from_original
from ucgm_core.models.songunet import SongUNet, convert_songunet_checkpoint, songunet_kwargs_from_original
from ucgm_core.sampling import guided, ucgm_sample
from ucgm_core.training.objective import UCGMConfig, UCGMObjective
from ucgm_core.transports import EDM, orient

# threads: set once in tests/conftest.py

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


def _sit(variant: str) -> Callable[[dict], Tuple[dict, Callable[[dict], dict]]]:
    def prepare(blob):
        kw = sit_kwargs_from_original(blob["config"])
        return kw, lambda kw: convert_sit_checkpoint(blob["state_dict"], variant, **kw)

    return prepare


def _ldit(blob):
    kw = {k: blob["config"][k] for k in LDIT_KWARGS}
    return kw, lambda kw: convert_lightningdit_checkpoint({"ema": blob["state_dict"]}, **kw)


def _ddt(blob):
    kw = dict(blob["ucgm"]["config"])
    state = {"ema_denoiser." + k: v for k, v in blob["state_dict"].items()}  # as in the released file
    return kw, lambda kw: convert_ddt_checkpoint({"state_dict": state}, **kw)


def _edm2(blob):
    kw = edm2_kwargs_from_original(blob["config"])
    return kw, lambda kw: convert_edm2_checkpoint({"ema": blob["state_dict"]}, kw)


def _song(conditional: bool):
    def prepare(blob):
        blob = blob["conditional"] if conditional else blob
        kw = songunet_kwargs_from_original(blob["config"])
        return kw, lambda kw: convert_songunet_checkpoint({"ema": blob["state_dict"]}, **kw)

    return prepare


# case id -> (registry name, fixture file, prepare(blob) -> (tiny kwargs, convert(kwargs) -> state_dict),
#             network class, expected registered transport)
CASES: Dict[str, tuple] = {
    "sit-repa": ("SiT-XL/2-REPA", "sit_repa_tiny.pt", _sit("repa"), SiT, "Linear"),
    "sit-repae": ("SiT-XL/1-REPAE", "sit_repae_tiny.pt", _sit("repae"), SiT, "Linear"),
    "lightningdit": ("LightningDiT-XL/1", "lightningdit_tiny.pt", _ldit, LightningDiT, "ReLinear"),
    "ddt": ("DDT-XL/2", "ddt_tiny.pt", _ddt, DDT, "ReLinear"),
    "edm2": ("EDM2-S", "edm2_tiny.pt", _edm2, EDM2UNet, "EDM"),
    "songunet": ("SongUNet-CIFAR10", "songunet_tiny.pt", _song(False), SongUNet, "EDM"),
    "songunet-cond": ("SongUNet-CIFAR10", "songunet_tiny.pt", _song(True), SongUNet, "EDM"),
}
# Every external registry entry belongs to one of the families above (same builder and transport).
FAMILY_OF_ENTRY = {
    "SiT-XL/2-REPA": "sit-repa",
    "SiT-XL/1-REPAE": "sit-repae",
    "LightningDiT-XL/1": "lightningdit",
    "DDT-XL/2": "ddt",
    "EDM2-S": "edm2",
    "EDM2-L": "edm2",
    "EDM2-XXL": "edm2",
    "SongUNet-CIFAR10": "songunet",
}

_BLOBS: Dict[str, dict] = {}


def _blob(fixtures_dir: Path, file: str) -> dict:
    path = fixtures_dir / "external_models" / file
    require_file(path)
    if file not in _BLOBS:
        _BLOBS[file] = torch.load(path, weights_only=True)
    return _BLOBS[file]


def _build(case: str, fixtures_dir: Path) -> Tuple[nn.Module, str]:
    """The tiny network of ``case``, built through the registry and loaded through the converter."""
    name, file, prepare, cls, _ = CASES[case]
    kw, convert = prepare(_blob(fixtures_dir, file))
    net = build_model(name, **kw)
    assert type(net) is cls
    net.load_state_dict(convert(kw), strict=True)
    return net.eval(), MODELS[name].transport


def _inputs(net: nn.Module, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shape = (batch, net.in_channels, net.input_size, net.input_size)
    noise = torch.randn(shape, generator=g)
    labels = torch.randint(0, net.num_classes, (batch,), generator=g)
    return noise, labels


def _finite(x: torch.Tensor) -> bool:
    return bool(torch.isfinite(x).all())


def test_registered_transports_and_coverage():
    """Every external registry entry is covered here and carries its family's transport and builder."""
    assert set(EXTERNAL_MODELS) == set(FAMILY_OF_ENTRY)
    for name, case in FAMILY_OF_ENTRY.items():
        spec = MODELS[name]
        assert spec is EXTERNAL_MODELS[name]
        assert spec.builder is CASES[case][3], name
        assert spec.transport == CASES[case][4], name
        tr = orient(spec.transport)  # t = 1 is noise internally; ReLinear networks get 1 - t
        assert tr.noise_at_one == (spec.transport != "ReLinear"), name


@pytest.mark.parametrize("case", list(CASES))
def test_ucgm_sampling(case, fixtures_dir):
    net, transport = _build(case, fixtures_dir)
    noise, labels = _inputs(net)
    null = net.num_classes

    plain = ucgm_sample(guided(net, labels, null), noise, transport, steps=3)
    cfg = ucgm_sample(guided(net, labels, null, 1.5), noise, transport, steps=3)
    for res in (plain, cfg):
        assert res.sample.shape == noise.shape and res.sample.dtype == torch.float32
        assert _finite(res.sample) and res.nfe == 3
        assert not torch.equal(res.sample, noise)
    if isinstance(net, SongUNet) and net.map_label is None:  # unconditional: labels (and guidance) are no-ops
        torch.testing.assert_close(cfg.sample, plain.sample, atol=1e-5, rtol=0)
    else:
        assert (cfg.sample - plain.sample).abs().max() > 1e-4, "guidance had no effect"

    # 1 step from pure noise (internal t = 1) with the *registered* transport must equal x_hat written out
    # in the convention the family was trained in (so a wrongly registered transport fails here)
    one = ucgm_sample(guided(net, labels, null), noise, transport, steps=1).sample
    assert one.shape == noise.shape and _finite(one) and not torch.equal(one, noise)
    b, convention = noise.shape[0], CASES[case][4]
    with torch.no_grad():
        if convention == "Linear":  # t = 1 is noise, v = z - x
            want = noise - net(noise, torch.ones(b), labels)
        elif convention == "ReLinear":  # t = 0 is noise, v = x - z
            want = noise + net(noise, torch.zeros(b), labels)
        else:  # EDM: the state is c_in (x + sigma z); x_hat is Precond's D(x + sigma z, sigma) at sigma(1) = 78.3
            sigma = EDM.sigma(torch.ones(b))
            scale = (sigma**2 + 0.25).sqrt()[:, None, None, None]
            onehot = net.labels_onehot(labels)
            onehot = onehot[0] if isinstance(onehot, tuple) else onehot
            want = net.denoise(noise * scale, sigma, onehot)
    torch.testing.assert_close(one, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("case", list(CASES))
def test_ucgm_training_step(case, fixtures_dir):
    torch.manual_seed(0)
    net, transport = _build(case, fixtures_dir)
    net.train()
    x, labels = _inputs(net, seed=1)
    x = 0.5 * x
    objective = UCGMObjective(
        UCGMConfig(
            transport=transport,
            consistency_ratio=1.0,
            enhanced_ratio=1.5,
            enhanced_style="fc-vs-xz",
            teacher_decay=1.0,
            num_classes=net.num_classes,
        )
    )
    out = objective(net, x, labels)
    assert out.nfe == 4  # online + teacher + two consistency evaluations
    assert out.prediction.shape == x.shape and _finite(out.prediction) and _finite(out.target)
    assert out.loss.ndim == 0 and _finite(out.loss)
    teacher = objective.teacher.module
    assert teacher is not None and teacher is not net and teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())

    out.loss.backward()
    params = {k: p for k, p in net.named_parameters() if p.requires_grad}
    missing = [k for k, p in params.items() if p.grad is None]
    assert not missing, f"no gradient reached {missing}"
    assert all(_finite(p.grad) for p in params.values())
    zero = [k for k, p in params.items() if not p.grad.any()]
    assert not zero, f"zero gradient for {zero}"
    assert not any(p.grad is not None and p.grad.any() for p in teacher.parameters())
