"""The semantic cross-checks of a config: what a JSON schema cannot see.

A dataset, autoencoder, architecture or sampler option that does not exist, a sampler or table naming an unknown
model or sampler, a model initialised from itself, and the values that would otherwise fail hours into a run
(architecture overrides the constructor does not take, a class count the data does not have, a resolution the
autoencoder's stride or the network's patch does not divide, GPUs that do not divide the batch, snapshots beyond
the last step, unknown autoencoder arguments, an http:// source without its sha256). The sampler checks live in
:mod:`ucgm_core.config.samplers`.
"""

from __future__ import annotations

import inspect
import re
from typing import Any, Dict, List

from .samplers import original_sampler_problems, sampler_option_names, sampler_value_problems


def split_model_ref(ref: str) -> tuple:
    """``"model"`` -> ("model", None); ``"model@300000"`` -> ("model", 300000) (a kept snapshot)."""
    name, sep, step = ref.partition("@")
    return name, (int(step) if sep and step.isdigit() else (step if sep else None))


def _model_transport(m: dict) -> str | None:
    """The transport a model's network works in: its objective's, or a pretrained architecture's own."""
    from ..models import MODELS

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

    from .. import autoencoders

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
    from ..data.datasets import CATALOGUE

    spec = CATALOGUE.get(data["dataset"])
    return data.get("num_classes") or (spec.num_classes if spec is not None else None)


def _num_classes_problems(data: dict) -> List[str]:
    """``data.num_classes`` must be the catalogue's count, or at most it for a dataset read from disk (a subset)."""
    from ..data.datasets import CATALOGUE

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
    from ..models import MODELS

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


def _ema_select_problems(where: str, name: str, m: dict, samplers: dict) -> List[str]:
    """``ema_select`` reconstructs EMA lengths from ``train.posthoc_ema``'s snapshots and samples them with
    one of this model's samplers (same experiment): both must be there."""
    sel = m.get("ema_select")
    if not sel:
        return []
    problems = []
    if not (m.get("train") or {}).get("posthoc_ema"):
        problems.append(
            f"{where}.ema_select: needs {where}.train.posthoc_ema (the snapshots each EMA length is "
            "reconstructed from); expected e.g. train.posthoc_ema: {snapshot_every: N}, or no ema_select"
        )
    sampler = samplers.get(sel["sampler"])
    if sampler is None:
        problems.append(
            f"{where}.ema_select.sampler: names unknown sampler {sel['sampler']!r}; expected one of {sorted(samplers)}"
        )
    elif sampler["model"] != name:
        problems.append(
            f"{where}.ema_select.sampler: sampler {sel['sampler']!r} samples model {sampler['model']!r}; "
            f"expected a sampler of {name!r} (samplers.<sampler>.model: {name})"
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


EXPERIMENT_PARTS = ("data", "extractor", "models", "samplers", "evaluation")

# the sections that declare a named external input once (name -> entry), referred to by name from experiments
DECLARED_SECTIONS = ("datasets", "autoencoders", "references")


def _declaration_problems(cfg: dict) -> List[str]:
    """Bad ``datasets`` / ``autoencoders`` / ``references`` entries: a dataset the catalogue does not have,
    unknown autoencoder arguments, an http:// source without its sha256."""
    from ..data.datasets import CATALOGUE

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


def cross_checks(cfg: dict, all_samplers: Dict[str, Any] | None = None) -> List[str]:
    from ..autoencoders import available_autoencoders
    from ..data.datasets import CATALOGUE as DATASETS
    from ..models import MODELS
    from ..training.objective import UCGMConfig

    problems: List[str] = _declaration_problems(cfg)
    present = [k for k in EXPERIMENT_PARTS if k in cfg]
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
    missing = [k for k in EXPERIMENT_PARTS if k not in cfg]
    if missing:
        return [
            f"(top level): {', '.join(missing)} missing (an experiment with {', '.join(present)} needs all of "
            f"{', '.join(EXPERIMENT_PARTS)})"
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
            extra = [k for k in ("init", "teacher", "objective", "train", "ema_select") if m.get(k)]
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
        problems += _ema_select_problems(where, name, m, cfg["samplers"])
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
        problems += original_sampler_problems(where, s)
        model = models.get(s["model"])
        problems += sampler_value_problems(where, s, _model_transport(model) if model else None)
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
