# Stage 7b: FID / IS / KID / precision-recall of one (sampler, steps) with torch-fidelity and the configured
# extractor; the result JSON carries the evaluation contract.


def evaluate_inputs(wc):
    exp = sampler_experiment(wc.sampler)
    return {"shards": sample_shards(wc.sampler, wc.steps), "weights": extractor_weights(exp),
            "reference": reference_marker(exp)}


def evaluation_context(wc):
    exp = sampler_experiment(wc.sampler)
    s, ev = SAMPLERS[wc.sampler], exp["evaluation"]
    return json.dumps({"sampler": wc.sampler, "model": s["model"], "experiment": exp["name"],
                       "contract": {"num_samples": ev["num_samples"], "seed": ev["seed"],
                                    "quantize": ev["quantize"], "labels": "image i has class i mod num_classes",
                                    "reference": reference_args(exp).split(" ", 1)[1],
                                    "extractor": exp["extractor"]["kind"]}}, sort_keys=True)


rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        "results/eval/{sampler}/steps{steps}.json",
    wildcard_constraints:
        steps=r"\d+",
    log:
        "results/logs/evaluate/{sampler}/steps{steps}.log",
    benchmark:
        "results/benchmarks/evaluate/{sampler}/steps{steps}.tsv"
    params:
        reference=lambda wc: reference_args(sampler_experiment(wc.sampler)),
        kind=lambda wc: sampler_experiment(wc.sampler)["extractor"]["kind"],
        metrics=lambda wc: " ".join(evaluation_of(wc.sampler)["metrics"]),
        context=evaluation_context,
    threads: 1
    shell:
        "{PY} {SCRIPTS}/evaluate.py samples --shards {input.shards} {params.reference}"
        " --extractor {params.kind} --weights {input.weights} --cache-dir results/reference/cache"
        " --metrics {params.metrics} --context {params.context:q} --threads {threads} --out {output} > {log} 2>&1"
