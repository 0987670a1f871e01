# Stage 7b: FID / IS / KID / precision-recall of one (sampler, steps) with torch-fidelity and the configured
# extractor; the result JSON carries the evaluation contract.


rule evaluate:
    input:
        shards=lambda wc: sample_shards(wc.sampler, wc.steps),
        weights=extractor_weights(),
        reference=reference_marker(),
    output:
        "results/eval/{sampler}/steps{steps}.json",
    wildcard_constraints:
        steps=r"\d+",
    log:
        "results/logs/evaluate/{sampler}/steps{steps}.log",
    benchmark:
        "results/benchmarks/evaluate/{sampler}/steps{steps}.tsv"
    params:
        split=EVAL["reference_split"],
        kind=EXTRACTOR["kind"],
        metrics=" ".join(EVAL["metrics"]),
        context=lambda wc: json.dumps({"sampler": wc.sampler, "model": SAMPLERS[wc.sampler]["model"]}),
    threads: 1
    shell:
        "{PY} {SCRIPTS}/evaluate.py samples --shards {input.shards} --images {SHARDS} --split {params.split}"
        " --extractor {params.kind} --weights {input.weights} --cache-dir results/reference/cache"
        " --metrics {params.metrics} --context {params.context:q} --threads {threads} --out {output} > {log} 2>&1"
