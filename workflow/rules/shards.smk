# Stage 2: images to webdataset tar shards (ADM centre crop where the size differs). One job per split; with
# data.prep_jobs = K > 1, K jobs per split side by side (`part` = "parts/<k>-of-<K>/": a contiguous range of
# shards each, plus a part manifest) and shards_merge, which checks the parts and writes {split}.json. The
# shards and the manifest are byte-identical whatever K.


include: "functions/shards.smk"


rule shards:
    input:
        lambda wc: dataset_inputs(_shards_experiment(wc)),
    output:
        "results/shards/{dataset}_{resolution}/{part}{split}.json",
    log:
        "results/logs/shards/{part}{dataset}_{resolution}_{split}.log",
    benchmark:
        "results/benchmarks/shards/{part}{dataset}_{resolution}_{split}.tsv"
    wildcard_constraints:
        split="train|test",
        resolution=r"\d+",
        part=PREP_PART,
    threads: 1
    params:
        raw=lambda wc: raw_location(_shards_experiment(wc)),
        out_dir=lambda wc: f"results/shards/{wc.dataset}_{wc.resolution}",
        num_classes=lambda wc: (
            ["--num-classes", str(_shards_experiment(wc)["data"]["num_classes"])]
            if _shards_experiment(wc)["data"].get("num_classes")
            else []
        ),
        part=_shards_part_args,
    shell:
        "{PY} {SCRIPTS:q}/shards.py --dataset {wildcards.dataset:q} --raw-dir {params.raw:q}"
        " --out-dir {params.out_dir:q} --resolution {wildcards.resolution} --splits {wildcards.split}"
        " {params.num_classes:q} {params.part:q} --workers {threads} > {log:q} 2>&1"


# {split}.json of data prepared in parts comes from the merge, never from one shards job
ruleorder: shards_merge > shards


rule shards_merge:
    input:
        lambda wc: [
            f"results/shards/{wc.data}/{p}{wc.split}.json"
            for p in prep_part_prefixes(SHARDS_IN_PARTS[f"results/shards/{wc.data}"])
        ],
    output:
        "results/shards/{data}/{split}.json",
    log:
        "results/logs/shards_merge/{data}_{split}.log",
    benchmark:
        "results/benchmarks/shards_merge/{data}_{split}.tsv"
    wildcard_constraints:
        data=one_of(SHARDS_IN_PARTS, "results/shards/"),
        split="train|test",
    threads: 1
    params:
        parts=lambda wc: SHARDS_IN_PARTS[f"results/shards/{wc.data}"],
    shell:
        "{PY} {SCRIPTS:q}/shards.py --out-dir results/shards/{wildcards.data:q} --splits {wildcards.split}"
        " --merge-parts {input:q} > {log:q} 2>&1"
