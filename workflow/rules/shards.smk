# Stage 2: images to webdataset tar shards, one job per split (ADM centre crop where the size differs).


def _shards_experiment(wc):
    return experiment_for_data(wc.dataset, wc.resolution)


rule shards:
    input:
        lambda wc: dataset_inputs(_shards_experiment(wc)),
    output:
        "results/shards/{dataset}_{resolution}/{split}.json",
    wildcard_constraints:
        split="train|test",
        resolution=r"\d+",
    log:
        "results/logs/shards/{dataset}_{resolution}_{split}.log",
    benchmark:
        "results/benchmarks/shards/{dataset}_{resolution}_{split}.tsv"
    params:
        raw=lambda wc: raw_location(_shards_experiment(wc)),
        out_dir=lambda wc: f"results/shards/{wc.dataset}_{wc.resolution}",
        num_classes=lambda wc: (f"--num-classes {_shards_experiment(wc)['data']['num_classes']}"
                                if _shards_experiment(wc)["data"].get("num_classes") else ""),
    threads: 1
    shell:
        "{PY} -m ucgm_core.data.shards --dataset {wildcards.dataset} --raw-dir {params.raw:q}"
        " --out-dir {params.out_dir} --resolution {wildcards.resolution} --splits {wildcards.split}"
        " {params.num_classes} --workers {threads} > {log} 2>&1"
