# Stage 1: external files. Dataset files come from their ordered mirrors (retries, resume, checksums);
# released weights and reference batches configured by URL are downloaded and verified (sha256 when
# known). Sources given as local paths are read in place.
from ucgm_core.data.datasets import get_dataset


def _remote_file(dataset, name):
    for f in get_dataset(dataset).files:
        if f.name == name:
            return f
    raise WorkflowError(f"dataset {dataset!r} has no file {name!r}")


def _download_args(wc):
    f = _remote_file(wc.dataset, wc.file)
    mirrors = experiment_for_data(wc.dataset)["data"]["mirrors"]
    urls = " ".join(f"--url {m}" for m in f.sources(mirrors))
    sums = (f" --sha256 {f.sha256}" if f.sha256 else "") + (f" --md5 {f.md5}" if f.md5 else "")
    return f"{urls} --name {f.name}{sums}"


rule download:
    output:
        "results/raw/{dataset}/{file}",
    log:
        "results/logs/download/{dataset}/{file}.log",
    benchmark:
        "results/benchmarks/download/{dataset}/{file}.tsv"
    params:
        args=_download_args,
    shell:
        "{PY} -m ucgm_core.data.download {params.args} --out-dir results/raw/{wildcards.dataset} > {log} 2>&1"


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
        url=lambda wc, output: FETCH[output[0]]["source"],
        sha256=lambda wc, output: f"--sha256 {FETCH[output[0]]['sha256']}" if FETCH[output[0]].get("sha256") else "",
        out_dir=lambda wc, output: os.path.dirname(output[0]),
    shell:
        "{PY} -m ucgm_core.data.download --url {params.url:q} --name {wildcards.file:q} {params.sha256}"
        " --out-dir {params.out_dir} > {log} 2>&1"
