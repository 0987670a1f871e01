# Stage 7b: FID / IS / KID / precision-recall of one (sampler, steps) with torch-fidelity and the configured
# extractor; the result JSON carries the evaluation contract, and every shard must match the sampler's
# settings (the expected metadata, --expect). Config text reaches the shell only through `:q`.


def evaluate_inputs(wc):
    exp = sampler_experiment(wc.sampler)
    return {"shards": sample_shards(wc.sampler, wc.steps), "weights": extractor_weights(exp),
            "reference": reference_marker(exp)}


def expected_shard_meta(wc):
    """What every shard's metadata must say for this evaluation (sample.py's keys, from the config)."""
    s, ev = SAMPLERS[wc.sampler], evaluation_of(wc.sampler)
    spec = json.loads(sampler_spec(wc.sampler))
    return json.dumps({"method": s["method"], "steps": int(wc.steps), "options": s["options"],
                       "guidance": s["guidance"], "weights": s["weights"], "quantize": spec["quantize"],
                       "precision": spec.get("precision", "fp32"), "seed": ev["seed"],
                       "num_samples": ev["num_samples"], "samples_per_shard": ev["samples_per_shard"]},
                      sort_keys=True)


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
        tool=tool_command("evaluate.py"),
        reference=lambda wc: reference_argv(sampler_experiment(wc.sampler)),
        kind=lambda wc: sampler_experiment(wc.sampler)["extractor"]["kind"],
        metrics=lambda wc: evaluation_of(wc.sampler)["metrics"],
        context=evaluation_context,
        expect=expected_shard_meta,
    threads: 1
    shell:
        "{params.tool:q} samples --shards {input.shards:q} {params.reference:q}"
        " --extractor {params.kind:q} --weights {input.weights:q} --cache-dir results/reference/cache"
        " --metrics {params.metrics:q} --context {params.context:q} --expect {params.expect:q}"
        " --threads {threads} --out {output:q} > {log:q} 2>&1"
