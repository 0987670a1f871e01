# Stage 5b (opt-in, models.<name>.ema_select): after the model's train/tune job, each candidate EMA length is
# reconstructed from the run's post-hoc EMA snapshots, sampled (same per-image seeds for all) and scored by FID
# with the model's extractor and reference; the best becomes checkpoint_ema.pt, which the model's samplers
# (and a tuned model's teacher) read instead of checkpoint.pt. Config text reaches the shell only through `:q`.


include: "functions/ema_select.smk"


rule ema_select:
    input:
        unpack(ema_select_inputs),
    output:
        checkpoint="results/models/{model}/checkpoint_ema.pt",
        table="results/models/{model}/ema_select.csv",
        summary="results/models/{model}/ema_select.json",
        figure=report("results/figures/{model}_fid_vs_ema.png", category="Training", subcategory="{model}"),
    log:
        "results/logs/ema_select/{model}.log",
    benchmark:
        "results/benchmarks/ema_select/{model}.tsv"
    wildcard_constraints:
        model=models_with_ema_select(),
    threads: workflow.cores
    params:
        args=ema_select_args,
    shell:
        "{PY} {SCRIPTS:q}/ema_select.py --checkpoint {input.checkpoint:q} {params.args:q} --weights {input.weights:q}"
        " --cache-dir results/reference/cache --out-checkpoint {output.checkpoint:q} --out-table {output.table:q}"
        " --out-figure {output.figure:q} --out-summary {output.summary:q} --threads {threads} > {log:q} 2>&1"
