# Functions of workflow/rules/paper_fig4.smk (kept apart from its rules: snakemake --lint).


def fig4_inputs(wc):
    first = sampler_experiment(FIG4_SAMPLERS[0.0])
    return {
        "checkpoints": [checkpoint(SAMPLERS[s]["model"]) for s in FIG4_SAMPLERS.values()],
        "autoencoder": autoencoder_inputs(first),
    }
