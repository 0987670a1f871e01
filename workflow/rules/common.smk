# Shared helpers: config validation (before any job runs), paths and per-rule parameters.
import json

from ucgm_core.workflow_config import ConfigError, validate_config

try:
    validate_config(config, source=(workflow.overwrite_configfiles or ["config/config.yaml"])[-1])
except ConfigError as err:
    raise WorkflowError(str(err)) from None

PY = "python"
SCRIPTS = f"{workflow.basedir}/workflow/scripts"
DATA = config["data"]
DATA_ID = f"{DATA['dataset']}_{DATA['resolution']}"
SHARDS = f"results/shards/{DATA_ID}"
LATENTS = f"results/latents/{DATA['autoencoder']}/{DATA_ID}"
EXTRACTOR = config["extractor"]
EVAL = config["evaluation"]
MODELS = config["models"]
SAMPLERS = config["samplers"]


def models_where(tuned):
    """Names of the models that start from a checkpoint (tuned) or from scratch (trained)."""
    names = [m for m, spec in MODELS.items() if bool(spec.get("init")) == tuned]
    return "|".join(names) if names else "(?!x)x"


def model_spec(name):
    """What defines a model's training: its config entry plus the data settings it sees."""
    data = {k: DATA[k] for k in ("dataset", "autoencoder", "normalize_latents", "latent_multiplier")}
    spec = {k: v for k, v in MODELS[name].items() if k not in ("init", "teacher")}
    return json.dumps({**spec, "data": data}, sort_keys=True)


def checkpoint(name):
    return f"results/models/{name}/checkpoint.pt"


def sampler_spec(name):
    s = SAMPLERS[name]
    return json.dumps({k: s[k] for k in ("method", "options", "guidance", "weights")}, sort_keys=True)


def num_shards():
    return -(-EVAL["num_samples"] // EVAL["samples_per_shard"])


def sample_shards(sampler, steps):
    return [f"results/samples/{sampler}/steps{steps}/shard-{k:04d}.npz" for k in range(num_shards())]


def evaluations(sampler):
    return [f"results/eval/{sampler}/steps{n}.json" for n in SAMPLERS[sampler]["steps"]]


def extractor_weights():
    if EXTRACTOR["kind"] == "classifier":
        return f"results/extractor/{DATA_ID}/classifier.pt"
    return "results/extractor/inception/weights.pth"


def reference_marker():
    return f"results/reference/{DATA_ID}-{EVAL['reference_split']}-{EXTRACTOR['kind']}.json"


def all_targets():
    out = [f"results/table_{t}.csv" for t in config["tables"]]
    out += [f"results/figures/{t}_fid_vs_nfe.png" for t in config["tables"]]
    out += [f"results/figures/fid_vs_nfe/{s}.png" for s in SAMPLERS]
    out += [f"results/figures/grids/{s}_steps{n}.png" for s in SAMPLERS for n in SAMPLERS[s]["steps"]]
    out += [f"results/models/{m}/loss.png" for m in MODELS]
    return out
