# The paper's figures as targets (issue 14), each at two scales from the same rule:
#   results/figures/paper/<name>.png       paper scale (planned on SLURM where a figure needs trained models)
#   results/figures/paper_mini/<name>.png  the miniature, real on 2 CPU cores
# each with <name>.csv beside it (the plotted data). The closed-form figures (Fig. 7, Fig. 8) need no model,
# so both scales compute the same thing. Fig. 2, 3, 4 come from workflow/rules/paper_toy.smk, the paper's
# tables from workflow/rules/paper_tables.smk; the umbrella targets paper_mini and paper_scale collect them.
# Fig. 3 at paper scale is the same 2-D toy run as its miniature (the paper's figure is a toy; rule
# paper_toy_fig3 serves both scales); Fig. 4 at paper scale is workflow/rules/paper_fig4.smk (the Fig. 2a
# ImageNet models, one GPU job).

PAPER_FIGURES = [
    "fig2a_lambda_steps",
    "fig2b_zeta_transport",
    "fig2c_kappa_steps",
    "fig3_toy2d",
    "fig4_xhat_per_lambda",
    "fig7_pf_ode_1d",
    "fig8_beta",
]
PAPER_TABLES = [
    "table_paper2_in1k256",
    "table_paper2_in1k512",
    "table_paper3_in1k256",
    "table_paper3_in1k512",
    "table_paper7_cifar10",
]


# Seconds of work, no GPU: run beside Snakemake, never as cluster jobs (see workflow/rules/cluster.smk).
localrules:
    paper_fig7,
    paper_fig8,
    paper_mini,
    paper_scale,


include: "functions/paper_figures.smk"


rule paper_fig7:
    output:
        **paper_figure_outputs(
            "fig7_pf_ode_1d", "../report/paper_fig7.rst", "Fig. 7", "1-D probability-flow ODE trajectories"
        ),
    log:
        "results/logs/paper_figures/{scale}/fig7_pf_ode_1d.log",
    benchmark:
        "results/benchmarks/paper_figures/{scale}/fig7_pf_ode_1d.tsv"
    wildcard_constraints:
        scale="paper|paper_mini",
    params:
        figure="fig7_pf_ode_1d",
    script:
        "../scripts/paper_figure.py"


rule paper_fig8:
    output:
        **paper_figure_outputs("fig8_beta", "../report/paper_fig8.rst", "Fig. 8", "Beta densities"),
    log:
        "results/logs/paper_figures/{scale}/fig8_beta.log",
    benchmark:
        "results/benchmarks/paper_figures/{scale}/fig8_beta.tsv"
    wildcard_constraints:
        scale="paper|paper_mini",
    params:
        figure="fig8_beta",
    script:
        "../scripts/paper_figure.py"


# Umbrella targets: `snakemake paper_mini` builds every miniature figure for real on the CPU;
# `snakemake -n --profile profiles/slurm paper_scale` plans every figure and table at paper scale. Each writes
# a manifest of what it collected (path, bytes, sha256).
rule paper_mini:
    input:
        expand("results/figures/paper_mini/{name}.png", name=PAPER_FIGURES),
    output:
        "results/paper_mini_manifest.tsv",
    log:
        "results/logs/paper_figures/paper_mini.log",
    benchmark:
        "results/benchmarks/paper_figures/paper_mini.tsv"
    shell:
        "{PY} {SCRIPTS:q}/paper_figure.py manifest --out {output} {input} > {log} 2>&1"


rule paper_scale:
    input:
        expand("results/figures/paper/{name}.png", name=PAPER_FIGURES),
        expand("results/{table}.csv", table=PAPER_TABLES),
    output:
        "results/paper_scale_manifest.tsv",
    log:
        "results/logs/paper_figures/paper_scale.log",
    benchmark:
        "results/benchmarks/paper_figures/paper_scale.tsv"
    shell:
        "{PY} {SCRIPTS:q}/paper_figure.py manifest --out {output} {input} > {log} 2>&1"
