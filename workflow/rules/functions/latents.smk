# Functions of workflow/rules/latents.smk (kept apart from its rules: snakemake --lint).


def _latents_experiment(wc):
    return experiment_for_data(wc.dataset, wc.resolution, wc.autoencoder)


def _latents_mode_args(wc, output):
    part = prep_part(wc.part)
    if part is None:
        return ["--stats-out", output[0]]
    return ["--part", str(part[0]), "--parts", str(part[1]), "--part-manifest", output[1], "--part-stats", output[0]]


def _latent_parts(wc, name):
    folder = f"results/latents/{wc.latent_data}"
    return [f"{folder}/{p}{name}" for p in prep_part_prefixes(LATENTS_IN_PARTS[folder])]
