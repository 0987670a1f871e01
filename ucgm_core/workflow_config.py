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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List

import yaml

__all__ = ["ConfigError", "SCHEMA_PATH", "load_config", "validate_config", "sampler_option_names", "Workflow",
           "load_workflow", "split_model_ref", "deep_merge"]

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"

# keyword arguments of a sampler that the workflow itself provides (labels, null_label: the originals' samplers;
# guide_network: EDM2's guide network, which the workflow does not provide)
_SAMPLER_RESERVED = {"network", "noise", "transport", "steps", "noise_source", "return_trajectory", "labels",
                     "null_label", "guide_network"}


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


def _original_sampler_problems(where: str, s: dict) -> List[str]:
    """An original's sampler guides by its own options (``cfg_scale``, ...), never by ``guidance``; EDM2's
    autoguidance needs a guide network, which the workflow has no place for."""
    from .sampling import get_sampler, original_info

    if original_info(get_sampler(s["method"])) is None:
        return []
    problems = []
    if s.get("guidance", {}).get("scale", 0.0) > 0:
        problems.append(f"{where}.guidance: method {s['method']!r} applies its original's own guidance, set by its "
                        "options (e.g. cfg_scale); remove guidance (or set its scale to 0)")
    if s["method"] == "edm2_heun" and s.get("options", {}).get("guidance", 1) != 1:
        problems.append(f"{where}.options.guidance: EDM2's guidance needs a guide network (gnet), which the "
                        "workflow does not provide; use 1")
    return problems


def split_model_ref(ref: str) -> tuple:
    """``"model"`` -> ("model", None); ``"model@300000"`` -> ("model", 300000) (a kept snapshot)."""
    name, sep, step = ref.partition("@")
    return name, (int(step) if sep and step.isdigit() else (step if sep else None))


_EXPERIMENT_PARTS = ("data", "extractor", "models", "samplers", "evaluation")


def _cross_checks(cfg: dict, all_samplers: Dict[str, Any] | None = None) -> List[str]:
    from .autoencoders import available_autoencoders
    from .data.datasets import CATALOGUE as DATASETS
    from .models import MODELS
    from .training.objective import UCGMConfig

    problems: List[str] = []
    present = [k for k in _EXPERIMENT_PARTS if k in cfg]
    if not present:
        if "tables" not in cfg:
            problems.append("(top level): expected models, samplers, data, extractor, evaluation and tables, "
                            "or at least tables (of samplers defined in other experiments)")
        all_samplers = all_samplers if all_samplers is not None else {}
        for table, rows in cfg.get("tables", {}).items():
            for i, sampler in enumerate(rows):
                if sampler not in all_samplers:
                    problems.append(f"tables.{table}[{i}]: names unknown sampler {sampler!r}; "
                                    f"expected one of {sorted(all_samplers)}")
        return problems
    missing = [k for k in _EXPERIMENT_PARTS if k not in cfg]
    if missing:
        return [f"(top level): {', '.join(missing)} missing (an experiment with {', '.join(present)} needs all of "
                f"{', '.join(_EXPERIMENT_PARTS)})"]
    data = cfg["data"]
    if data["dataset"] not in DATASETS:
        problems.append(f"data.dataset: unknown dataset {data['dataset']!r}; expected one of {sorted(DATASETS)}")
    if data["autoencoder"] not in available_autoencoders():
        problems.append(f"data.autoencoder: unknown autoencoder {data['autoencoder']!r}; "
                        f"expected one of {available_autoencoders()}")
    if data.get("latent_stats") and len(data["latent_stats"]["mean"]) != len(data["latent_stats"]["std"]):
        problems.append("data.latent_stats: mean and std must have the same length (one value per channel)")
    ext = cfg["extractor"]
    if cfg["evaluation"].get("reference_batch") and ext["kind"] != "inception":
        problems.append("evaluation.reference_batch: an ADM reference batch holds Inception statistics; "
                        "it needs extractor.kind 'inception'")
    if ext["kind"] == "classifier" and ext.get("weights"):
        problems.append("extractor.weights: only used with kind 'inception' (the classifier is trained by the workflow)")

    models = cfg["models"]
    for name, m in models.items():
        where = f"models.{name}"
        if m["architecture"] not in MODELS:
            problems.append(f"{where}.architecture: unknown architecture {m['architecture']!r}; "
                            f"expected one of {sorted(MODELS)}")
        if m.get("pretrained"):
            extra = [k for k in ("init", "teacher", "objective", "train") if m.get(k)]
            if extra:
                problems.append(f"{where}.pretrained: a pretrained model is imported, not trained; "
                                f"remove {', '.join(extra)}")
            continue
        lacking = [k for k in ("objective", "train") if k not in m]
        if lacking:
            problems.append(f"{where}: {' and '.join(lacking)} missing (needed unless the model is pretrained)")
            continue
        for role in ("init", "teacher"):
            full = m.get(role)
            if full is None:
                continue
            ref, snap = split_model_ref(full)
            if snap is not None:
                if ref in models and not models[ref].get("pretrained") and \
                        snap not in models[ref].get("train", {}).get("snapshots", []):
                    problems.append(f"{where}.{role}: {full!r} names step {snap} of {ref!r}, which is not in "
                                    f"models.{ref}.train.snapshots {models[ref].get('train', {}).get('snapshots', [])}")
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
                problems.append(f"{where}.options: unknown option {key!r} for method {s['method']!r}; "
                                f"expected one of {allowed}")
        problems += _original_sampler_problems(where, s)
        for i, row in enumerate(s.get("paper", [])):
            if row["steps"] not in s["steps"]:
                problems.append(f"{where}.paper[{i}].steps: {row['steps']} is not among {where}.steps {s['steps']}")
    known = all_samplers if all_samplers is not None else cfg["samplers"]
    for table, rows in cfg.get("tables", {}).items():
        for i, sampler in enumerate(rows):
            if sampler not in known:
                problems.append(f"tables.{table}[{i}]: names unknown sampler {sampler!r}; "
                                f"expected one of {sorted(known)}")
    ev = cfg["evaluation"]
    if ev["grid_size"] ** 2 > min(ev["num_samples"], ev["samples_per_shard"]):
        problems.append(f"evaluation.grid_size: {ev['grid_size']}^2 images exceed evaluation.samples_per_shard "
                        f"({ev['samples_per_shard']}) or num_samples ({ev['num_samples']}); the grid shows "
                        "the first shard's first images")
    return problems


