# Functions of workflow/rules/latents.smk (kept apart from its rules: snakemake --lint).


def _latents_experiment(wc):
    """What the latents of (dataset, resolution, autoencoder) need: the autoencoder's name (its weights are
    declared once, under autoencoders), as {"data": {...}} for autoencoder_inputs / autoencoder_kwargs."""
    settings = data_settings(wc.dataset, wc.resolution)
    if wc.autoencoder not in settings["autoencoders"]:
        raise WorkflowError(
            f"no experiment has data {wc.dataset} at {wc.resolution} with autoencoder "
            f"{wc.autoencoder}; expected one of {settings['autoencoders']}"
        )
    return {"data": {"autoencoder": wc.autoencoder}}


def _latents_mode_args(wc, output):
    part = prep_part(wc.part)
    if part is None:
        return ["--stats-out", output[0]]
    return ["--part", str(part[0]), "--parts", str(part[1]), "--part-manifest", output[1], "--part-stats", output[0]]


def _latent_parts(wc, name):
    folder = f"results/latents/{wc.latent_data}"
    return [f"{folder}/{p}{name}" for p in prep_part_prefixes(LATENTS_IN_PARTS[folder])]
