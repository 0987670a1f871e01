# Functions of workflow/rules/sample.smk (kept apart from its rules: snakemake --lint).


def sample_inputs(wc):
    exp = sampler_experiment(wc.sampler)
    return {"checkpoint": sampling_checkpoint(SAMPLERS[wc.sampler]["model"]), "autoencoder": autoencoder_inputs(exp)}