def validate_config(config: Dict[str, Any], source: str = "<config>", schema_path: os.PathLike | str = SCHEMA_PATH,
                    all_samplers: Dict[str, Any] | None = None) -> dict:
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
    ``autoencoders``: registry name -> weights entry (``source``, ``sha256``, ``kwargs``);
    ``main``: the main experiment's name (``rule all`` builds its tables only);
    ``files``: experiment name -> the config file it came from (for messages).
    """

    main: str
    experiments: Dict[str, dict] = field(default_factory=dict)
    models: Dict[str, dict] = field(default_factory=dict)
    samplers: Dict[str, dict] = field(default_factory=dict)
    tables: Dict[str, list] = field(default_factory=dict)
    experiment_of: Dict[tuple, str] = field(default_factory=dict)
    autoencoders: Dict[str, dict] = field(default_factory=dict)
    files: Dict[str, str] = field(default_factory=dict)  # experiment name -> its config file

    def of(self, kind: str, name: str) -> dict:
        """The config of the experiment that defines ``kind`` ``name``."""
        return self.experiments[self.experiment_of[(kind, name)]]


def _read_yaml(path: Path, source: str) -> dict:
    try:
        with open(path) as f:
            cfg = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(source, [f"experiments: file {str(path)!r} not found"]) from None
    except yaml.YAMLError as e:
        raise ConfigError(str(path), [f"not valid YAML: {e}"]) from None
    return cfg


def load_workflow(config: Dict[str, Any], source: str = "<config>", base_dir: os.PathLike | str = ".") -> Workflow:
    """Validate the main ``config`` and every file of its ``experiments`` (paths relative to the working folder
    or else to ``base_dir``, the project's root; with ``experiment_overrides``
    merged in), and merge them into one :class:`Workflow`. Raises :class:`ConfigError` naming the file and
    key of every problem: a duplicate experiment, model, sampler or table name, an override for an
    experiment that does not exist, autoencoder weights configured differently in two files, two experiments with
    the same dataset and resolution but different ``data.prep_jobs``."""
    raw_main = copy.deepcopy(config)
    # the main config's own checks; its tables may name samplers of the experiments, so they wait
    main_tables = raw_main.pop("tables", None)
    validate_config(raw_main, source)
    overrides = raw_main.get("experiment_overrides", {})
    loaded: List[tuple] = [(source, raw_main, main_tables)]
    for rel in raw_main.get("experiments", []):
        path = Path(rel)
        if not path.is_absolute() and not path.exists():  # relative to the working folder, else the project's
            path = Path(base_dir) / rel
        cfg = _read_yaml(path, source)
        if not isinstance(cfg, dict):
            raise ConfigError(str(path), ["(top level): expected a mapping of keys"])
        for key in ("experiments", "experiment_overrides"):
            if key in cfg:
                raise ConfigError(str(path), [f"{key}: only the main config lists experiments"])
        name = cfg.get("name")
        if name in overrides:
            cfg = deep_merge(cfg, overrides[name])
        tables = cfg.pop("tables", None)
        if any(k in cfg for k in _EXPERIMENT_PARTS) or tables is None:
            validate_config(cfg, str(path))
        loaded.append((str(path), cfg, tables))
    unknown = sorted(set(overrides) - {c["name"] for _, c, _ in loaded})
    if unknown:
        raise ConfigError(source, [f"experiment_overrides: no experiment named {n!r}; experiments are "
                                   f"{sorted(c['name'] for _, c, _ in loaded)}" for n in unknown])
    wf = Workflow(main=raw_main["name"])
    problems: List[str] = []
    prep_jobs: Dict[tuple, tuple] = {}
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
                    problems.append(f"{path}: {plural}.{n}: already defined by experiment "
                                    f"{wf.experiment_of[(kind, n)]!r} (names are shared by all experiments)")
                    continue
                wf.experiment_of[(kind, n)] = exp
                getattr(wf, plural)[n] = entry
        for ae, entry in cfg.get("autoencoders", {}).items():
            if ae in wf.autoencoders and wf.autoencoders[ae] != entry:
                problems.append(f"{path}: autoencoders.{ae}: differs from its entry in another experiment")
            wf.autoencoders.setdefault(ae, entry)
        data = cfg.get("data")
        if data:  # one set of files per (dataset, resolution): one way to divide its preparation into jobs
            key = (data["dataset"], int(data["resolution"]))
            if prep_jobs.setdefault(key, (exp, data["prep_jobs"]))[1] != data["prep_jobs"]:
                other, jobs = prep_jobs[key]
                problems.append(f"{path}: data.prep_jobs: {data['prep_jobs']}, but experiment {other!r} has the same "
                                f"dataset and resolution with {jobs}")
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
