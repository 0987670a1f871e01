# Stage 7a: the evaluation's feature extractor and the cached reference features (a split of the dataset,
# or an ADM reference batch whose mu/sigma give FID and whose images give precision/recall). Paths from the
# config (extractor.weights, a reference batch's source) reach the shell only through `:q`.


include: "functions/extractor.smk"


rule extractor_classifier:
    input:
        "results/shards/{data}/train.json",
        "results/shards/{data}/test.json",
    output:
        "results/extractor/{data}/classifier.pt",
    log:
        "results/logs/extractor/{data}.log",
    benchmark:
        "results/benchmarks/extractor/{data}.tsv"
    threads: 2
    params:
        steps=lambda wc: _classifier_experiment(wc)["extractor"]["train_steps"],
        seed=lambda wc: _classifier_experiment(wc)["extractor"]["seed"],
    shell:
        "{PY} {SCRIPTS:q}/extractor.py classifier --images results/shards/{wildcards.data:q} --steps {params.steps}"
        " --seed {params.seed} --threads {threads} --out {output:q} > {log:q} 2>&1"


rule extractor_inception:
    input:
        lambda wc: [local_file(_inception_weights(), "extractor.weights")] if _inception_weights() else [],
    output:
        "results/extractor/inception/weights.pth",
    log:
        "results/logs/extractor/inception.log",
    benchmark:
        "results/benchmarks/extractor/inception.tsv"
    params:
        weights=lambda wc, input: ["--weights", input[0]] if input else [],
    shell:
        "{PY} {SCRIPTS:q}/extractor.py inception {params.weights:q} --out {output:q} > {log:q} 2>&1"


rule reference:
    input:
        unpack(lambda wc: _reference_inputs(wc, f"results/reference/{wc.ref}.json")),
    output:
        "results/reference/{ref}.json",
    log:
        "results/logs/reference/{ref}.log",
    benchmark:
        "results/benchmarks/reference/{ref}.tsv"
    params:
        args=lambda wc: reference_argv(_reference_experiment(f"results/reference/{wc.ref}.json")),
        kind=lambda wc: _reference_experiment(f"results/reference/{wc.ref}.json")["extractor"]["kind"],
    shell:
        "{PY} {SCRIPTS:q}/evaluate.py reference {params.args:q} --extractor {params.kind:q}"
        " --weights {input.weights:q} --cache-dir results/reference/cache --out {output:q} > {log:q} 2>&1"
