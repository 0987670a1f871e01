# Stage 1: external files. Dataset files come from their ordered mirrors (retries, resume, checksums);
# released weights and reference batches configured by URL are downloaded and verified: a file without a
# configured sha256 is refused unless download.allow_unverified is true, which records its first-seen sha256
# next to it (<file>.sha256) for the config. Sources given as local paths are read in place.
# No shell string is built from config text: workflow/scripts/download.py reads params and output itself.
from ucgm_core.data.datasets import get_dataset


include: "functions/download.smk"


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
    log:
        "results/logs/fetch/{kind}/{key}/{file}.log",
    benchmark:
        "results/benchmarks/fetch/{kind}/{key}/{file}.tsv"
    wildcard_constraints:
        kind="models|autoencoders|references",
    params:
        urls=lambda wc, output: [FETCH[output[0]]["source"]],
        sha256=lambda wc, output: FETCH[output[0]].get("sha256"),
        md5=None,
        sha256_key=_sha256_key,
        settings=lambda wc: config["download"],
    script:
        "../scripts/download.py"
