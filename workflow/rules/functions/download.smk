# Functions of workflow/rules/download.smk (kept apart from its rules: snakemake --lint).


def _remote_file(dataset, name):
    for f in get_dataset(dataset).files:
        if f.name == name:
            return f
    raise WorkflowError(f"dataset {dataset!r} has no file {name!r}; expected one of "
                        f"{[f.name for f in get_dataset(dataset).files]}")


def _dataset_urls(wc):
    """The catalogue's mirrors of one raw file, the experiment's data.mirrors first."""
    return _remote_file(wc.dataset, wc.file).sources(experiment_for_data(wc.dataset)["data"]["mirrors"])


def _sha256_key(wc, output):
    """Where the sha256 of a fetched file belongs in the config (named by the refusal and the first-seen hash)."""
    if wc.kind == "models":
        return f"models.{wc.key}.pretrained.sha256 in {WF.files[WF.experiment_of[('model', wc.key)]]}"
    if wc.kind == "autoencoders":
        files = [str(WF.files[n]) for n, e in WF.experiments.items() if wc.key in (e.get("autoencoders") or {})]
        return f"autoencoders.{wc.key}.sha256 in {', '.join(files)}"
    files = [str(WF.files[n]) for n, e in WF.experiments.items() if (e.get("evaluation") or {}).get("reference_batch")
             and fetched("references", reference_batch_key(e["evaluation"]["reference_batch"]),
                         e["evaluation"]["reference_batch"]) == output[0]]
    return f"evaluation.reference_batch.sha256 in {', '.join(files)}"
