"""The workflow's configuration: JSON-schema validation, defaults and cross-checks.

``load_config(path)`` (or ``validate_config(dict)``) is what the ``Snakefile`` runs before any job:
the schema (``ucgm_core/schemas/config.schema.yaml``, package data; ``workflow/schemas/`` links to it) checks keys, types and ranges and fills in the
defaults of missing optional keys; the cross-checks then refuse what a schema cannot see (a dataset,
autoencoder, architecture or sampler option that does not exist, a sampler or table naming an
unknown model or sampler, a model initialised from itself) and the values that would otherwise fail
hours into a run (sampler option values and ranges, a reversed guidance interval, architecture overrides
the constructor does not take, a class count the data does not have, a resolution the autoencoder's stride
or the network's patch does not divide, GPUs that do not divide the batch, snapshots beyond the last step,
unknown autoencoder arguments, an http:// source without its sha256). Every problem is reported at once (over
all experiment files too), each naming its key path, the value and what was expected, as a
:class:`ConfigError`. ``load_workflow`` merges the experiments and resolves the datasets, autoencoders and
reference batches, each declared once by name (a second, different declaration is refused naming both files).
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List

import yaml

__all__ = [
    "ConfigError",
    "SCHEMA_PATH",
    "load_config",
    "validate_config",
    "sampler_option_names",
    "Workflow",
    "load_workflow",
    "split_model_ref",
    "deep_merge",
    "source_stem",
    "DECLARED_SECTIONS",
]

# Package data (pyproject.toml), so a non-editable install finds it; workflow/schemas/ links to it.
SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"

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


class ConfigError(ValueError):
    """A configuration that does not validate; ``problems`` lists one message per bad key."""

    def __init__(self, source: str, problems: List[str]):
        self.source, self.problems = source, list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid configuration {source}:\n{lines}")


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _schema_errors(config: dict, schema: dict) -> List[str]:
    import jsonschema

    validator = jsonschema.Draft7Validator(schema)
    problems = []
    for err in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
        where = _key(err.absolute_path)
        if err.validator == "additionalProperties":
            allowed = sorted(err.schema.get("properties", {}))
            extra = sorted(set(err.instance) - set(allowed)) if isinstance(err.instance, dict) else []
            problems.append(f"{where}: unknown key(s) {', '.join(map(repr, extra))}; expected one of {allowed}")
        elif err.validator == "required":
            problems.append(f"{where}: {err.message}")
        elif err.validator in (
            "enum",
            "type",
            "minimum",
            "maximum",
            "exclusiveMinimum",
            "exclusiveMaximum",
            "minItems",
            "maxItems",
            "pattern",
            "uniqueItems",
            "minProperties",
        ):
            problems.append(f"{where}: {err.message}")
        else:
            problems.append(f"{where}: {err.message}")
    return problems


def _fill_defaults(instance: Any, schema: dict, root: dict) -> None:
    """Insert schema ``default`` values for missing keys, recursively (objects and maps)."""
    if "$ref" in schema:
        ref = schema["$ref"].split("/")[-1]
        schema = root["definitions"][ref]
    if not isinstance(instance, dict):
        return
    props = schema.get("properties", {})
    for name, sub in props.items():
        sub_resolved = root["definitions"][sub["$ref"].split("/")[-1]] if "$ref" in sub else sub
        if name not in instance:
            default = sub.get("default", sub_resolved.get("default"))
            if default is not None or "default" in sub or "default" in sub_resolved:
                instance[name] = copy.deepcopy(default)
        if name in instance:
            _fill_defaults(instance[name], sub, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for name, value in instance.items():
            if name not in props:
                _fill_defaults(value, extra, root)


def sampler_option_names(method: str) -> List[str]:
    """The knobs a sampler method takes from ``options`` (its keyword arguments the workflow does not set)."""
    from .sampling import get_sampler

    params = inspect.signature(get_sampler(method)).parameters
    return sorted(p for p in params if p not in _SAMPLER_RESERVED)


def _original_sampler_problems(where: str, s: dict) -> List[str]:
    """An original's sampler guides by its own options (``cfg_scale``, ...), never by ``guidance``; EDM2's
    autoguidance needs a guide network, which the workflow has no place for."""
    from .sampling import get_sampler, original_info

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


def split_model_ref(ref: str) -> tuple:
    """``"model"`` -> ("model", None); ``"model@300000"`` -> ("model", 300000) (a kept snapshot)."""
    name, sep, step = ref.partition("@")
    return name, (int(step) if sep and step.isdigit() else (step if sep else None))


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


def _option_checks() -> Dict[str, Any]:
    """Option name -> check raising ``ValueError`` saying what was expected (the samplers' own checks where
    they exist, so the config is refused with the message the sampler would give hours later)."""
    from .sampling.common import check_end_gaps, check_extrapolation, check_order, check_stochasticity, check_time_warp

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


def _sampler_value_problems(where: str, s: dict, transport: str | None) -> List[str]:
    """Bad sampler option values, a reversed option range or guidance interval, too few steps for the
    method, and UCGM-S order 2 starting at the pure-noise end (its Heun step divides by gamma(t_0) = 0)."""
    from .sampling import get_sampler

    method, options = s["method"], s.get("options", {})
    params = inspect.signature(get_sampler(method)).parameters
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    checks, problems = _option_checks(), []
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
    from .sampling.schedule import ucgm_time_grid
    from .transports import TRANSPORTS, orient

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


def _model_transport(m: dict) -> str | None:
    """The transport a model's network works in: its objective's, or a pretrained architecture's own."""
    from .models import MODELS

    if m.get("objective"):
        return m["objective"]["transport"]
    spec = MODELS.get(m["architecture"])
    return spec.transport if spec is not None else None


