"""The workflow's configuration: JSON-schema validation, defaults and cross-checks.

``load_config(path)`` (or ``validate_config(dict)``) is what the ``Snakefile`` runs before any job:
the schema (``workflow/schemas/config.schema.yaml``) checks keys, types and ranges and fills in the
defaults of missing optional keys; the cross-checks then refuse what a schema cannot see (a dataset,
autoencoder, architecture or sampler option that does not exist, a sampler or table naming an
unknown model or sampler, a model initialised from itself). Every problem is reported at once, each
naming its key path and what was expected, as a :class:`ConfigError`.
"""

from __future__ import annotations

import copy
import inspect
import os
from pathlib import Path
from typing import Any, Dict, List

import yaml

__all__ = ["ConfigError", "SCHEMA_PATH", "load_config", "validate_config", "sampler_option_names"]

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"

# keyword arguments of a sampler that the workflow itself provides
_SAMPLER_RESERVED = {"network", "noise", "transport", "steps", "noise_source", "return_trajectory"}


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
        elif err.validator in ("enum", "type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
                               "minItems", "maxItems", "pattern", "uniqueItems", "minProperties"):
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


def _cross_checks(cfg: dict) -> List[str]:
    from .autoencoders import available_autoencoders
    from .data.datasets import CATALOGUE as DATASETS
    from .models import MODELS
    from .training.objective import UCGMConfig

    problems: List[str] = []
    data = cfg["data"]
    if data["dataset"] not in DATASETS:
        problems.append(f"data.dataset: unknown dataset {data['dataset']!r}; expected one of {sorted(DATASETS)}")
    if data["autoencoder"] not in available_autoencoders():
        problems.append(f"data.autoencoder: unknown autoencoder {data['autoencoder']!r}; "
                        f"expected one of {available_autoencoders()}")
    ext = cfg["extractor"]
    if ext["kind"] == "classifier" and ext.get("weights"):
        problems.append("extractor.weights: only used with kind 'inception' (the classifier is trained by the workflow)")

    models = cfg["models"]
    for name, m in models.items():
        where = f"models.{name}"
        if m["architecture"] not in MODELS:
            problems.append(f"{where}.architecture: unknown architecture {m['architecture']!r}; "
                            f"expected one of {sorted(MODELS)}")
        for role in ("init", "teacher"):
            ref = m.get(role)
            if ref is None:
                continue
            if ref not in models:
                problems.append(f"{where}.{role}: names unknown model {ref!r}; expected one of {sorted(models)}")
            elif ref == name:
                problems.append(f"{where}.{role}: a model cannot start from itself")
            elif models[ref]["architecture"] != m["architecture"]:
                problems.append(f"{where}.{role}: model {ref!r} is a {models[ref]['architecture']}, "
                                f"expected the same architecture as {name!r} ({m['architecture']})")
        obj = m["objective"]
        try:
            UCGMConfig(**obj, num_classes=1).validate()
        except (TypeError, ValueError) as e:
            problems.append(f"{where}.{e}")
        if obj["teacher_decay"] == 1.0 and (obj["consistency_ratio"] != 0 or obj["enhanced_ratio"] != 0) \
                and m.get("teacher") is None and m.get("init") is None:
            problems.append(f"{where}.objective.teacher_decay: 1.0 (frozen teacher) needs models.{name}.teacher "
                            "or .init naming the model whose weights the teacher keeps")
    # cycles through init / teacher
    for name in models:
        seen, cur = [name], name
        while True:
            nxt = [models[cur].get(r) for r in ("init", "teacher") if models[cur].get(r) in models]
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
                problems.append(f"{where}.options: unknown option {key!r} for method {s['method']!r}; "
                                f"expected one of {allowed}")
    for table, rows in cfg["tables"].items():
        for i, sampler in enumerate(rows):
            if sampler not in cfg["samplers"]:
                problems.append(f"tables.{table}[{i}]: names unknown sampler {sampler!r}; "
                                f"expected one of {sorted(cfg['samplers'])}")
    ev = cfg["evaluation"]
    if ev["grid_size"] ** 2 > min(ev["num_samples"], ev["samples_per_shard"]):
        problems.append(f"evaluation.grid_size: {ev['grid_size']}^2 images exceed evaluation.samples_per_shard "
                        f"({ev['samples_per_shard']}) or num_samples ({ev['num_samples']}); the grid shows "
                        "the first shard's first images")
    return problems


def validate_config(config: Dict[str, Any], source: str = "<config>", schema_path: os.PathLike | str = SCHEMA_PATH) -> dict:
    """Validate ``config`` (modified in place: defaults filled) and return it; raises :class:`ConfigError`."""
    with open(schema_path) as f:
        schema = yaml.safe_load(f)
    if not isinstance(config, dict):
        raise ConfigError(source, [f"(top level): expected a mapping of keys, got {type(config).__name__}"])
    problems = _schema_errors(config, schema)
    if problems:
        raise ConfigError(source, problems)
    _fill_defaults(config, schema, schema)
    problems = _schema_errors(config, schema) or _cross_checks(config)
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
