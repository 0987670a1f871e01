# Stage 7a: the evaluation's feature extractor and the cached reference features.


rule extractor_classifier:
    input:
        f"{SHARDS}/train.json",
        f"{SHARDS}/test.json",
    output:
        f"results/extractor/{DATA_ID}/classifier.pt",
    log:
        f"results/logs/extractor/{DATA_ID}.log",
    benchmark:
        f"results/benchmarks/extractor/{DATA_ID}.tsv"
    params:
        steps=EXTRACTOR["train_steps"],
        seed=EXTRACTOR["seed"],
    threads: 2
    shell:
        "{PY} {SCRIPTS}/extractor.py classifier --images {SHARDS} --steps {params.steps} --seed {params.seed}"
        " --threads {threads} --out {output} > {log} 2>&1"


rule extractor_inception:
    output:
        "results/extractor/inception/weights.pth",
    log:
        "results/logs/extractor/inception.log",
    benchmark:
        "results/benchmarks/extractor/inception.tsv"
    params:
        weights=f"--weights {EXTRACTOR['weights']}" if EXTRACTOR.get("weights") else "",
    shell:
        "{PY} {SCRIPTS}/extractor.py inception {params.weights} --out {output} > {log} 2>&1"


rule reference:
    input:
        weights=extractor_weights(),
        images=f"{SHARDS}/{EVAL['reference_split']}.json",
    output:
        reference_marker(),
    log:
        f"results/logs/reference/{DATA_ID}.log",
    benchmark:
        f"results/benchmarks/reference/{DATA_ID}.tsv"
    params:
        split=EVAL["reference_split"],
        kind=EXTRACTOR["kind"],
    shell:
        "{PY} {SCRIPTS}/evaluate.py reference --images {SHARDS} --split {params.split} --extractor {params.kind}"
        " --weights {input.weights} --cache-dir results/reference/cache --out {output} > {log} 2>&1"
