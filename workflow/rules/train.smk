# Stage 4: multi-step UCGM-T from scratch. The resumable state lives in results/state/<model>/ (not an
# output), so a killed job continues where it stopped; a changed spec starts a fresh state.


rule train:
    input:
        latents=f"{LATENTS}/train.json",
        stats=f"{LATENTS}/stats.pt",
        teacher=lambda wc: [checkpoint(MODELS[wc.model]["teacher"])] if MODELS[wc.model].get("teacher") else [],
    output:
        checkpoint="results/models/{model}/checkpoint.pt",
        loss=report("results/models/{model}/loss.csv", category="Training", subcategory="{model}"),
        curve=report("results/models/{model}/loss.png", caption="../report/loss.rst", category="Training",
                     subcategory="{model}"),
        grid=report("results/models/{model}/grid.png", caption="../report/train_grid.rst", category="Training",
                    subcategory="{model}"),
    wildcard_constraints:
        model=models_where(tuned=False),
    log:
        "results/logs/train/{model}.log",
    benchmark:
        "results/benchmarks/train/{model}.tsv"
    params:
        spec=lambda wc: model_spec(wc.model),
        teacher=lambda wc, input: f"--teacher {input.teacher[0]}" if input.teacher else "",
    threads: workflow.cores
    shell:
        "{PY} {SCRIPTS}/train.py --latents {LATENTS} --stats {input.stats} --spec {params.spec:q}"
        " {params.teacher} --out-dir results/models/{wildcards.model} --state-dir results/state/{wildcards.model}"
        " --threads {threads} > {log} 2>&1"
