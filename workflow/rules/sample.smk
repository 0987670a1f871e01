# Stage 6: generation in shards, one job per shard; image i always gets seed per_image_seed(seed, i) and
# label i mod num_classes, so the samples do not depend on the split into shards or jobs.


rule sample:
    input:
        lambda wc: checkpoint(SAMPLERS[wc.sampler]["model"]),
    output:
        "results/samples/{sampler}/steps{steps}/shard-{shard}.npz",
    wildcard_constraints:
        steps=r"\d+",
        shard=r"\d{4}",
    log:
        "results/logs/sample/{sampler}/steps{steps}/shard-{shard}.log",
    benchmark:
        "results/benchmarks/sample/{sampler}/steps{steps}/shard-{shard}.tsv"
    params:
        spec=lambda wc: sampler_spec(wc.sampler),
        num_samples=EVAL["num_samples"],
        samples_per_shard=EVAL["samples_per_shard"],
        seed=EVAL["seed"],
        batch_size=EVAL["batch_size"],
    threads: 1
    shell:
        "{PY} {SCRIPTS}/sample.py --checkpoint {input} --spec {params.spec:q} --steps {wildcards.steps}"
        " --shard {wildcards.shard} --samples-per-shard {params.samples_per_shard}"
        " --num-samples {params.num_samples} --seed {params.seed} --batch-size {params.batch_size}"
        " --threads {threads} --out {output} > {log} 2>&1"
