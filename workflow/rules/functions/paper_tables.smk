# Functions of workflow/rules/paper_tables.smk (kept apart from its rules: snakemake --lint).


def _paper_table_references():
    """Paper table name -> its reference rows. Every `reference_rows` key must name a paper table of its file."""
    out = {t: [] for t in TABLES if PAPER_TABLE_NAME.match(t)}
    for exp_name, exp in WF.experiments.items():
        own = sorted(
            t
            for (kind, t), e in WF.experiment_of.items()
            if kind == "table" and e == exp_name and PAPER_TABLE_NAME.match(t)
        )
        for t, refs in (exp.get("reference_rows") or {}).items():
            if t not in own:
                raise WorkflowError(
                    f"{WF.files[exp_name]}: reference_rows.{t}: names no table paper<N>_<data> of "
                    f"this file; expected one of {own}"
                )
            out[t] = refs
    return out


def paper_table_name(wc):
    name = f"paper{wc.number}_{wc.variant}"
    if name not in PAPER_TABLE_REFERENCES:
        raise WorkflowError(
            f"results/table_{name}.csv: no table {name!r} in the config; paper tables are "
            f"{sorted(PAPER_TABLE_REFERENCES)}"
        )
    return name


def fig2_coords(panel):
    """Sampler -> the panel's coordinates of its rows, read from the configs (models.<m>.objective,
    samplers.<s>.options): lambda = consistency_ratio, transport and zeta = transport and enhanced_ratio,
    kappa = the UCGM-S extrapolation."""
    if panel not in TABLES:
        raise WorkflowError(
            f"{panel}: no table of that name; config/experiments/figures.yaml declares the Fig. 2 "
            f"panels {sorted(FIG2_PANELS)} as tables of samplers"
        )
    coords = {}
    for s in TABLES[panel]:
        spec = SAMPLERS[s]
        objective = MODELS[spec["model"]].get("objective")
        if spec["method"] != "ucgm" or objective is None:
            raise WorkflowError(
                f"tables.{panel}: sampler {s!r} has method {spec['method']!r} on model "
                f"{spec['model']!r}; expected UCGM-S (method ucgm) on a model trained with UCGM-T"
            )
        coords[s] = {
            "lambda": objective["consistency_ratio"],
            "transport": objective["transport"],
            "zeta": objective["enhanced_ratio"],
            "kappa": spec["options"].get("extrapolation", 0.0),
        }
    return json.dumps(coords, sort_keys=True)
