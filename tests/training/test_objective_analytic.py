"""Analytic properties of the UCGM-T objective and its input checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ucgm_core.training import UCGMConfig, UCGMObjective


class Zero(nn.Module):
    def forward(self, x, t, y):
        return torch.zeros_like(x)


def test_lambda0_without_enhancement_is_plain_flow_matching():
    x, z = torch.randn(6, 2, 4, 4), torch.randn(6, 2, 4, 4)
    out = UCGMObjective(UCGMConfig(enhanced_ratio=0.0, num_classes=3, cosine_loss=False, weighting=None))(
        Zero(), x, torch.zeros(6, dtype=torch.long), t=torch.rand(6), z=z
    )
    torch.testing.assert_close(out.target, z - x)  # Linear: F* = z - x
    torch.testing.assert_close(out.per_sample, (z - x).pow(2).flatten(1).mean(1).sqrt())


class Affine(nn.Module):
    """F = a x_t + b t: a network with parameters, so the loss's gradient can be checked in closed form."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Parameter(torch.tensor(0.3)), nn.Parameter(torch.tensor(-0.2))

    def forward(self, x, t, y):
        return self.a * x + self.b * t.reshape(-1, *([1] * (x.dim() - 1)))


def test_mse_loss_is_the_conditional_flow_matching_loss():
    """loss 'mse' with zeta = 0, lambda = 0, no weighting, no cosine term: the batch mean of
    mean_{CHW}((F(x_t, t) - (z - x))^2) with x_t = t z + (1 - t) x, value and gradient (the CFM loss)."""
    torch.manual_seed(0)
    x, z, t = torch.randn(5, 2, 3, 3), torch.randn(5, 2, 3, 3), torch.rand(5)
    cfg = UCGMConfig(num_classes=3, cosine_loss=False, weighting=None, loss="mse")
    net = Affine()
    out = UCGMObjective(cfg)(net, x, torch.zeros(5, dtype=torch.long), t=t, z=z)
    tb = t.reshape(-1, 1, 1, 1)
    x_t = tb * z + (1 - tb) * x
    a, b = 0.3, -0.2
    expected = ((a * x_t + b * tb - (z - x)) ** 2).flatten(1).mean(1)
    torch.testing.assert_close(out.per_sample, expected)
    torch.testing.assert_close(out.loss, expected.mean())
    out.loss.backward()
    r = a * x_t + b * tb - (z - x)  # d/da, d/db of mean((a x_t + b t - v)^2)
    torch.testing.assert_close(net.a.grad, (2 * r * x_t).flatten(1).mean(1).mean())
    torch.testing.assert_close(net.b.grad, (2 * r * tb).flatten(1).mean(1).mean())


def test_label_drop_never_drops_everything():
    out = UCGMObjective(UCGMConfig(label_drop_ratio=0.1, num_classes=3))(
        Zero(), torch.randn(4, 1, 2, 2), torch.zeros(4, dtype=torch.long)
    )
    assert (out.labels == 0).all()  # round(0.4) = 0: the original would null every label


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(consistency_ratio=1.5), "consistency_ratio"),
        (dict(enhanced_ratio=0.5, enhanced_style="bogus"), "enhanced_style"),
        (dict(time_dist=(1.0, 1.0)), "time_dist"),
        (dict(transport="VP"), "unknown transport"),
        (dict(loss="l1"), r"loss='l1' is invalid; expected one of \('pseudo_huber', 'mse'\)"),
        (dict(loss="mse", huber_c=5.0), r"huber_c=5.0 is invalid; expected 0 with loss 'mse'"),
    ],
)
def test_bad_config_is_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        UCGMObjective(UCGMConfig(num_classes=3, **kw))


def test_bad_inputs_are_refused():
    obj = UCGMObjective(UCGMConfig(num_classes=3))
    x = torch.randn(2, 1, 2, 2)
    with pytest.raises(ValueError, match="labels must lie in"):
        obj(Zero(), x, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="labels must have shape"):
        obj(Zero(), x, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="noise z has shape"):
        obj(Zero(), x, torch.tensor([0, 1]), z=torch.randn(2, 1, 3, 3))
