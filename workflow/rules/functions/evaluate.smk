# Functions of workflow/rules/evaluate.smk (kept apart from its rules: snakemake --lint).


def evaluate_inputs(wc):
    exp = sampler_experiment(wc.sampler)
    return {
        "shards": sample_shards(wc.sampler, wc.steps),
        "weights": extractor_weights(exp),
        "reference": reference_marker(exp),
    }


def expected_shard_meta(wc):
    """What every shard's metadata must say for this evaluation (sample.py's keys, from the config)."""
    s, ev = SAMPLERS[wc.sampler], evaluation_of(wc.sampler)
    spec = json.loads(sampler_spec(wc.sampler))
    return json.dumps(
        {
            "method": s["method"],
            "steps": int(wc.steps),
            "options": s["options"],
            "guidance": s["guidance"],
            "weights": s["weights"],
            "quantize": spec["quantize"],
            "precision": spec.get("precision", "fp32"),
            "seed": ev["seed"],
            "num_samples": ev["num_samples"],
            "samples_per_shard": ev["samples_per_shard"],
        },
        sort_keys=True,
    )


def evaluation_context(wc):
    exp = sampler_experiment(wc.sampler)
    s, ev = SAMPLERS[wc.sampler], exp["evaluation"]
    return json.dumps(
        {
            "sampler": wc.sampler,
            "model": s["model"],
            "experiment": exp["name"],
            "contract": {
                "num_samples": ev["num_samples"],
                "seed": ev["seed"],
                "quantize": ev["quantize"],
                "labels": "image i has class i mod num_classes",
                "reference": reference_args(exp).split(" ", 1)[1],
                "extractor": exp["extractor"]["kind"],
            },
        },
        sort_keys=True,
    )
