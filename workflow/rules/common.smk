# Shared helpers: config validation (before any job runs), paths and per-rule parameters.
# The main config (config/config.yaml) and every file in its `experiments:` list form one namespace of
# models, samplers and tables (ucgm_core.config.load_workflow); each model and sampler keeps the
# data, extractor and evaluation settings of the experiment that defines it.
import json
import os
import re
import shlex
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from ucgm_core.config import ConfigError, load_workflow, split_model_ref

try:
    WF = load_workflow(
        config, source=(workflow.overwrite_configfiles or ["config/config.yaml"])[-1], base_dir=workflow.basedir
    )
except ConfigError as err:
    raise WorkflowError(str(err)) from None

# A stage tool's command is `{PY} {SCRIPTS:q}/<tool>.py` in the rule's shell, never in its `params`:
# params are provenance, and the checkout's absolute path in them would rerun every job once the
# checkout (or a copy of its results) is moved (tests/workflow/test_workflow.py).
PY = "python"
SCRIPTS = f"{workflow.basedir}/workflow/scripts"


MODELS = WF.models
SAMPLERS = WF.samplers
TABLES = WF.tables


# --- experiments: data, extractor and evaluation of a model or sampler ---------------------------------


def experiment(kind, name):
    return WF.of(kind, name)


def data_id(exp):
    return f"{exp['data']['dataset']}_{exp['data']['resolution']}"


def shards_dir(exp):
    return f"results/shards/{data_id(exp)}"


def latents_dir(exp):
    return f"results/latents/{exp['data']['autoencoder']}/{data_id(exp)}"


def model_experiment(name):
    return experiment("model", name)


def sampler_experiment(name):
    return experiment("sampler", name)


def needs_latent_stats(exp):
    d = exp["data"]
    return d["normalize_latents"] and not d.get("latent_stats")


# --- external files (datasets on disk, released weights, reference batches) -----------------------------


def is_url(source):
    return "://" in source


def source_name(source):
    """The file name of a URL or path (query string and fragment dropped)."""
    return PurePosixPath(urlsplit(source).path).name or "file"


def fetched(kind, key, entry):
    """Where a configured source lands: URLs are downloaded (rule fetch), and so are local files with a
    sha256 (a verified copy); other local files are used in place."""
    src = entry["source"]
    if is_url(src) or entry.get("sha256"):
        return f"results/downloads/{kind}/{key}/{source_name(src)}"
    return src


def reference_batch(exp):
    """(key, entry) of an experiment's reference batch (declared once under `references`, or inline), or None."""
    return WF.reference(exp)


FETCH = {}  # output path of the fetch rule -> the configured entry (source, sha256)
for _m, _spec in MODELS.items():
    if _spec.get("pretrained"):
        FETCH[fetched("models", _m, _spec["pretrained"])] = _spec["pretrained"]
for _ae, _entry in WF.autoencoders.items():
    if _entry.get("source"):
        FETCH[fetched("autoencoders", _ae, _entry)] = _entry
for _exp in WF.experiments.values():
    _ref = reference_batch(_exp)
    if _ref:  # one download per batch, whichever experiments share it
        FETCH[fetched("references", *_ref)] = _ref[1]


def local_file(path, key):
    """A local input named in the config: a clear error naming the key when it does not exist."""
    if not os.path.exists(path):
        raise WorkflowError(
            f"{key}: {path!r} does not exist; edit it there, or override it with "
            "experiment_overrides (see config/README.md)"
        )
    return path


def source_file(kind, key, entry, config_key):
    path = fetched(kind, key, entry)
    if not is_url(entry["source"]):
        local_file(entry["source"], config_key)
    return path


def autoencoder_inputs(exp):
    ae = exp["data"]["autoencoder"]
    entry = WF.autoencoders.get(ae)
    return (
        [source_file("autoencoders", ae, entry, f"autoencoders.{ae}.source")] if entry and entry.get("source") else []
    )


def autoencoder_kwargs(exp):
    """JSON keyword arguments of the experiment's autoencoder (weights file + configured kwargs)."""
    ae = exp["data"]["autoencoder"]
    entry = WF.autoencoders.get(ae) or {}
    kwargs = dict(entry.get("kwargs") or {})
    if entry.get("source"):
        kwargs["source"] = fetched("autoencoders", ae, entry)
    return json.dumps(kwargs, sort_keys=True)


