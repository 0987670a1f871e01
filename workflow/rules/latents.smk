# Stage 3: encode the image shards with the autoencoder (plain and flipped), plus per-channel statistics.


rule latents:
    input:
        "results/shards/{dataset}_{resolution}/train.json",
        "results/shards/{dataset}_{resolution}/test.json",
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
    shell:
        "{PY} -m ucgm_core.data.latents --image-dir {params.image_dir} --out-dir {params.out_dir}"
        " --autoencoder {wildcards.autoencoder} --stats-out {output[0]} > {log} 2>&1"
