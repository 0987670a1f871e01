# Functions of workflow/rules/ema_select.smk (kept apart from its rules: snakemake --lint).


def ema_select_of(model):
    return MODELS[model]["ema_select"]


def ema_select_inputs(wc):
    exp = model_experiment(wc.model)
    return {
        "checkpoint": f"results/models/{wc.model}/checkpoint.pt",
        "autoencoder": autoencoder_inputs(exp),
        "weights": extractor_weights(exp),
        "reference": reference_marker(exp),
    }


def ema_select_seed(wc):
    """ema_select.seed, or evaluation.seed + 1: other noise than the evaluation's, so that the choice is not
    fitted to the very images it is then scored on."""
    seed = ema_select_of(wc.model)["seed"]
    return model_experiment(wc.model)["evaluation"]["seed"] + 1 if seed is None else seed


def ema_select_args(wc):
    """ema_select.py's settings, one list item per word (quoted by `:q`)."""
    sel, exp = ema_select_of(wc.model), model_experiment(wc.model)
    args = ["--sigma-rels", *[repr(float(s)) for s in sel["sigma_rels"]], "--spec", sampler_spec(sel["sampler"])]
    args += ["--steps", str(sel["steps"]), "--num-samples", str(sel["num_samples"]), "--seed", str(ema_select_seed(wc))]
    args += ["--batch-size", str(exp["evaluation"]["batch_size"]), "--ae-kwargs", autoencoder_kwargs(exp)]
    args += [*reference_argv(exp), "--extractor", exp["extractor"]["kind"], "--title", f"{wc.model}: FID vs EMA length"]
    return args + ([] if sel["baseline"] else ["--no-baseline"])


def models_with_ema_select():
    """A wildcard constraint matching the models with ema_select, or nothing."""
    return "|".join(re.escape(m) for m, spec in MODELS.items() if spec.get("ema_select")) or "(?!x)x"