def data_settings(dataset, resolution):
    """The one set of settings of a dataset at a resolution (its shards): source, class count, prep_jobs,
    declared once or agreed by every experiment with that data (checked by load_workflow)."""
    try:
        return WF.data[(dataset, int(resolution))]
    except KeyError:
        raise WorkflowError(
            f"no experiment has data {dataset} at {resolution}; expected one of "
            f"{sorted(f'{d}_{r}' for d, r in WF.data)}"
        ) from None


def dataset_inputs(view):
    """The raw data of a dataset at a resolution ({"data": data_settings(...)}): downloaded files, or its on-disk
    source (datasets.<name>.source, or an experiment's data.source override)."""
    from ucgm_core.data.datasets import get_dataset

    settings = view["data"]
    spec = get_dataset(settings["dataset"])
    if settings["source"]:  # a local copy (any dataset): read in place, nothing downloaded
        return [local_file(settings["source"], settings["source_key"])]
    if spec.on_disk:
        raise WorkflowError(
            f"{settings['source_key']} is not set; dataset {settings['dataset']!r} is read from disk "
            "(a folder or the ILSVRC2012 train tar): declare it once there"
        )
    return [f"results/raw/{settings['dataset']}/{f.name}" for f in spec.files]


def raw_location(view):
    return view["data"]["source"] or f"results/raw/{view['data']['dataset']}"


def dataset_mirrors(dataset):
    """A dataset's mirrors (datasets.<name>.mirrors), tried before the catalogue's own."""
    return WF.mirrors.get(dataset, [])


# --- data preparation in parts (data.prep_jobs) -------------------------------------------------------------
# With data.prep_jobs = K > 1 the shards of a split, and the latents of each autoencoder, are written by K jobs
# (rules shards and latents with the wildcard part = "parts/<k>-of-<K>/", each a contiguous range of shards)
# and a merge job (shards_merge, latents_merge) writing the split's manifest and the statistics; with K = 1,
# part is empty and one shards / latents job writes everything, as before. The files are the same whatever K.

PREP_PART = r"(parts/\d{4}-of-\d{4}/)?"


def prep_jobs(exp):
    return exp["data"]["prep_jobs"]


def prep_part_prefixes(jobs):
    return [f"parts/{k:04d}-of-{jobs:04d}/" for k in range(jobs)]


def prep_part(part):
    """(k, K) of a part wildcard "parts/<k>-of-<K>/", or None for the empty one (the whole split in one job)."""
    if not part:
        return None
    k, jobs = part[len("parts/") : -1].split("-of-")
    return int(k), int(jobs)


def _prepared_in_parts():
    shards, latents = {}, {}
    for exp in WF.experiments.values():
        if exp.get("data") and prep_jobs(exp) > 1:  # one value per data id (checked by load_workflow)
            shards[shards_dir(exp)] = prep_jobs(exp)
            latents[latents_dir(exp)] = prep_jobs(exp)
    return shards, latents


SHARDS_IN_PARTS, LATENTS_IN_PARTS = _prepared_in_parts()


def one_of(folders, prefix):
    """A wildcard constraint matching exactly these folders (less `prefix`), or nothing."""
    return "|".join(re.escape(f[len(prefix) :]) for f in sorted(folders)) or "(?!x)x"


# --- models ------------------------------------------------------------------------------------------------


def models_where(kind):
    """Models of one kind ("trained" from scratch, "tuned" from a checkpoint, "pretrained" imported)."""

    def kind_of(spec):
        return "pretrained" if spec.get("pretrained") else ("tuned" if spec.get("init") else "trained")

    names = [m for m, spec in MODELS.items() if kind_of(spec) == kind]
    return "|".join(names) if names else "(?!x)x"


def model_spec(name):
    """What defines a model's training: its config entry plus the data settings it sees."""
    d = model_experiment(name)["data"]
    data = {k: d[k] for k in ("dataset", "autoencoder", "normalize_latents", "latent_multiplier")}
    if d.get("latent_stats"):
        data["latent_stats"] = d["latent_stats"]
    if d.get("hflip") is False:  # only when off: the default leaves every earlier spec (and state) as it was
        data["hflip"] = False
    spec = {k: v for k, v in MODELS[name].items() if k not in ("init", "teacher", "ema_select")}
    if "train" in spec:  # where and how long it runs is not what it trains: no rerun when those change
        spec["train"] = {k: v for k, v in spec["train"].items() if k not in ("gpus", "hours")}
    return json.dumps({**spec, "data": data}, sort_keys=True)


