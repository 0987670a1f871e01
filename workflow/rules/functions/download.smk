# Functions of workflow/rules/download.smk (kept apart from its rules: snakemake --lint).


def _remote_file(dataset, name):
    for f in get_dataset(dataset).files:
        if f.name == name:
            return f
    raise WorkflowError(
        f"dataset {dataset!r} has no file {name!r}; expected one of " f"{[f.name for f in get_dataset(dataset).files]}"
    )


def _dataset_urls(wc):
    """The catalogue's mirrors of one raw file, the declared datasets.<name>.mirrors first."""
    if wc.dataset not in WF.mirrors:
        raise WorkflowError(f"no experiment has data {wc.dataset}; expected one of {sorted(WF.mirrors)}")
    return _remote_file(wc.dataset, wc.file).sources(dataset_mirrors(wc.dataset))


def _sha256_key(wc, output):
    """Where the sha256 of a fetched file belongs in the config (named by the refusal and the first-seen hash)."""
    if wc.kind == "models":
        return f"models.{wc.key}.pretrained.sha256 in {WF.files[WF.experiment_of[('model', wc.key)]]}"
    if wc.kind == "autoencoders":
        return f"autoencoders.{wc.key}.sha256 in {WF.declared_in[('autoencoders', wc.key)]}"
    users = [
        n
        for n, e in WF.experiments.items()
        if reference_batch(e) and fetched("references", *reference_batch(e)) == output[0]
    ]
    if any(isinstance(WF.experiments[n]["evaluation"]["reference_batch"], str) for n in users):
        return f"references.{wc.key}.sha256 in {WF.declared_in[('references', wc.key)]}"
    return f"evaluation.reference_batch.sha256 in {', '.join(str(WF.files[n]) for n in users)}"
