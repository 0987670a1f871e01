# Stage 5: few-step UCGM-T tuned from a checkpoint. The starting weights (init) and the teacher's weights
# (teacher, frozen when teacher_decay = 1) are configured separately; both default to the same model, which
# may be a model of this workflow, a snapshot "<model>@<step>" of one, or an imported pretrained network.


rule tune:
    input:
        unpack(training_inputs),
    output:
        **TRAIN_OUTPUTS,
    wildcard_constraints:
        model=models_where("tuned"),
    log:
        "results/logs/tune/{model}.log",
    benchmark:
        "results/benchmarks/tune/{model}.tsv"
    params:
        spec=lambda wc: model_spec(wc.model),
        args=training_args,
        launcher=launcher,
    threads: workflow.cores
    resources:
        gpu=lambda wc: model_resources(wc.model, "gpus", 1),
        runtime=lambda wc, attempt: int(60 * model_resources(wc.model, "hours", 12)) * attempt,
    shell:
        "{params.launcher:q} {SCRIPTS}/train.py {params.args:q} --spec {params.spec:q}"
        " --out-dir results/models/{wildcards.model:q} --state-dir results/state/{wildcards.model:q}"
        " --threads {threads} > {log:q} 2>&1"
