# Stage 3: encode the training images with the autoencoder (plain and flipped), plus per-channel statistics
# (10,000 random training latents, as the original).


def _latents_experiment(wc):
    return experiment_for_data(wc.dataset, wc.resolution, wc.autoencoder)


rule latents:
    input:
        images="results/shards/{dataset}_{resolution}/train.json",
        weights=lambda wc: autoencoder_inputs(_latents_experiment(wc)),
    output:
        "results/latents/{autoencoder}/{dataset}_{resolution}/stats.pt",
        "results/latents/{autoencoder}/{dataset}_{resolution}/train.json",
    log:
        "results/logs/latents/{autoencoder}/{dataset}_{resolution}.log",
    benchmark:
        "results/benchmarks/latents/{autoencoder}/{dataset}_{resolution}.tsv"
    params:
        image_dir=lambda wc: f"results/shards/{wc.dataset}_{wc.resolution}",
        out_dir=lambda wc: f"results/latents/{wc.autoencoder}/{wc.dataset}_{wc.resolution}",
        ae_kwargs=lambda wc: autoencoder_kwargs(_latents_experiment(wc)),
    shell:
        "{PY} -m ucgm_core.data.latents --image-dir {params.image_dir} --out-dir {params.out_dir}"
        " --autoencoder {wildcards.autoencoder} --ae-kwargs {params.ae_kwargs:q} --splits train"
        " --stats-out {output[0]} > {log} 2>&1"
