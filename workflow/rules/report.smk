# Stage 8: tables (CSV) and figures (PNG) from the evaluation results; all go into `snakemake --report`.
# A table target also makes its figures: FID versus NFE of its rows, and one strip of samples per row.
# Config text (labels, paper sources, titles) reaches the shell only through `:q` (shlex.quote, each item of a
# list on its own): a `$(...)`, a backtick or a quote in a label is an argument, never shell syntax.


include: "functions/report.smk"


rule table:
    input:
        evals=lambda wc: table_evaluations(wc.table),
        figure="results/figures/{table}_fid_vs_nfe.png",
        samples="results/figures/{table}_samples.png",
    output:
        report("results/table_{table}.csv", caption="../report/table.rst", category="Tables"),
    log:
        "results/logs/table/{table}.log",
    benchmark:
        "results/benchmarks/table/{table}.tsv"
    params:
        rows=lambda wc: table_rows(wc.table),
    shell:
        "{PY} {SCRIPTS:q}/report.py table --evals {input.evals:q} --rows {params.rows:q} --out {output:q} > {log:q} 2>&1"


rule table_figure:
    input:
        lambda wc: table_evaluations(wc.table),
    output:
        report("results/figures/{table}_fid_vs_nfe.png", caption="../report/fid_vs_nfe.rst", category="Figures"),
    log:
        "results/logs/figures/{table}_fid_vs_nfe.log",
    benchmark:
        "results/benchmarks/figures/{table}_fid_vs_nfe.tsv"
    params:
        title=lambda wc: f"{wc.table}: FID versus NFE",
    shell:
        "{PY} {SCRIPTS:q}/report.py fid-vs-nfe --evals {input:q} --title {params.title:q} --out {output:q} > {log:q} 2>&1"


rule table_samples:
    input:
        lambda wc: [f"results/samples/{s}/steps{n}/shard-0000.npz" for s, n in table_strips(wc.table)],
    output:
        report("results/figures/{table}_samples.png", caption="../report/sample_grid.rst", category="Figures"),
    log:
        "results/logs/figures/{table}_samples.log",
    benchmark:
        "results/benchmarks/figures/{table}_samples.tsv"
    params:
        labels=lambda wc: json.dumps([f"{SAMPLERS[s].get('label') or s}, {n} steps" for s, n in table_strips(wc.table)]),
    shell:
        "{PY} {SCRIPTS:q}/report.py rows-grid --shards {input:q} --labels-json {params.labels:q} --out {output:q}"
        " > {log:q} 2>&1"


rule sampler_figure:
    input:
        lambda wc: evaluations(wc.sampler),
    output:
        report(
            "results/figures/fid_vs_nfe/{sampler}.png",
            caption="../report/fid_vs_nfe.rst",
            category="Figures",
            subcategory="FID versus NFE per sampler",
        ),
    log:
        "results/logs/figures/fid_vs_nfe/{sampler}.log",
    benchmark:
        "results/benchmarks/figures/fid_vs_nfe/{sampler}.tsv"
    params:
        title=lambda wc: f"{wc.sampler}: FID versus NFE",
    shell:
        "{PY} {SCRIPTS:q}/report.py fid-vs-nfe --evals {input:q} --title {params.title:q} --out {output:q} > {log:q} 2>&1"


rule sample_grid:
    input:
        "results/samples/{sampler}/steps{steps}/shard-0000.npz",
    output:
        report(
            "results/figures/grids/{sampler}_steps{steps}.png",
            caption="../report/sample_grid.rst",
            category="Sample grids",
            subcategory="{sampler}",
        ),
    log:
        "results/logs/figures/grids/{sampler}_steps{steps}.log",
    benchmark:
        "results/benchmarks/figures/grids/{sampler}_steps{steps}.tsv"
    wildcard_constraints:
        steps=r"\d+",
    params:
        size=lambda wc: evaluation_of(wc.sampler)["grid_size"],
    shell:
        "{PY} {SCRIPTS:q}/report.py grid --shard {input:q} --size {params.size} --out {output:q} > {log:q} 2>&1"
