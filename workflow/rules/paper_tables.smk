# The paper's own tables (2, 3, 7) and its Fig. 2 at paper scale (issue 14).
#   results/table_paper<N>_<data>.csv      our rows of the paper's Table N beside its NFE and FID, then the
#                                          competitors' numbers it prints (reference_rows, kind = reference)
#   results/figures/paper/<fig2 panel>.csv the evaluations of a Fig. 2 panel at the figure's coordinates
#   results/figures/paper/<fig2 panel>.png plotted by ucgm_core.figures_paper.plots (shared with the miniature)
# The tables and panels are declared in config/experiments/tables.yaml and figures.yaml; the miniature of Fig. 2
# (scale paper_mini, toy data) is workflow/rules/paper_toy.smk; the umbrella paper_scale is in paper_figures.smk.
import re

PAPER_TABLE_NAME = re.compile(r"paper(\d+)_([A-Za-z0-9]+)$")
FIG2_PANELS = {
    "fig2a_lambda_steps": "Fig. 2a: FID over lambda x steps (TiT-XL/1, VA-VAE)",
    "fig2b_zeta_transport": "Fig. 2b: FID per transport, zeta 0.45 and 0 (TiT-B/2, SD-VAE)",
    "fig2c_kappa_steps": "Fig. 2c: FID against steps per kappa (TiT-XL/1, VA-VAE)",
}


include: "functions/paper_tables.smk"


PAPER_TABLE_REFERENCES = _paper_table_references()


# Config text reaches the shell only through `:q` (as in report.smk).
# Seconds of work on the evaluation JSONs, no GPU: run beside Snakemake (see workflow/rules/cluster.smk).
localrules:
    paper_table,
    paper_fig2_data,
    paper_fig2_plot,


# Rule `table` (report.smk) would also match results/table_paper<N>_<data>.csv; this one adds the reference rows.
ruleorder: paper_table > table


rule paper_table:
    input:
        evals=lambda wc: table_evaluations(paper_table_name(wc)),
        figure="results/figures/paper{number}_{variant}_fid_vs_nfe.png",
        samples="results/figures/paper{number}_{variant}_samples.png",
    output:
        report(
            "results/table_paper{number}_{variant}.csv",
            caption="../report/paper_table.rst",
            category="Paper tables",
            subcategory="Table {number}",
            labels={"table": "Table {number}", "data": "{variant}", "file": "table (CSV)"},
        ),
    log:
        "results/logs/paper_tables/paper{number}_{variant}.log",
    benchmark:
        "results/benchmarks/paper_tables/paper{number}_{variant}.tsv"
    wildcard_constraints:
        number=r"\d+",
        variant=r"[A-Za-z0-9]+",
    params:
        rows=lambda wc: table_rows(paper_table_name(wc)),
        references=lambda wc: json.dumps(PAPER_TABLE_REFERENCES[paper_table_name(wc)], sort_keys=True),
    shell:
        "{PY} {SCRIPTS:q}/paper_tables.py table --evals {input.evals:q} --rows {params.rows:q} "
        "--references {params.references:q} --out {output:q} > {log:q} 2>&1"


rule paper_fig2_data:
    input:
        lambda wc: table_evaluations(wc.panel),
    output:
        report(
            "results/figures/{scale}/{panel}.csv",
            caption="../report/paper_tables_fig2.rst",
            category="Paper figures",
            subcategory="Fig. 2",
            labels={"figure": "{panel}", "scale": "{scale}", "file": "data (CSV)"},
        ),
    log:
        "results/logs/paper_tables/{scale}/{panel}_csv.log",
    benchmark:
        "results/benchmarks/paper_tables/{scale}/{panel}_csv.tsv"
    wildcard_constraints:
        scale="paper",
        panel="|".join(FIG2_PANELS),
    params:
        coords=lambda wc: fig2_coords(wc.panel),
    shell:
        "{PY} {SCRIPTS:q}/paper_tables.py fig2 --figure {wildcards.panel} --evals {input:q} "
        "--coords {params.coords:q} --out {output:q} > {log:q} 2>&1"


rule paper_fig2_plot:
    input:
        "results/figures/{scale}/{panel}.csv",
    output:
        report(
            "results/figures/{scale}/{panel}.png",
            caption="../report/paper_tables_fig2.rst",
            category="Paper figures",
            subcategory="Fig. 2",
            labels={"figure": "{panel}", "scale": "{scale}", "file": "plot (PNG)"},
        ),
    log:
        "results/logs/paper_tables/{scale}/{panel}_png.log",
    benchmark:
        "results/benchmarks/paper_tables/{scale}/{panel}_png.tsv"
    wildcard_constraints:
        scale="paper",
        panel="|".join(FIG2_PANELS),
    shell:
        "{PY} {SCRIPTS:q}/paper_tables.py plot --figure {wildcards.panel} --csv {input:q} --out {output:q} > {log:q} 2>&1"
