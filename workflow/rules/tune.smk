# Stage 5: few-step UCGM-T tuned from a checkpoint. The starting weights (init) and the teacher's weights
# (teacher, frozen when teacher_decay = 1) are configured separately; both default to the same model.


rule tune:
    input:
        latents=f"{LATENTS}/train.json",
        stats=f"{LATENTS}/stats.pt",
        init=lambda wc: checkpoint(MODELS[wc.model]["init"]),
        teacher=lambda wc: checkpoint(MODELS[wc.model].get("teacher") or MODELS[wc.model]["init"]),
    output:
        checkpoint="results/models/{model}/checkpoint.pt",
        loss=report("results/models/{model}/loss.csv", category="Training", subcategory="{model}"),
        curve=report("results/models/{model}/loss.png", caption="../report/loss.rst", category="Training",
                     subcategory="{model}"),
        grid=report("results/models/{model}/grid.png", caption="../report/train_grid.rst", category="Training",
                    subcategory="{model}"),
    wildcard_constraints:
        model=models_where(tuned=True),
    log:
        "results/logs/tune/{model}.log",
    benchmark:
        "results/benchmarks/tune/{model}.tsv"
    params:
        spec=lambda wc: model_spec(wc.model),
    threads: workflow.cores
    shell:
        "{PY} {SCRIPTS}/train.py --latents {LATENTS} --stats {input.stats} --spec {params.spec:q}"
        " --init {input.init} --teacher {input.teacher} --out-dir results/models/{wildcards.model}"
        " --state-dir results/state/{wildcards.model} --threads {threads} > {log} 2>&1"
