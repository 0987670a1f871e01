# Functions of workflow/rules/shards.smk (kept apart from its rules: snakemake --lint).


def _shards_experiment(wc):
    """The data settings of these shards as {"data": settings} (one declaration, no experiment picked)."""
    return {"data": data_settings(wc.dataset, wc.resolution)}


def _shards_part_args(wc, output):
    part = prep_part(wc.part)
    return [] if part is None else ["--part", str(part[0]), "--parts", str(part[1]), "--part-manifest", output[0]]
