from ucgm_core.data.datasets import get_dataset


rule download:
    output:
        [f"results/raw/{{dataset}}/{f.name}" for f in get_dataset(config["dataset"]).files],
    log:
        "results/logs/download/{dataset}.log",
    benchmark:
        "results/benchmarks/download/{dataset}.tsv"
    params:
        out_dir=lambda wc: f"results/raw/{wc.dataset}",
    shell:
        "python -m ucgm_core.data.download --dataset {wildcards.dataset} --out-dir {params.out_dir} > {log} 2>&1"


rule shards:
    input:
        rules.download.output,
    output:
        "results/shards/{dataset}_{resolution}/train.json",
        "results/shards/{dataset}_{resolution}/test.json",
    log:
        "results/logs/shards/{dataset}_{resolution}.log",
    benchmark:
        "results/benchmarks/shards/{dataset}_{resolution}.tsv"
    params:
        raw=lambda wc: f"results/raw/{wc.dataset}",
        out_dir=lambda wc: f"results/shards/{wc.dataset}_{wc.resolution}",
    shell:
        "python -m ucgm_core.data.shards --dataset {wildcards.dataset} --raw-dir {params.raw}"
        " --out-dir {params.out_dir} --resolution {wildcards.resolution} > {log} 2>&1"


rule latents:
    input:
        "results/shards/{dataset}_{resolution}/train.json",
        "results/shards/{dataset}_{resolution}/test.json",
    output:
        "results/latents/{autoencoder}/{dataset}_{resolution}/stats.pt",
    log:
        "results/logs/latents/{autoencoder}/{dataset}_{resolution}.log",
    benchmark:
        "results/benchmarks/latents/{autoencoder}/{dataset}_{resolution}.tsv"
    params:
        image_dir=lambda wc: f"results/shards/{wc.dataset}_{wc.resolution}",
        out_dir=lambda wc: f"results/latents/{wc.autoencoder}/{wc.dataset}_{wc.resolution}",
    shell:
        "python -m ucgm_core.data.latents --image-dir {params.image_dir} --out-dir {params.out_dir}"
        " --autoencoder {wildcards.autoencoder} --stats-out {output} > {log} 2>&1"
