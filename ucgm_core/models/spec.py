"""A model registry entry (:class:`ModelSpec`), in a module of its own so that every network family can
declare its entries without importing the registry (which imports the families)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict

from torch import nn

__all__ = ["ModelSpec"]


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry.

    ``builder(input_size=..., in_channels=..., num_classes=..., **defaults, **overrides)`` builds
    the network; ``transport`` is the time convention it was trained in (``"Linear"``: t = 1 is
    noise, output z - x; external ports may use ``"ReLinear"`` or ``"EDM"``).
    """

    builder: Callable[..., nn.Module]
    defaults: Dict[str, Any] = field(default_factory=dict)
    transport: str = "Linear"