def _autoencoder_stride(name: str) -> int | None:
    """The spatial stride of a registry autoencoder, from its name: ``identity`` 1, ``..._f<stride>c<ch>`` or
    ``..._f<stride>d<ch>`` (the usual latent-space naming); None when the name does not say."""
    if name == "identity":
        return 1
    found = re.search(r"_f(\d+)[cd]\d+$", name)
    return int(found.group(1)) if found else None


def _autoencoder_kwarg_problems(name: str, kwargs: dict) -> List[str]:
    """Unknown constructor arguments of a registry autoencoder (precision and tf32 are every one's settings;
    ``source`` is the weights file the workflow passes)."""
    import importlib

    from . import autoencoders

    target = autoencoders._REGISTRY.get(name)  # "module:Class"; resolved without building the autoencoder
    if target is None:
        return [
            f"autoencoders.{name}: unknown autoencoder {name!r}; expected one of "
            f"{autoencoders.available_autoencoders()}"
        ]
    module, _, cls = target.partition(":")
    params = inspect.signature(getattr(importlib.import_module(module), cls)).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return []
    allowed = sorted(set(params) | {"precision", "tf32", "source"})
    unknown = sorted(k for k in kwargs if k not in allowed)
    return (
        [
            f"autoencoders.{name}.kwargs: unknown argument(s) {', '.join(map(repr, unknown))} of {cls}; "
            f"expected some of {allowed}"
        ]
        if unknown
        else []
    )


def _data_classes(data: dict) -> int | None:
    """The class count the data will have: ``data.num_classes``, else the catalogue's (None if unknown)."""
    from .data.datasets import CATALOGUE

    spec = CATALOGUE.get(data["dataset"])
    return data.get("num_classes") or (spec.num_classes if spec is not None else None)


def _num_classes_problems(data: dict) -> List[str]:
    """``data.num_classes`` must be the catalogue's count, or at most it for a dataset read from disk (a subset)."""
    from .data.datasets import CATALOGUE

    spec, n = CATALOGUE.get(data["dataset"]), data.get("num_classes")
    if n is None or spec is None or spec.num_classes is None:
        return []
    if spec.on_disk and n > spec.num_classes:
        return [
            f"data.num_classes: {n}, but dataset {data['dataset']!r} has {spec.num_classes} classes; expected "
            f"at most {spec.num_classes} (a subset)"
        ]
    if not spec.on_disk and n != spec.num_classes:
        return [
            f"data.num_classes: {n}, but dataset {data['dataset']!r} has {spec.num_classes} classes; expected "
            f"{spec.num_classes} (or leave it out)"
        ]
    return []


_SET_BY_WORKFLOW = ("input_size", "in_channels")  # from data.resolution and the autoencoder


