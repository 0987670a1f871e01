"""The config schema and its checking: JSON-schema validation, default filling, :class:`ConfigError`.

``load_config(path)`` (or ``validate_config(dict)``) is what the ``Snakefile`` runs before any job: the schema
(``ucgm_core/schemas/config.schema.yaml``, package data; ``workflow/schemas/`` links to it) checks keys, types and
ranges and fills in the defaults of missing optional keys; the cross-checks (:mod:`ucgm_core.config.checks`) then
refuse what a schema cannot see. Every problem is reported at once, each naming its key path, the value and what
was expected.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from typing import Any, Dict, List

import yaml

from .checks import cross_checks

# Package data (pyproject.toml), so a non-editable install finds it; workflow/schemas/ links to it.
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A configuration that does not validate; ``problems`` lists one message per bad key."""

    def __init__(self, source: str, problems: List[str]):
        self.source, self.problems = source, list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid configuration {source}:\n{lines}")


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def schema_errors(config: dict, schema: dict) -> List[str]:
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


def fill_defaults(instance: Any, schema: dict, root: dict) -> None:
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
            fill_defaults(instance[name], sub, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for name, value in instance.items():
            if name not in props:
                fill_defaults(value, extra, root)


@functools.lru_cache(maxsize=1)
def shipped_schema() -> dict:
    """The shipped schema, read once (declarations are compared with their defaults filled in)."""
    with open(SCHEMA_PATH) as f:
        return yaml.safe_load(f)


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
    problems = schema_errors(config, schema)
    if problems:
        raise ConfigError(source, problems)
    fill_defaults(config, schema, schema)
    problems = schema_errors(config, schema) or cross_checks(config, all_samplers)
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
