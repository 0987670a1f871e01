# Stage 6: generation in shards, one job per shard; image i always gets seed per_image_seed(seed, i) and
# label i mod num_classes, so the samples do not depend on the split into shards or jobs. Config text (the
# sampler spec, autoencoder arguments) reaches the shell only through `:q`.


include: "functions/sample.smk"


rule sample:
    input:
        unpack(sample_inputs),
    output:
        "results/samples/{sampler}/steps{steps}/shard-{shard}.npz",
    log:
        "results/logs/sample/{sampler}/steps{steps}/shard-{shard}.log",
    benchmark:
        "results/benchmarks/sample/{sampler}/steps{steps}/shard-{shard}.tsv"
    wildcard_constraints:
        steps=r"\d+",
        shard=r"\d{4}",
    threads: 1
    params:
        spec=lambda wc: sampler_spec(wc.sampler),
        ae_kwargs=lambda wc: autoencoder_kwargs(sampler_experiment(wc.sampler)),
        num_samples=lambda wc: evaluation_of(wc.sampler)["num_samples"],
        samples_per_shard=lambda wc: evaluation_of(wc.sampler)["samples_per_shard"],
        seed=lambda wc: evaluation_of(wc.sampler)["seed"],
        batch_size=lambda wc: evaluation_of(wc.sampler)["batch_size"],
    shell:
        "{PY} {SCRIPTS:q}/sample.py --checkpoint {input.checkpoint:q} --spec {params.spec:q} --steps {wildcards.steps}"
        " --ae-kwargs {params.ae_kwargs:q} --shard {wildcards.shard} --samples-per-shard {params.samples_per_shard}"
        " --num-samples {params.num_samples} --seed {params.seed} --batch-size {params.batch_size}"
        " --threads {threads} --out {output:q} > {log:q} 2>&1"
