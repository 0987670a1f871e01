# Stage 4': released networks (REPA-E, REPA, LightningDiT, DDT, EDM2, EDM) converted into this project's
# checkpoint format, with the latent normalisation of their experiment; sampled and tuned like our own.


include: "functions/pretrained.smk"


rule pretrained:
    input:
        unpack(pretrained_inputs),
    output:
        "results/models/{model}/checkpoint.pt",
    log:
        "results/logs/pretrained/{model}.log",
    benchmark:
        "results/benchmarks/pretrained/{model}.tsv"
    wildcard_constraints:
        model=models_where("pretrained"),
    params:
        args=pretrained_args,
    shell:
        "{PY} {SCRIPTS:q}/pretrained.py --weights {input.weights:q} {params.args:q} --out {output:q} > {log:q} 2>&1"
