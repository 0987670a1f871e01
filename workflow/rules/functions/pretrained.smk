# Functions of workflow/rules/pretrained.smk (kept apart from its rules: snakemake --lint).


def pretrained_inputs(wc):
    exp = model_experiment(wc.model)
    out = {
        "weights": source_file(
            "models", wc.model, MODELS[wc.model]["pretrained"], f"models.{wc.model}.pretrained.source"
        )
    }
    if needs_latent_stats(exp):
        out["stats"] = f"{latents_dir(exp)}/stats.pt"
    return out


def pretrained_args(wc, input):
    """pretrained.py's arguments, one list item per word (quoted by `:q`: no config text is shell syntax)."""
    exp = model_experiment(wc.model)
    d, spec = exp["data"], MODELS[wc.model]
    args = [
        "--architecture",
        spec["architecture"],
        "--overrides",
        json.dumps(spec.get("architecture_overrides") or {}, sort_keys=True),
        "--dataset",
        d["dataset"],
        "--resolution",
        str(d["resolution"]),
        "--autoencoder",
        d["autoencoder"],
        "--ae-kwargs",
        autoencoder_kwargs(exp),
        "--multiplier",
        str(d["latent_multiplier"]),
    ]
    if d.get("num_classes"):
        args += ["--num-classes", str(d["num_classes"])]
    if not d["normalize_latents"]:
        args.append("--no-normalize")
    elif d.get("latent_stats"):
        args += ["--latent-stats", json.dumps(d["latent_stats"])]
    else:
        args += ["--stats", input.stats]
    if spec["pretrained"].get("sha256"):
        args += ["--sha256", spec["pretrained"]["sha256"]]
    if spec["pretrained"].get("allow_unsafe_pickle"):
        args.append("--allow-unsafe-pickle")
    return args
