# Functions of workflow/rules/report.smk (kept apart from its rules: snakemake --lint).


def table_rows(table):
    """Row labels and the paper's numbers, from the config (not evaluation inputs: editing them reruns
    only the table)."""
    return json.dumps(
        {s: {"label": SAMPLERS[s].get("label"), "paper": SAMPLERS[s].get("paper", [])} for s in TABLES[table]},
        sort_keys=True,
    )


def table_strips(table):
    return [(s, n) for s in TABLES[table] for n in SAMPLERS[s]["steps"]]
