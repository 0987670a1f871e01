# Stage 1: external files. Dataset files come from their ordered mirrors (retries, resume, checksums);
# released weights and reference batches configured by URL are downloaded and verified: a file without a
# configured sha256 is refused unless download.allow_unverified is true, which records its first-seen sha256
# next to it (<file>.sha256) for the config. Sources given as local paths are read in place.
# No shell string is built from config text: workflow/scripts/download.py reads params and output itself.
from ucgm_core.data.datasets import get_dataset


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


rule download:
    output:
        "results/raw/{dataset}/{file}",
    log:
        "results/logs/download/{dataset}/{file}.log",
    benchmark:
        "results/benchmarks/download/{dataset}/{file}.tsv"
    params:
        urls=_dataset_urls,
        sha256=lambda wc: _remote_file(wc.dataset, wc.file).sha256,
        md5=lambda wc: _remote_file(wc.dataset, wc.file).md5,
        sha256_key=lambda wc: f"the catalogue entry of {wc.dataset} (ucgm_core/data/datasets.py)",
        settings=lambda wc: config["download"],
    script:
        "../scripts/download.py"


rule fetch:
    output:
        "results/downloads/{kind}/{key}/{file}",
    wildcard_constraints:
        kind="models|autoencoders|references",
    log:
        "results/logs/fetch/{kind}/{key}/{file}.log",
    benchmark:
        "results/benchmarks/fetch/{kind}/{key}/{file}.tsv"
    params:
        urls=lambda wc, output: [FETCH[output[0]]["source"]],
        sha256=lambda wc, output: FETCH[output[0]].get("sha256"),
        md5=None,
        sha256_key=_sha256_key,
        settings=lambda wc: config["download"],
    script:
        "../scripts/download.py"
