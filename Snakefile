# UCGM pipeline. Stages: workflow/rules/<stage>.smk. So far: download -> shards -> latents.
configfile: "config/config.yaml"


include: "workflow/rules/data.smk"


rule all:
    input:
        f"results/latents/{config['autoencoder']}/{config['dataset']}_{config['resolution']}/stats.pt",
