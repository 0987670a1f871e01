# Functions of workflow/rules/train.smk (kept apart from its rules: snakemake --lint).


def training_inputs(wc):
    exp = model_experiment(wc.model)
    spec = MODELS[wc.model]
    out = {
        "latents": f"{latents_dir(exp)}/train.json",
        "stats": f"{latents_dir(exp)}/stats.pt",
        "autoencoder": autoencoder_inputs(exp),
    }
    if spec.get("init"):
        out["init"] = checkpoint(spec["init"])
    if spec.get("init") or spec.get("teacher"):
        out["teacher"] = sampling_checkpoint(spec.get("teacher") or spec["init"])
    return out


def launcher(wc):
    """The command that runs train.py: python, or torchrun with one process per GPU (a list of words)."""
    gpus = model_resources(wc.model, "gpus", 1)
    return ["torchrun", "--standalone", "--nproc_per_node", str(gpus)] if gpus > 1 else [PY]


def training_args(wc, input):
    """train.py's data and weights arguments, one list item per word."""
    exp = model_experiment(wc.model)
    args = ["--latents", latents_dir(exp), "--stats", input.stats, "--ae-kwargs", autoencoder_kwargs(exp)]
    if "init" in input.keys():
        args += ["--init", input.init]
    if "teacher" in input.keys():
        args += ["--teacher", input.teacher]
    return args