def _architecture_problems(where: str, m: dict, data: dict) -> List[str]:
    """Unknown ``architecture_overrides`` keys (against the constructor's signature), an override of what the
    workflow sets, a class count other than 1 or the data's, and a latent size the patch size does not divide."""
    from .models import MODELS

    spec = MODELS[m["architecture"]]
    over = m.get("architecture_overrides", {})
    params = inspect.signature(spec.builder).parameters
    problems = []
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        allowed = sorted(k for k in params if k not in _SET_BY_WORKFLOW)
        unknown = sorted(k for k in over if k not in params)
        if unknown:
            problems.append(
                f"{where}.architecture_overrides: unknown key(s) {', '.join(map(repr, unknown))} for "
                f"{m['architecture']}; expected some of {allowed}"
            )
    fixed = sorted(k for k in over if k in _SET_BY_WORKFLOW)
    if fixed:
        problems.append(
            f"{where}.architecture_overrides: {', '.join(fixed)} set by the workflow from "
            "data.resolution and the autoencoder; expected them left out"
        )
    classes = _data_classes(data)
    if "num_classes" in over and classes is not None and over["num_classes"] not in (1, classes):
        problems.append(
            f"{where}.architecture_overrides.num_classes: {over['num_classes']!r}; expected 1 "
            f"(unconditional) or the data's {classes} classes"
        )
    stride = _autoencoder_stride(data["autoencoder"])
    patch = {**spec.defaults, **over}.get("patch_size")
    if (
        stride
        and isinstance(patch, int)
        and patch > 0
        and data["resolution"] % stride == 0
        and (data["resolution"] // stride) % patch
    ):
        problems.append(
            f"{where}.architecture: {m['architecture']} has patch size {patch}, which does not divide "
            f"the latent size {data['resolution'] // stride} (data.resolution {data['resolution']} / "
            f"{data['autoencoder']} stride {stride}); expected a resolution that is a multiple of "
            f"{stride * patch}"
        )
    return problems


def _train_problems(where: str, t: dict) -> List[str]:
    """``train.gpus`` must divide ``train.batch_size``; every snapshot must be a step the run reaches."""
    problems = []
    if t["batch_size"] % t["gpus"]:
        problems.append(
            f"{where}.train.gpus: {t['gpus']} does not divide train.batch_size {t['batch_size']}; "
            "expected a divisor (the global batch is split evenly over the GPUs)"
        )
    late = sorted(s for s in t.get("snapshots", []) if s > t["steps"])
    if late:
        problems.append(
            f"{where}.train.snapshots: {late} beyond train.steps {t['steps']}; expected steps "
            f"<= {t['steps']} (the run never reaches them)"
        )
    return problems


def _source_problems(where: str, entry: dict | None) -> List[str]:
    """An http:// ``source`` needs its ``sha256`` (a plain-text download can be altered on the way).

    An https:// URL without one is left to the ``fetch`` rule, which refuses it unless the main config's
    ``download.allow_unverified`` records the first-seen hash: whether it is fetched at all depends on the
    targets (the shipped paper experiments name released files whose hashes were not known offline)."""
    if not entry or not entry.get("source") or entry.get("sha256"):
        return []
    src = entry["source"]
    if src.split("://", 1)[0].lower() == "http" and "://" in src:
        return [
            f"{where}.sha256: missing for the http:// URL {src!r}; expected the file's sha256 (64 hex digits): "
            "an unencrypted download must be verified (download.allow_unverified does not cover http://; "
            "use the https:// URL if there is one)"
        ]
    return []


def _snapshot_ref_problems(where: str, full: str, ref_model: dict) -> List[str]:
    """``<model>@<step>`` must name a kept snapshot (``train.snapshots``) within the model's ``train.steps``."""
    ref, snap = split_model_ref(full)
    if ref_model.get("pretrained"):
        return [
            f"{where}: {full!r} names step {snap} of the pretrained model {ref!r}, which has no snapshots; "
            f"expected {ref!r} alone"
        ]
    train = ref_model.get("train", {})
    kept, steps = train.get("snapshots", []), train.get("steps")
    problems = []
    if snap not in kept:
        problems.append(
            f"{where}: {full!r} names step {snap} of {ref!r}, which is not in models.{ref}.train.snapshots {kept}"
        )
    if isinstance(snap, int) and isinstance(steps, int) and snap > steps:
        problems.append(
            f"{where}: {full!r} names step {snap}, beyond models.{ref}.train.steps {steps}; expected a step <= {steps}"
        )
    return problems


_EXPERIMENT_PARTS = ("data", "extractor", "models", "samplers", "evaluation")

# the sections that declare a named external input once (name -> entry), referred to by name from experiments
DECLARED_SECTIONS = ("datasets", "autoencoders", "references")


def _declaration_problems(cfg: dict) -> List[str]:
    """Bad ``datasets`` / ``autoencoders`` / ``references`` entries: a dataset the catalogue does not have,
    unknown autoencoder arguments, an http:// source without its sha256."""
    from .data.datasets import CATALOGUE

    problems: List[str] = []
    for name in cfg.get("datasets", {}):
        if name not in CATALOGUE:
            problems.append(f"datasets.{name}: unknown dataset {name!r}; expected one of {sorted(CATALOGUE)}")
    for ae, entry in cfg.get("autoencoders", {}).items():
        problems += _autoencoder_kwarg_problems(ae, entry.get("kwargs") or {})
        problems += _source_problems(f"autoencoders.{ae}", entry)
    for ref, entry in cfg.get("references", {}).items():
        problems += _source_problems(f"references.{ref}", entry)
    return problems


def _cross_checks(cfg: dict, all_samplers: Dict[str, Any] | None = None) -> List[str]:
    from .autoencoders import available_autoencoders
    from .data.datasets import CATALOGUE as DATASETS
    from .models import MODELS
    from .training.objective import UCGMConfig

    problems: List[str] = _declaration_problems(cfg)
    present = [k for k in _EXPERIMENT_PARTS if k in cfg]
    if not present:
        if "tables" not in cfg:
            problems.append(
                "(top level): expected models, samplers, data, extractor, evaluation and tables, "
                "or at least tables (of samplers defined in other experiments)"
            )
        all_samplers = all_samplers if all_samplers is not None else {}
        for table, rows in cfg.get("tables", {}).items():
            for i, sampler in enumerate(rows):
                if sampler not in all_samplers:
                    problems.append(
                        f"tables.{table}[{i}]: names unknown sampler {sampler!r}; "
                        f"expected one of {sorted(all_samplers)}"
                    )
        return problems
    missing = [k for k in _EXPERIMENT_PARTS if k not in cfg]
    if missing:
        return [
            f"(top level): {', '.join(missing)} missing (an experiment with {', '.join(present)} needs all of "
            f"{', '.join(_EXPERIMENT_PARTS)})"
        ]
    data = cfg["data"]
    data_ok = data["dataset"] in DATASETS and data["autoencoder"] in available_autoencoders()
    if data["dataset"] not in DATASETS:
        problems.append(f"data.dataset: unknown dataset {data['dataset']!r}; expected one of {sorted(DATASETS)}")
    else:
        problems += _num_classes_problems(data)
    if data["autoencoder"] not in available_autoencoders():
        problems.append(
            f"data.autoencoder: unknown autoencoder {data['autoencoder']!r}; expected one of {available_autoencoders()}"
        )
    stride = _autoencoder_stride(data["autoencoder"])
    if stride and data["resolution"] % stride:
        near = data["resolution"] // stride * stride or stride
        problems.append(
            f"data.resolution: {data['resolution']} is not a multiple of the stride {stride} of "
            f"autoencoder {data['autoencoder']!r}; expected a multiple of {stride}, e.g. {near}"
        )
    if data.get("latent_stats") and len(data["latent_stats"]["mean"]) != len(data["latent_stats"]["std"]):
        problems.append("data.latent_stats: mean and std must have the same length (one value per channel)")
    if isinstance(cfg["evaluation"].get("reference_batch"), dict):  # inline (a name is resolved by load_workflow)
        problems += _source_problems("evaluation.reference_batch", cfg["evaluation"]["reference_batch"])
    ext = cfg["extractor"]
    if cfg["evaluation"].get("reference_batch") and ext["kind"] != "inception":
        problems.append(
            "evaluation.reference_batch: an ADM reference batch holds Inception statistics; "
            "it needs extractor.kind 'inception'"
        )
    if ext["kind"] == "classifier" and ext.get("weights"):
        problems.append(
            "extractor.weights: only used with kind 'inception' (the classifier is trained by the workflow)"
        )

    models = cfg["models"]
    for name, m in models.items():
        where = f"models.{name}"
        if m["architecture"] not in MODELS:
            problems.append(
                f"{where}.architecture: unknown architecture {m['architecture']!r}; expected one of {sorted(MODELS)}"
            )
        elif data_ok:
            problems += _architecture_problems(where, m, data)
        if m.get("pretrained"):
            problems += _source_problems(f"{where}.pretrained", m["pretrained"])
            extra = [k for k in ("init", "teacher", "objective", "train") if m.get(k)]
            if extra:
                problems.append(
                    f"{where}.pretrained: a pretrained model is imported, not trained; remove {', '.join(extra)}"
                )
            continue
        lacking = [k for k in ("objective", "train") if k not in m]
        if lacking:
            problems.append(f"{where}: {' and '.join(lacking)} missing (needed unless the model is pretrained)")
            continue
        problems += _train_problems(where, m["train"])
        for role in ("init", "teacher"):
            full = m.get(role)
            if full is None:
                continue
            ref, snap = split_model_ref(full)
            if snap is not None and ref in models:
                problems += _snapshot_ref_problems(f"{where}.{role}", full, models[ref])
            if ref not in models:
                problems.append(f"{where}.{role}: names unknown model {ref!r}; expected one of {sorted(models)}")
            elif ref == name:
                problems.append(f"{where}.{role}: a model cannot start from itself")
            elif models[ref]["architecture"] != m["architecture"]:
                problems.append(
                    f"{where}.{role}: model {ref!r} is a {models[ref]['architecture']}, "
                    f"expected the same architecture as {name!r} ({m['architecture']})"
                )
        obj = m["objective"]
        try:
            UCGMConfig(**obj, num_classes=1).validate()
        except (TypeError, ValueError) as e:
            problems.append(f"{where}.{e}")
        if (
            obj["teacher_decay"] == 1.0
            and (obj["consistency_ratio"] != 0 or obj["enhanced_ratio"] != 0)
            and m.get("teacher") is None
            and m.get("init") is None
        ):
            problems.append(
                f"{where}.objective.teacher_decay: 1.0 (frozen teacher) needs models.{name}.teacher "
                "or .init naming the model whose weights the teacher keeps"
            )
    # cycles through init / teacher
    for name in models:
        seen, cur = [name], name
        while True:
            refs = [split_model_ref(models[cur][r])[0] for r in ("init", "teacher") if models[cur].get(r)]
            nxt = [r for r in refs if r in models]
            if not nxt:
                break
            cur = nxt[0]
            if cur in seen:
                problems.append(f"models.{name}: init/teacher chain loops: {' -> '.join(seen + [cur])}")
                break
            seen.append(cur)

    for name, s in cfg["samplers"].items():
        where = f"samplers.{name}"
        if s["model"] not in models:
            problems.append(f"{where}.model: names unknown model {s['model']!r}; expected one of {sorted(models)}")
        try:
            allowed = sampler_option_names(s["method"])
        except ValueError:
            continue
        for key in s.get("options", {}):
            if key not in allowed:
                problems.append(
                    f"{where}.options: unknown option {key!r} for method {s['method']!r}; expected one of {allowed}"
                )
        problems += _original_sampler_problems(where, s)
        model = models.get(s["model"])
        problems += _sampler_value_problems(where, s, _model_transport(model) if model else None)
        for i, row in enumerate(s.get("paper", [])):
            if row["steps"] not in s["steps"]:
                problems.append(f"{where}.paper[{i}].steps: {row['steps']} is not among {where}.steps {s['steps']}")
    known = all_samplers if all_samplers is not None else cfg["samplers"]
    for table, rows in cfg.get("tables", {}).items():
        for i, sampler in enumerate(rows):
            if sampler not in known:
                problems.append(
                    f"tables.{table}[{i}]: names unknown sampler {sampler!r}; expected one of {sorted(known)}"
                )
    ev = cfg["evaluation"]
    if ev["grid_size"] ** 2 > min(ev["num_samples"], ev["samples_per_shard"]):
        problems.append(
            f"evaluation.grid_size: {ev['grid_size']}^2 images exceed evaluation.samples_per_shard "
            f"({ev['samples_per_shard']}) or num_samples ({ev['num_samples']}); the grid shows "
            "the first shard's first images"
        )
    return problems


def validate_config(
    config: Dict[str, Any],
    source: str = "<config>",
    schema_path: os.PathLike | str = SCHEMA_PATH,
    all_samplers: Dict[str, Any] | None = None,
) -> dict:
    """Validate ``config`` (modified in place: defaults filled) and return it; raises :class:`ConfigError`.

    ``all_samplers``: the samplers a table may name (default: this config's own)."""
    with open(schema_path) as f:
        schema = yaml.safe_load(f)
    if not isinstance(config, dict):
        raise ConfigError(source, [f"(top level): expected a mapping of keys, got {type(config).__name__}"])
    problems = _schema_errors(config, schema)
    if problems:
        raise ConfigError(source, problems)
    _fill_defaults(config, schema, schema)
    problems = _schema_errors(config, schema) or _cross_checks(config, all_samplers)
    if problems:
        raise ConfigError(source, problems)
    return config


def load_config(path: os.PathLike | str) -> dict:
    """Read a YAML config file and :func:`validate_config` it."""
    try:
        with open(path) as f:
            cfg = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(str(path), [f"not valid YAML: {e}"]) from None
    return validate_config(cfg, str(path))


# ------------------------------------------------------------------------------------------------------
# experiments: the main config plus the files it lists, one namespace of models, samplers and tables


def deep_merge(base: dict, over: dict) -> dict:
    """``base`` updated recursively by ``over`` (mappings merge, anything else replaces); new dict."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


@dataclass
class Workflow:
    """Every experiment of a run, merged into one namespace.

    ``experiments``: experiment name -> its validated config (the main config is one of them);
    ``models`` / ``samplers`` / ``tables``: name -> entry, over all experiments (names are unique);
    ``experiment_of``: ``("model" | "sampler" | "table", name)`` -> experiment name;
    ``datasets`` / ``autoencoders`` / ``references``: name -> its one declaration (``source``, ``mirrors``;
    ``source``, ``sha256``, ``kwargs``; ``source``, ``sha256``), experiments refer to them by name;
    ``declared_in``: ``(section, name)`` -> the file that declared it (for messages);
    ``data``: ``(dataset, resolution)`` -> the one set of settings that shape its shards (``source``,
    ``source_key``, ``num_classes``, ``prep_jobs``, ``autoencoders``, ``experiments``), agreed by every
    experiment with that data; ``mirrors``: dataset -> its download mirrors;
    ``main``: the main experiment's name (``rule all`` builds its tables only);
    ``files``: experiment name -> the config file it came from (for messages).
    """

    main: str
    experiments: Dict[str, dict] = field(default_factory=dict)
    models: Dict[str, dict] = field(default_factory=dict)
    samplers: Dict[str, dict] = field(default_factory=dict)
    tables: Dict[str, list] = field(default_factory=dict)
    experiment_of: Dict[tuple, str] = field(default_factory=dict)
    datasets: Dict[str, dict] = field(default_factory=dict)
    autoencoders: Dict[str, dict] = field(default_factory=dict)
    references: Dict[str, dict] = field(default_factory=dict)
    declared_in: Dict[tuple, str] = field(default_factory=dict)
    data: Dict[tuple, dict] = field(default_factory=dict)
    mirrors: Dict[str, list] = field(default_factory=dict)
    files: Dict[str, str] = field(default_factory=dict)  # experiment name -> its config file

    def of(self, kind: str, name: str) -> dict:
        """The config of the experiment that defines ``kind`` ``name``."""
        return self.experiments[self.experiment_of[(kind, name)]]

    def reference(self, exp: dict) -> tuple | None:
        """``(key, entry)`` of an experiment's ADM reference batch, or None (it uses a split of its shards).

        A name (``evaluation.reference_batch: VIRTUAL_imagenet256_labeled``) is its key; an inline entry (old
        style) is keyed by its file's stem. The key names its download and its statistics file."""
        ref = exp.get("evaluation", {}).get("reference_batch")
        if not ref:
            return None
        if isinstance(ref, str):
            return ref, self.references[ref]
        return source_stem(ref["source"]), ref


def source_stem(source: str) -> str:
    """The file name of a URL or path without its extension (query string and fragment dropped)."""
    from pathlib import PurePosixPath
    from urllib.parse import urlsplit

    return Path(PurePosixPath(urlsplit(source).path).name or "file").stem


def _read_yaml(path: Path, source: str) -> dict:
    try:
        with open(path) as f:
            cfg = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(source, [f"experiments: file {str(path)!r} not found"]) from None
    except yaml.YAMLError as e:
        raise ConfigError(str(path), [f"not valid YAML: {e}"]) from None
    return cfg


def _raise_all(source: str, failures: List[ConfigError]) -> None:
    """Raise the one :class:`ConfigError` of ``failures``, or one listing every file's problems."""
    if len(failures) == 1:
        raise failures[0]
    if failures:
        raise ConfigError(source, [f"{e.source}: {p}" for e in failures for p in e.problems])


@functools.lru_cache(maxsize=1)
def _schema() -> dict:
    """The shipped schema, read once (declarations are compared with their defaults filled in)."""
    with open(SCHEMA_PATH) as f:
        return yaml.safe_load(f)


def _filled(section: str, name: str, entry: Any) -> Any:
    """A declaration with the schema's defaults filled in (so ``{source: x}`` equals ``{source: x, sha256: null}``)."""
    schema = _schema()
    holder = {section: {name: copy.deepcopy(entry)}}
    if isinstance(entry, dict):
        _fill_defaults(holder, {"properties": {section: schema["properties"][section]}}, schema)
    return holder[section][name]


class _Declarations:
    """Collects the ``datasets`` / ``autoencoders`` / ``references`` entries of every file into ``wf``:
    two declarations of one name must be equal (the refusal names both files and the key); an entry in
    ``experiment_overrides`` is merged into the shipped one for the run (mappings merge, other values replace,
    as every override), and the overrides of one name must agree too."""

    def __init__(self, wf: Workflow):
        self.wf, self.problems, self.overridden = wf, [], set()
        self.shipped: Dict[tuple, Any] = {}  # (section, name) -> the declaration before any override

    def add(self, path: str, cfg: dict, override: bool = False) -> None:
        for section in DECLARED_SECTIONS:
            for name, entry in (cfg.get(section) or {}).items():
                self._add(path, section, name, entry, override)

    def _add(self, path: str, section: str, name: str, raw: Any, override: bool) -> None:
        key, table = (section, name), getattr(self.wf, section)
        base = self.shipped.get(key)
        merged = deep_merge(base, raw) if override and isinstance(base, dict) and isinstance(raw, dict) else raw
        entry = _filled(section, name, merged)
        if name in table and (not override or key in self.overridden):
            if table[name] != entry:
                self.problems.append(
                    f"{path}: {section}.{name}: {entry!r} differs from its declaration in "
                    f"{self.wf.declared_in[key]} ({table[name]!r}); expected one declaration "
                    "(see config/README.md, 'Datasets, autoencoders and reference batches')"
                )
            return
        table[name] = entry
        self.wf.declared_in[key] = path
        if override:
            self.overridden.add(key)
        else:
            self.shipped[key] = copy.deepcopy(raw)


def _moved_data_keys(path: str, cfg: dict, source: str) -> List[str]:
    """Old-style ``data.source`` / ``data.mirrors`` in a listed experiment file: refused, saying where they go
    (six files each carried the ImageNet path, and editing any but the first had no effect)."""
    data, name = cfg.get("data"), cfg.get("name")
    if not isinstance(data, dict) or not isinstance(data.get("dataset"), str):
        return []
    return [
        f"{path}: data.{k}: {data[k]!r} is declared once now, as datasets.{data['dataset']}.{k} in the main "
        f"config ({source}); to point this experiment elsewhere set experiment_overrides.{name}.data.{k} there"
        for k in ("source", "mirrors")
        if data.get(k)
    ]


def _agree(
    problems: List[str], seen: Dict[tuple, tuple], key: tuple, value: Any, path: str, exp: str, what: str
) -> None:
    """Record ``value`` of ``what`` for ``key``; refuse (naming both files) a second, different value."""
    first = seen.setdefault(key, (value, path, exp))
    if first[0] != value:
        problems.append(
            f"{path}: {what}: {value!r}, but experiment {first[2]!r} ({first[1]}) has {first[0]!r} "
            f"for the same {'dataset' if len(key) == 2 else 'dataset and resolution'}; expected one value"
        )


def _resolve_data(wf: Workflow) -> List[str]:
    """``wf.data`` and ``wf.mirrors`` from the declarations and each experiment's ``data`` (a ``data.source`` or
    ``data.mirrors`` set by the main config or ``experiment_overrides`` wins for that experiment); experiments that
    share a dataset and resolution (one set of shards) must agree on source, class count and prep_jobs, and those
    sharing a dataset on its mirrors."""
    problems: List[str] = []
    seen: Dict[tuple, tuple] = {}
    for exp, cfg in wf.experiments.items():
        d, path = cfg.get("data"), wf.files[exp]
        if not d:
            continue
        declared = wf.datasets.get(d["dataset"]) or {}
        where = wf.declared_in.get(("datasets", d["dataset"]), wf.files[wf.main])  # (not declared: the main config's)
        src, src_key = (
            (d["source"], f"{path}: data.source")
            if d.get("source")
            else (declared.get("source"), f"{where}: datasets.{d['dataset']}.source")
        )
        key = (d["dataset"], int(d["resolution"]))
        _agree(problems, seen, key + ("source",), src, path, exp, "data.source (or its dataset's declared source)")
        _agree(problems, seen, key + ("num_classes",), d.get("num_classes"), path, exp, "data.num_classes")
        if seen.setdefault(key + ("prep_jobs",), (d["prep_jobs"], path, exp))[0] != d["prep_jobs"]:
            other = seen[key + ("prep_jobs",)]
            problems.append(
                f"{path}: data.prep_jobs: {d['prep_jobs']}, but experiment {other[2]!r} has the same "
                f"dataset and resolution with {other[0]}"
            )
        mirrors = list(d.get("mirrors") or declared.get("mirrors") or [])
        _agree(problems, seen, (d["dataset"], "mirrors"), mirrors, path, exp, "data.mirrors (or the declared mirrors)")
        wf.mirrors.setdefault(d["dataset"], mirrors)
        entry = wf.data.setdefault(
            key,
            {
                "dataset": key[0],
                "resolution": key[1],
                "source": src,
                "source_key": src_key,
                "num_classes": d.get("num_classes"),
                "prep_jobs": d["prep_jobs"],
                "autoencoders": [],
                "experiments": [],
            },
        )
        entry["experiments"].append(exp)
        if d["autoencoder"] not in entry["autoencoders"]:
            entry["autoencoders"].append(d["autoencoder"])
    for name, entry in wf.datasets.items():
        wf.mirrors.setdefault(name, list(entry.get("mirrors") or []))
    return problems


def _resolve_references(wf: Workflow) -> List[str]:
    """Every ``evaluation.reference_batch`` name must be declared under ``references``; experiments whose batches
    share a key (a name, or an inline entry's file stem) must name the same file."""
    problems: List[str] = []
    seen: Dict[str, tuple] = {}
    for exp, cfg in wf.experiments.items():
        ref = cfg.get("evaluation", {}).get("reference_batch")
        if isinstance(ref, str) and ref not in wf.references:
            problems.append(
                f"{wf.files[exp]}: evaluation.reference_batch: {ref!r} is not declared; expected one of "
                f"{sorted(wf.references)} (references.<name> in the main config)"
            )
            continue
        found = wf.reference(cfg)
        if found is None:
            continue
        entry = _filled("references", found[0], found[1])
        first = seen.setdefault(found[0], (entry, wf.files[exp]))
        if first[0] != entry:
            problems.append(
                f"{wf.files[exp]}: evaluation.reference_batch: {entry!r} differs from the batch "
                f"{found[0]!r} of {first[1]} ({first[0]!r}); expected one file per name"
            )
    return problems


def load_workflow(config: Dict[str, Any], source: str = "<config>", base_dir: os.PathLike | str = ".") -> Workflow:
    """Validate the main ``config`` and every file of its ``experiments`` (paths relative to the working folder
    or else to ``base_dir``, the project's root; with ``experiment_overrides``
    merged in), and merge them into one :class:`Workflow`. Raises :class:`ConfigError` naming the file and
    key of every problem: a duplicate experiment, model, sampler or table name, an override for an
    experiment that does not exist, a dataset, autoencoder or reference batch declared differently in two files
    (both named), an old-style ``data.source`` in an experiment file, two experiments with the same dataset and
    resolution but a different source, class count or ``data.prep_jobs``."""
    raw_main = copy.deepcopy(config)
    # the main config's own checks; its tables may name samplers of the experiments, so they wait
    main_tables = raw_main.pop("tables", None)
    failures: List[ConfigError] = []  # every file's problems are reported together
    try:
        validate_config(raw_main, source)
    except ConfigError as e:
        if not isinstance(raw_main.get("experiments", []), list) or not isinstance(
            raw_main.get("experiment_overrides", {}), dict
        ):
            raise
        failures.append(e)
    overrides = raw_main.get("experiment_overrides", {})
    loaded: List[tuple] = [(source, raw_main, main_tables)]
    own_declarations: List[tuple] = [(source, raw_main)]  # (file, its own sections), before any override
    moved: List[str] = []
    for rel in raw_main.get("experiments", []):
        if not isinstance(rel, str):
            continue  # reported by the main config's schema check
        path = Path(rel)
        if not path.is_absolute() and not path.exists():  # relative to the working folder, else the project's
            path = Path(base_dir) / rel
        cfg = _read_yaml(path, source)
        if not isinstance(cfg, dict):
            raise ConfigError(str(path), ["(top level): expected a mapping of keys"])
        for key in ("experiments", "experiment_overrides"):
            if key in cfg:
                raise ConfigError(str(path), [f"{key}: only the main config lists experiments"])
        moved += _moved_data_keys(str(path), cfg, source)
        own_declarations.append((str(path), {k: cfg.get(k) for k in DECLARED_SECTIONS if isinstance(cfg.get(k), dict)}))
        name = cfg.get("name")
        if name in overrides:
            cfg = deep_merge(cfg, overrides[name])
        tables = cfg.pop("tables", None)
        if any(k in cfg for k in _EXPERIMENT_PARTS) or tables is None:
            try:
                validate_config(cfg, str(path))
            except ConfigError as e:
                failures.append(e)
                continue
        loaded.append((str(path), cfg, tables))
    _raise_all(source, failures)
    unknown = sorted(set(overrides) - {c["name"] for _, c, _ in loaded})
    if unknown:
        raise ConfigError(
            source,
            [
                f"experiment_overrides: no experiment named {n!r}; experiments are "
                f"{sorted(c['name'] for _, c, _ in loaded)}"
                for n in unknown
            ],
        )
    wf = Workflow(main=raw_main["name"])
    declarations = _Declarations(wf)
    for path, own in own_declarations:
        declarations.add(path, own)
    for name, over in overrides.items():
        declarations.add(f"{source}: experiment_overrides.{name}", over, override=True)
    problems: List[str] = moved + declarations.problems
    for path, cfg, _ in loaded:
        exp = cfg.get("name")
        if not isinstance(exp, str):
            problems.append(f"{path}: name: missing (every experiment file needs a name)")
            continue
        if exp in wf.experiments:
            problems.append(f"{path}: name: experiment {exp!r} is defined twice")
            continue
        wf.experiments[exp] = cfg
        wf.files[exp] = path
        for kind, plural in (("model", "models"), ("sampler", "samplers")):
            for n, entry in cfg.get(plural, {}).items():
                if (kind, n) in wf.experiment_of:
                    problems.append(
                        f"{path}: {plural}.{n}: already defined by experiment "
                        f"{wf.experiment_of[(kind, n)]!r} (names are shared by all experiments)"
                    )
                    continue
                wf.experiment_of[(kind, n)] = exp
                getattr(wf, plural)[n] = entry
    if not problems:
        problems += _resolve_data(wf) + _resolve_references(wf)
    if problems:
        raise ConfigError(source, problems)
    for path, cfg, tables in loaded:
        if tables is None:
            continue
        cfg["tables"] = tables
        validate_config(cfg, path, all_samplers=wf.samplers)
        for t, rows in cfg["tables"].items():
            if ("table", t) in wf.experiment_of:
                problems.append(f"{path}: tables.{t}: already defined by experiment {wf.experiment_of[('table', t)]!r}")
                continue
            wf.experiment_of[("table", t)] = cfg["name"]
            wf.tables[t] = rows
    if problems:
        raise ConfigError(source, problems)
    config.clear()
    config.update(wf.experiments[wf.main])
    return wf
