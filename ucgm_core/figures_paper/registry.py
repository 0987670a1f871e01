"""The paper figures made without a trained model, by name: ``make_figure(name, png, csv)``.

Each maker lives in a module of :mod:`ucgm_core.figures_paper`, takes ``(png, csv)`` and returns the figure's
key numbers; it is imported only when its figure is made (a job pays only for its own figure's imports).
"""

from __future__ import annotations

import importlib
from typing import Callable, Dict

__all__ = ["FIGURES", "UnknownFigureError", "figure_function", "make_figure"]

# figure name -> "module:function" in ucgm_core.figures_paper
FIGURES: Dict[str, str] = {
    "fig7_pf_ode_1d": "closed_form:make_fig7",
    "fig8_beta": "closed_form:make_fig8",
}


class UnknownFigureError(ValueError):
    """A figure name that is not in :data:`FIGURES`."""


def figure_function(name: str) -> Callable:
    """The maker of figure ``name``; an unknown name is refused (UnknownFigureError) with the known ones."""
    if name not in FIGURES:
        raise UnknownFigureError(f"unknown figure {name!r}: expected one of {sorted(FIGURES)}")
    module, func = FIGURES[name].split(":")
    return getattr(importlib.import_module(f"ucgm_core.figures_paper.{module}"), func)


def make_figure(name: str, png: str, csv: str) -> Dict[str, float]:
    """Write figure ``name`` as ``png`` and its data as ``csv``; its key numbers (empty when it has none)."""
    return dict(figure_function(name)(png, csv) or {})
