# Functions of workflow/rules/paper_fig4.smk (kept apart from its rules: snakemake --lint).


def fig4_inputs(wc):
    first = sampler_experiment(FIG4_SAMPLERS[0.0])
    return {
        "checkpoints": [checkpoint(SAMPLERS[s]["model"]) for s in FIG4_SAMPLERS.values()],
        "autoencoder": autoencoder_inputs(first),
    }


def fig4_setting(key):
    """One key of the config's `paper_fig4` mapping (the schema fills its defaults: steps 60, columns 8, images 1)."""
    return int(WF.experiments[WF.main]["paper_fig4"][key])
