# Stage 8: tables (CSV) and figures (PNG) from the evaluation results; all go into `snakemake --report`.


rule table:
    input:
        lambda wc: [e for s in config["tables"][wc.table] for e in evaluations(s)],
    output:
        report("results/table_{table}.csv", caption="../report/table.rst", category="Tables"),
    log:
        "results/logs/table/{table}.log",
    benchmark:
        "results/benchmarks/table/{table}.tsv"
    shell:
        "{PY} {SCRIPTS}/report.py table --evals {input} --out {output} > {log} 2>&1"


rule table_figure:
    input:
        lambda wc: [e for s in config["tables"][wc.table] for e in evaluations(s)],
    output:
        report("results/figures/{table}_fid_vs_nfe.png", caption="../report/fid_vs_nfe.rst", category="Figures"),
    log:
        "results/logs/figures/{table}_fid_vs_nfe.log",
    benchmark:
        "results/benchmarks/figures/{table}_fid_vs_nfe.tsv"
    params:
        title=lambda wc: f"{wc.table}: FID versus NFE",
    shell:
        "{PY} {SCRIPTS}/report.py fid-vs-nfe --evals {input} --title {params.title:q} --out {output} > {log} 2>&1"


rule sampler_figure:
    input:
        lambda wc: evaluations(wc.sampler),
    output:
        report("results/figures/fid_vs_nfe/{sampler}.png", caption="../report/fid_vs_nfe.rst", category="Figures",
               subcategory="FID versus NFE per sampler"),
    log:
        "results/logs/figures/fid_vs_nfe/{sampler}.log",
    benchmark:
        "results/benchmarks/figures/fid_vs_nfe/{sampler}.tsv"
    params:
        title=lambda wc: f"{wc.sampler}: FID versus NFE",
    shell:
        "{PY} {SCRIPTS}/report.py fid-vs-nfe --evals {input} --title {params.title:q} --out {output} > {log} 2>&1"


rule sample_grid:
    input:
        "results/samples/{sampler}/steps{steps}/shard-0000.npz",
    output:
        report("results/figures/grids/{sampler}_steps{steps}.png", caption="../report/sample_grid.rst",
               category="Sample grids", subcategory="{sampler}"),
    wildcard_constraints:
        steps=r"\d+",
    log:
        "results/logs/figures/grids/{sampler}_steps{steps}.log",
    benchmark:
        "results/benchmarks/figures/grids/{sampler}_steps{steps}.tsv"
    params:
        size=EVAL["grid_size"],
    shell:
        "{PY} {SCRIPTS}/report.py grid --shard {input} --size {params.size} --out {output} > {log} 2>&1"
