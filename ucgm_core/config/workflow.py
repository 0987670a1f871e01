"""Experiments merged into one :class:`Workflow`: the main config plus the files it lists.

``load_workflow`` validates every file, merges them into one namespace of models, samplers and tables and
resolves the datasets, autoencoders and reference batches, each declared once by name (a second, different
declaration is refused naming both files).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List

import yaml

from .checks import DECLARED_SECTIONS, EXPERIMENT_PARTS
from .schema import ConfigError, fill_defaults, shipped_schema, validate_config


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


def _filled(section: str, name: str, entry: Any) -> Any:
    """A declaration with the schema's defaults filled in (so ``{source: x}`` equals ``{source: x, sha256: null}``)."""
    schema = shipped_schema()
    holder = {section: {name: copy.deepcopy(entry)}}
    if isinstance(entry, dict):
        fill_defaults(holder, {"properties": {section: schema["properties"][section]}}, schema)
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
        if any(k in cfg for k in EXPERIMENT_PARTS) or tables is None:
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
