# Functions of workflow/rules/paper_toy.smk (kept apart from its rules: snakemake --lint).


def toy_settings(train_only=False):
    """The config's `paper_toy` mapping as JSON (training keys only for the model rule: evaluation
    budgets do not retrain)."""
    cfg = dict(WF.experiments[WF.main].get("paper_toy", {}))
    if train_only:
        cfg = {k: v for k, v in cfg.items() if k in TrainSettings.__dataclass_fields__}
    return json.dumps(cfg, sort_keys=True)


def toy_parent(wildcards):
    """The input of a toy model: {"parent": its lambda = 0 model's file} for a tuned model, else nothing."""
    parent = parse_model_key(wildcards.toymodel).parent
    return {} if parent is None else {"parent": f"{TOY_DIR}/{parent.key}.pt"}


def toy_models(figure):
    return [f"{TOY_DIR}/{key}.pt" for key in figure_models(figure)]


def toy_figure_outputs(figure, subcategory, scale_label="miniature (2-D toy)"):
    name = FIGURE_FILES[figure]
    labels = {"figure": subcategory, "scale": scale_label, "file": name}
    return {
        "png": report(
            f"results/figures/{{scale}}/{name}.png",
            caption=f"../report/paper_{figure}.rst",
            category="Paper figures",
            subcategory=subcategory,
            labels=dict(labels, kind="plot"),
        ),
        "csv": report(
            f"results/figures/{{scale}}/{name}.csv",
            caption=f"../report/paper_{figure}.rst",
            category="Paper figures",
            subcategory=subcategory,
            labels=dict(labels, kind="data"),
        ),
    }
