# Stage 2: images to webdataset tar shards (train/test kept apart, ADM centre crop where needed).


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
        "{PY} -m ucgm_core.data.shards --dataset {wildcards.dataset} --raw-dir {params.raw}"
        " --out-dir {params.out_dir} --resolution {wildcards.resolution} > {log} 2>&1"
