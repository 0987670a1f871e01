# Stage 5: few-step UCGM-T tuned from a checkpoint. The starting weights (init) and the teacher's weights
# (teacher, frozen when teacher_decay = 1) are configured separately; both default to the same model, which
# may be a model of this workflow, a snapshot "<model>@<step>" of one, or an imported pretrained network.
# The same job as `train` (train.py reads lambda, teacher and init from the spec); only its name, logs and
# default runtime differ.


use rule train as tune with:
    log:
        "results/logs/tune/{model}.log",
    benchmark:
        "results/benchmarks/tune/{model}.tsv"
    wildcard_constraints:
        model=models_where("tuned"),
    resources:
        gpu=lambda wc: model_resources(wc.model, "gpus", 1),
        runtime=lambda wc, attempt: int(60 * model_resources(wc.model, "hours", 12)) * attempt,
