# Stage 3: encode the training images with the autoencoder (plain and flipped), plus per-channel statistics
# (10,000 random training latents, as the original). One job per (autoencoder, data); with data.prep_jobs = K > 1,
# K jobs side by side (`part` = "parts/<k>-of-<K>/": a contiguous range of the image shards each, its part
# manifest and, as its stats.pt, its share of the 10,000 statistics samples) and latents_merge, which writes
# train.json and stats.pt from the parts. Latents, manifest and statistics are identical whatever K.


include: "functions/latents.smk"


rule latents:
    input:
        images="results/shards/{dataset}_{resolution}/train.json",
        weights=lambda wc: autoencoder_inputs(_latents_experiment(wc)),
    output:
        "results/latents/{autoencoder}/{dataset}_{resolution}/{part}stats.pt",
        "results/latents/{autoencoder}/{dataset}_{resolution}/{part}train.json",
    log:
        "results/logs/latents/{part}{autoencoder}/{dataset}_{resolution}.log",
    benchmark:
        "results/benchmarks/latents/{part}{autoencoder}/{dataset}_{resolution}.tsv"
    wildcard_constraints:
        autoencoder=r"[^/]+",
        resolution=r"\d+",
        part=PREP_PART,
    params:
        image_dir=lambda wc: f"results/shards/{wc.dataset}_{wc.resolution}",
        out_dir=lambda wc: f"results/latents/{wc.autoencoder}/{wc.dataset}_{wc.resolution}",
        ae_kwargs=lambda wc: autoencoder_kwargs(_latents_experiment(wc)),
        mode=_latents_mode_args,
    shell:
        "{PY} {SCRIPTS:q}/latents.py --image-dir {params.image_dir:q} --out-dir {params.out_dir:q}"
        " --autoencoder {wildcards.autoencoder:q} --ae-kwargs {params.ae_kwargs:q} --splits train"
        " {params.mode:q} > {log:q} 2>&1"


# train.json and stats.pt of latents prepared in parts come from the merge, never from one latents job
ruleorder: latents_merge > latents


rule latents_merge:
    input:
        manifests=lambda wc: _latent_parts(wc, "train.json"),
        stats=lambda wc: _latent_parts(wc, "stats.pt"),
    output:
        stats="results/latents/{latent_data}/stats.pt",
        manifest="results/latents/{latent_data}/train.json",
    log:
        "results/logs/latents_merge/{latent_data}.log",
    benchmark:
        "results/benchmarks/latents_merge/{latent_data}.tsv"
    wildcard_constraints:
        latent_data=one_of(LATENTS_IN_PARTS, "results/latents/"),
    threads: 1
    params:
        parts=lambda wc: LATENTS_IN_PARTS[f"results/latents/{wc.latent_data}"],
    shell:
        "{PY} {SCRIPTS:q}/latents.py --out-dir results/latents/{wildcards.latent_data:q} --splits train"
        " --merge-parts {input.manifests:q} --merge-stats {input.stats:q} --stats-out {output.stats:q} > {log:q} 2>&1"
