# Stage 1: fetch the dataset's files from its ordered mirrors (retries, resume, checksums).
from ucgm_core.data.datasets import get_dataset


rule download:
    output:
        [f"results/raw/{{dataset}}/{f.name}" for f in get_dataset(DATA["dataset"]).files],
    log:
        "results/logs/download/{dataset}.log",
    benchmark:
        "results/benchmarks/download/{dataset}.tsv"
    params:
        out_dir=lambda wc: f"results/raw/{wc.dataset}",
        mirrors=" ".join(f"--mirror {m}" for m in DATA["mirrors"]),
    shell:
        "{PY} -m ucgm_core.data.download --dataset {wildcards.dataset} --out-dir {params.out_dir}"
        " {params.mirrors} > {log} 2>&1"
