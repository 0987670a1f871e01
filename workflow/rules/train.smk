# Stage 4: multi-step UCGM-T from scratch. The resumable state lives in results/state/<model>/ (not an
# output), so a killed job continues where it stopped; a changed spec starts a fresh state. With
# train.gpus > 1 the job runs one process per GPU under torchrun (the global batch is unchanged). Arguments
# are lists quoted item by item (`:q`): no config text becomes shell syntax.


include: "functions/train.smk"


TRAIN_OUTPUTS = {
    "checkpoint": "results/models/{model}/checkpoint.pt",
    "loss": report("results/models/{model}/loss.csv", category="Training", subcategory="{model}"),
    "curve": report(
        "results/models/{model}/loss.png", caption="../report/loss.rst", category="Training", subcategory="{model}"
    ),
    "grid": report(
        "results/models/{model}/grid.png",
        caption="../report/train_grid.rst",
        category="Training",
        subcategory="{model}",
    ),
}


rule train:
    input:
        unpack(training_inputs),
    output:
        **TRAIN_OUTPUTS,
    log:
        "results/logs/train/{model}.log",
    benchmark:
        "results/benchmarks/train/{model}.tsv"
    wildcard_constraints:
        model=models_where("trained"),
    # the chain train -> snapshot -> tune is the DAG's longest path: its jobs go before ready samples
    priority: 1
    threads: workflow.cores
    resources:
        gpu=lambda wc: model_resources(wc.model, "gpus", 1),
        runtime=lambda wc, attempt: int(60 * model_resources(wc.model, "hours", 24)) * attempt,
    params:
        spec=lambda wc: model_spec(wc.model),
        args=training_args,
        launcher=launcher,
    shell:
        "{params.launcher:q} {SCRIPTS:q}/train.py {params.args:q} --spec {params.spec:q}"
        " --out-dir results/models/{wildcards.model:q} --state-dir results/state/{wildcards.model:q}"
        " --threads {threads} > {log:q} 2>&1"


rule snapshot:
    """A checkpoint kept during a model's training (train.snapshots), e.g. the init of a few-step model."""
    input:
        "results/models/{model}/checkpoint.pt",
    output:
        "results/models/{model}/snapshots/step-{step}.pt",
    log:
        "results/logs/snapshot/{model}/step-{step}.log",
    benchmark:
        "results/benchmarks/snapshot/{model}/step-{step}.tsv"
    wildcard_constraints:
        step=r"\d{7}",
    priority: 1
    shell:
        "{PY} {SCRIPTS:q}/snapshot.py --checkpoint {input:q} --step {wildcards.step} --out {output:q} > {log:q} 2>&1"
