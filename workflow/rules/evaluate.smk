# Stage 7b: FID / IS / KID / precision-recall of one (sampler, steps) with torch-fidelity and the configured
# extractor; the result JSON carries the evaluation contract, and every shard must match the sampler's
# settings (the expected metadata, --expect). Config text reaches the shell only through `:q`.


include: "functions/evaluate.smk"


rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        "results/eval/{sampler}/steps{steps}.json",
    log:
        "results/logs/evaluate/{sampler}/steps{steps}.log",
    benchmark:
        "results/benchmarks/evaluate/{sampler}/steps{steps}.tsv"
    wildcard_constraints:
        steps=r"\d+",
    threads: 1
    params:
        reference=lambda wc: reference_argv(sampler_experiment(wc.sampler)),
        kind=lambda wc: sampler_experiment(wc.sampler)["extractor"]["kind"],
        metrics=lambda wc: evaluation_of(wc.sampler)["metrics"],
        context=evaluation_context,
        expect=expected_shard_meta,
    shell:
        "{PY} {SCRIPTS:q}/evaluate.py samples --shards {input.shards:q} {params.reference:q}"
        " --extractor {params.kind:q} --weights {input.weights:q} --cache-dir results/reference/cache"
        " --metrics {params.metrics:q} --context {params.context:q} --expect {params.expect:q}"
        " --threads {threads} --out {output:q} > {log:q} 2>&1"