def checkpoint(ref):
    """A model's checkpoint; "<model>@<step>" is a snapshot kept during its training."""
    name, step = split_model_ref(ref)
    if step is None:
        return f"results/models/{name}/checkpoint.pt"
    return f"results/models/{name}/snapshots/step-{int(step):07d}.pt"


def sampling_checkpoint(ref):
    """The checkpoint whose weights are sampled for a model reference (samplers, a tuned model's teacher):
    with models.<name>.ema_select, the EMA length it chose (checkpoint_ema.pt); otherwise checkpoint(ref)."""
    name, step = split_model_ref(ref)
    if step is None and (MODELS.get(name) or {}).get("ema_select"):
        return f"results/models/{name}/checkpoint_ema.pt"
    return checkpoint(ref)


def model_resources(name, key, default):
    t = MODELS[name].get("train") or {}
    return t.get(key) or default


# --- samplers, evaluation ------------------------------------------------------------------------------


def sampler_spec(name):
    s = SAMPLERS[name]
    spec = {k: s[k] for k in ("method", "options", "guidance", "weights")}
    spec.update({k: s[k] for k in ("precision", "tf32", "compile") if k in s})  # only when set: no reruns
    spec["quantize"] = sampler_experiment(name)["evaluation"]["quantize"]
    return json.dumps(spec, sort_keys=True)


def evaluation_of(sampler):
    return sampler_experiment(sampler)["evaluation"]


def num_shards(sampler):
    ev = evaluation_of(sampler)
    return -(-ev["num_samples"] // ev["samples_per_shard"])


def sample_shards(sampler, steps):
    return [f"results/samples/{sampler}/steps{steps}/shard-{k:04d}.npz" for k in range(num_shards(sampler))]


def evaluations(sampler):
    return [f"results/eval/{sampler}/steps{n}.json" for n in SAMPLERS[sampler]["steps"]]


def extractor_weights(exp):
    if exp["extractor"]["kind"] == "classifier":
        return f"results/extractor/{data_id(exp)}/classifier.pt"
    return "results/extractor/inception/weights.pth"


def reference_marker(exp):
    ev, ref = exp["evaluation"], reference_batch(exp)
    if ref:
        return f"results/reference/{ref[0]}-{exp['extractor']['kind']}.json"
    return f"results/reference/{data_id(exp)}-{ev['reference_split']}-{exp['extractor']['kind']}.json"


def reference_args(exp):
    """The evaluate.py arguments naming an experiment's reference: an ADM batch or a split of its shards."""
    ev, ref = exp["evaluation"], reference_batch(exp)
    if ref:
        return f"--reference-batch {fetched('references', *ref)}"
    return f"--images {shards_dir(exp)} --split {ev['reference_split']}"


def table_evaluations(table):
    return [e for s in TABLES[table] for e in evaluations(s)]


def experiment_targets(exp):
    out = []
    tables = [t for (kind, t), e in WF.experiment_of.items() if kind == "table" and e == exp["name"]]
    samplers = [s for (kind, s), e in WF.experiment_of.items() if kind == "sampler" and e == exp["name"]]
    models = [m for (kind, m), e in WF.experiment_of.items() if kind == "model" and e == exp["name"]]
    out += [f"results/table_{t}.csv" for t in tables]
    out += [f"results/figures/{t}_fid_vs_nfe.png" for t in tables]
    out += [f"results/figures/fid_vs_nfe/{s}.png" for s in samplers]
    out += [f"results/figures/grids/{s}_steps{n}.png" for s in samplers for n in SAMPLERS[s]["steps"]]
    out += [f"results/models/{m}/loss.png" for m in models if not MODELS[m].get("pretrained")]
    out += [f"results/figures/{m}_fid_vs_ema.png" for m in models if MODELS[m].get("ema_select")]
    return out


def all_targets():
    """What the default target (all) builds: the main experiment's outputs; paper tables are named targets."""
    return experiment_targets(WF.experiments[WF.main])
