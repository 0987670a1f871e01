# Functions of workflow/rules/paper_figures.smk (kept apart from its rules: snakemake --lint).


def paper_figure_outputs(name, caption, subcategory, title):
    """The PNG and CSV of one paper figure, both in the report under "Paper figures" / ``subcategory``."""
    labels = lambda kind: {"figure": title, "scale": "{scale}", "file": kind}
    return dict(
        png=report(
            f"results/figures/{{scale}}/{name}.png",
            caption=caption,
            category="Paper figures",
            subcategory=subcategory,
            labels=labels("plot (PNG)"),
        ),
        csv=report(
            f"results/figures/{{scale}}/{name}.csv",
            caption=caption,
            category="Paper figures",
            subcategory=subcategory,
            labels=labels("data (CSV)"),
        ),
    )
