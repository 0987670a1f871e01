"""Sampler checks of the config: option names and values, ranges, step counts, guidance of the originals.

Each check returns one message per problem (key path, value, what was expected), so a value that would fail
hours into a run is refused before any job starts, with the message the sampler itself would give.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Dict, List

# keyword arguments of a sampler that the workflow itself provides (labels, null_label: the originals' samplers;
# guide_network: EDM2's guide network, which the workflow does not provide)
_SAMPLER_RESERVED = {
    "network",
    "noise",
    "transport",
    "steps",
    "noise_source",
    "return_trajectory",
    "labels",
    "null_label",
    "guide_network",
}


def sampler_option_names(method: str) -> List[str]:
    """The knobs a sampler method takes from ``options`` (its keyword arguments the workflow does not set)."""
    from ..sampling import get_sampler

    params = inspect.signature(get_sampler(method)).parameters
    return sorted(p for p in params if p not in _SAMPLER_RESERVED)


def original_sampler_problems(where: str, s: dict) -> List[str]:
    """An original's sampler guides by its own options (``cfg_scale``, ...), never by ``guidance``; EDM2's
    autoguidance needs a guide network, which the workflow has no place for."""
    from ..sampling import get_sampler, original_info

    if original_info(get_sampler(s["method"])) is None:
        return []
    problems = []
    if s.get("guidance", {}).get("scale", 0.0) > 0:
        problems.append(
            f"{where}.guidance: method {s['method']!r} applies its original's own guidance, set by its "
            "options (e.g. cfg_scale); remove guidance (or set its scale to 0)"
        )
    if s["method"] == "edm2_heun" and s.get("options", {}).get("guidance", 1) != 1:
        problems.append(
            f"{where}.options.guidance: EDM2's guidance needs a guide network (gnet), which the "
            "workflow does not provide; use 1"
        )
    return problems


# ------------------------------------------------------------------------------------------------------
# value checks that would otherwise fail hours into a run (sampler knobs, shapes, class counts, sources)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _expect(ok: bool, what: str) -> None:
    """Raise ``ValueError(what)`` unless ``ok`` (each check says what it expected)."""
    if not ok:
        raise ValueError(what)


def _check_finite(lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False):
    """A check of one option value: a finite number in the given range (open or closed ends)."""

    def check(v: Any) -> None:
        ok = (
            _number(v)
            and (lo is None or (v > lo if lo_open else v >= lo))
            and (hi is None or (v < hi if hi_open else v <= hi))
        )
        lb = "" if lo is None else f"{'>' if lo_open else '>='} {lo}"
        ub = "" if hi is None else f"{'<' if hi_open else '<='} {hi}"
        _expect(ok, f"expected a finite number {' and '.join(b for b in (lb, ub) if b) or ''}".rstrip())

    return check


def _check_s_max(v: Any) -> None:
    _expect(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and v >= 0,
        "expected a number >= 0 (.inf: no upper limit)",
    )


def _check_path_type(v: Any) -> None:
    _expect(v == "linear", "expected 'linear' (the only path the originals' samplers implement here)")


def option_checks() -> Dict[str, Any]:
    """Option name -> check raising ``ValueError`` saying what was expected (the samplers' own checks where
    they exist, so the config is refused with the message the sampler would give hours later)."""
    from ..sampling.common import check_end_gaps, check_extrapolation, check_order, check_stochasticity, check_time_warp

    unit = _check_finite(0.0, 1.0)
    positive = _check_finite(0.0, lo_open=True)
    non_negative = _check_finite(0.0)
    return {
        "order": check_order,
        "stochasticity": check_stochasticity,
        "extrapolation": check_extrapolation,
        "time_warp": check_time_warp,
        "end_gaps": check_end_gaps,
        "t_min": unit,
        "t_max": unit,
        "diffusion_scale": non_negative,
        "cfg_scale": non_negative,
        "guidance": non_negative,
        "guidance_low": unit,
        "guidance_high": unit,
        "guidance_interval_min": unit,
        "guidance_interval_max": unit,
        "cfg_interval_start": unit,
        "timestep_shift": positive,
        "timeshift": positive,
        "last_step": _check_finite(0.0, 1.0, hi_open=True),
        "sigma_min": positive,
        "sigma_max": positive,
        "rho": positive,
        "S_churn": non_negative,
        "S_min": non_negative,
        "S_max": _check_s_max,
        "S_noise": non_negative,
        "path_type": _check_path_type,
    }


# option pairs (low, high) that must satisfy low < high, with their samplers' defaults filled in
_OPTION_PAIRS = (
    ("t_min", "t_max"),
    ("guidance_low", "guidance_high"),
    ("guidance_interval_min", "guidance_interval_max"),
    ("sigma_min", "sigma_max"),
    ("S_min", "S_max"),
)

# fewest steps of the samplers whose time grid needs two points (karras_sigma_grid, lightningdit_grid)
_MIN_STEPS = {"edm2_heun": 2, "edm_heun": 2, "lightningdit_euler": 2}


def _default_type_problem(value: Any, default: Any) -> str | None:
    """What an option without a dedicated check must be, judged by its default's type (None: fine)."""
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "expected true or false"
    if isinstance(default, (int, float)):
        return None if _number(value) else f"expected a finite number (default {default!r})"
    if isinstance(default, str):
        return None if isinstance(value, str) else f"expected a string (default {default!r})"
    return None


