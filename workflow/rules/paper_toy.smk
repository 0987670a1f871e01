# Paper figures, miniature scale: Fig. 2a, 2b, 2c, 3 and 4 from small MLPs trained on 2-D toy data with
# the real UCGM-T objective and sampled with the real UCGM-S (ucgm_core/figures_paper/toy_runs.py).
# Each figure is results/figures/paper_mini/<name>.png with <name>.csv beside it (the same columns as the
# paper-scale results/figures/paper/<name>.csv of workflow/rules/paper_figures.smk). Models are cached one
# file each in results/paper_mini/toy/ and shared by the figures. Budgets: config key `paper_toy`.
from ucgm_core.figures_paper.toy_runs import (
    FIGURE_FILES,
    MODEL_KEY_PATTERN,
    TrainSettings,
    figure_models,
    parse_model_key,
)

TOY_DIR = "results/paper_mini/toy"


include: "functions/paper_toy.smk"


# A "-tuned" model (Fig. 3's lambda = 1) takes its lambda = 0 model as input: it starts from it and keeps it
# as its frozen teacher.
rule paper_toy_model:
    input:
        unpack(toy_parent),
    output:
        f"{TOY_DIR}/{{toymodel}}.pt",
    log:
        "results/logs/paper_toy/model_{toymodel}.log",
    benchmark:
        "results/benchmarks/paper_toy/model_{toymodel}.tsv"
    wildcard_constraints:
        toymodel=MODEL_KEY_PATTERN,
    threads: 1
    params:
        task="train",
        settings=lambda wc: toy_settings(train_only=True),
    script:
        "../scripts/paper_toy.py"


rule paper_toy_fig2a:
    input:
        toy_models("fig2a"),
    output:
        **toy_figure_outputs("fig2a", "Fig. 2a"),
    log:
        "results/logs/paper_toy/{scale}_fig2a.log",
    benchmark:
        "results/benchmarks/paper_toy/{scale}_fig2a.tsv"
    wildcard_constraints:
        scale="paper_mini",
    threads: 1
    params:
        task="figure",
        figure="fig2a",
        settings=lambda wc: toy_settings(),
    script:
        "../scripts/paper_toy.py"


rule paper_toy_fig2b:
    input:
        toy_models("fig2b"),
    output:
        **toy_figure_outputs("fig2b", "Fig. 2b"),
    log:
        "results/logs/paper_toy/{scale}_fig2b.log",
    benchmark:
        "results/benchmarks/paper_toy/{scale}_fig2b.tsv"
    wildcard_constraints:
        scale="paper_mini",
    threads: 1
    params:
        task="figure",
        figure="fig2b",
        settings=lambda wc: toy_settings(),
    script:
        "../scripts/paper_toy.py"


rule paper_toy_fig2c:
    input:
        toy_models("fig2c"),
    output:
        **toy_figure_outputs("fig2c", "Fig. 2c"),
    log:
        "results/logs/paper_toy/{scale}_fig2c.log",
    benchmark:
        "results/benchmarks/paper_toy/{scale}_fig2c.tsv"
    wildcard_constraints:
        scale="paper_mini",
    threads: 1
    params:
        task="figure",
        figure="fig2c",
        settings=lambda wc: toy_settings(),
    script:
        "../scripts/paper_toy.py"


# Fig. 3 is a 2-D toy in the paper itself, so its paper scale (results/figures/paper/) is this same toy run.
rule paper_toy_fig3:
    input:
        toy_models("fig3"),
    output:
        **toy_figure_outputs("fig3", "Fig. 3", scale_label="{scale} (2-D toy, the paper's own scale)"),
    log:
        "results/logs/paper_toy/{scale}_fig3.log",
    benchmark:
        "results/benchmarks/paper_toy/{scale}_fig3.tsv"
    wildcard_constraints:
        scale="paper|paper_mini",
    threads: 1
    params:
        task="figure",
        figure="fig3",
        settings=lambda wc: toy_settings(),
    script:
        "../scripts/paper_toy.py"


rule paper_toy_fig4:
    input:
        toy_models("fig4"),
    output:
        **toy_figure_outputs("fig4", "Fig. 4"),
    log:
        "results/logs/paper_toy/{scale}_fig4.log",
    benchmark:
        "results/benchmarks/paper_toy/{scale}_fig4.tsv"
    wildcard_constraints:
        scale="paper_mini",
    threads: 1
    params:
        task="figure",
        figure="fig4",
        settings=lambda wc: toy_settings(),
    script:
        "../scripts/paper_toy.py"


rule paper_toy_figures:
    """The five trained-toy miniatures (a part of the miniature umbrella target)."""
    input:
        [f"results/figures/paper_mini/{FIGURE_FILES[f]}.{ext}" for f in FIGURE_FILES for ext in ("png", "csv")],