def sampler_value_problems(where: str, s: dict, transport: str | None) -> List[str]:
    """Bad sampler option values, a reversed option range or guidance interval, too few steps for the
    method, and UCGM-S order 2 starting at the pure-noise end (its Heun step divides by gamma(t_0) = 0)."""
    from ..sampling import get_sampler

    method, options = s["method"], s.get("options", {})
    params = inspect.signature(get_sampler(method)).parameters
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    checks, problems = option_checks(), []
    for key, value in options.items():
        if key not in defaults:
            continue  # an unknown option: reported by the option-name check
        try:
            if key in checks:
                checks[key](value)
            else:
                wrong = _default_type_problem(value, defaults[key])
                _expect(wrong is None, wrong or "")
        except ValueError as e:
            problems.append(f"{where}.options.{key}: {value!r} is not valid for method {method!r}: {e}")
    merged = {**defaults, **options}
    for lo, hi in _OPTION_PAIRS:
        if (
            (lo in options or hi in options)
            and lo in merged
            and hi in merged
            and all(_number(merged[k]) or merged[k] == math.inf for k in (lo, hi))
            and not merged[lo] < merged[hi]
        ):
            problems.append(
                f"{where}.options: {lo} {merged[lo]!r} and {hi} {merged[hi]!r} (with the method's "
                f"defaults) are reversed or empty; expected {lo} < {hi}"
            )
    if method == "ucgm" and not problems and transport is not None:
        problems += _ucgm_order2_problems(where, s, transport)
    interval = s.get("guidance", {}).get("interval", [0.0, 1.0])
    if not interval[0] < interval[1]:
        problems.append(
            f"{where}.guidance.interval: {interval} is reversed or empty; expected [low, high] with "
            "low < high (model-native time)"
        )
    low = _MIN_STEPS.get(method, 1)
    few = [n for n in s["steps"] if n < low]
    if few:
        problems.append(f"{where}.steps: {few} too few for method {method!r}; expected every entry >= {low}")
    return problems


def _ucgm_order2_problems(where: str, s: dict, transport: str) -> List[str]:
    """UCGM-S order 2 refuses a grid that starts where gamma = 0 (``ucgm_sample``'s own test, run here)."""
    from ..sampling.schedule import ucgm_time_grid
    from ..transports import TRANSPORTS, orient

    opts = s.get("options", {})
    if opts.get("order", 1) != 2 or transport not in TRANSPORTS:
        return []
    try:
        tr = orient(transport)
    except ValueError:  # a transport without a noise end is refused by the objective's own check
        return []
    bad = []
    for n in s["steps"]:
        grid = ucgm_time_grid(n, 2, opts.get("time_warp", (1.0, 1.0, 1.0)), opts.get("end_gaps", (0.0, 0.0)))
        if float(tr.gamma_in(grid.t[0])) == 0.0 and (grid.num_steps > 1 or grid.correct_last_step):
            bad.append(n)
    if not bad:
        return []
    return [
        f"{where}.options.end_gaps: {opts.get('end_gaps', [0.0, 0.0])!r} with order 2 starts at the pure-noise "
        f"end of transport {transport} (gamma(t_0) = 0; steps {bad}); expected end_gaps[0] > 0, e.g. 0.001"
    ]
