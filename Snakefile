# UCGM pipeline: download -> shards -> latents -> train -> tune -> sample -> evaluate -> tables and figures.
# One .smk per stage in workflow/rules; the config is validated against workflow/schemas/ before any job.
configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/shards.smk"
include: "workflow/rules/latents.smk"
include: "workflow/rules/extractor.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/pretrained.smk"
include: "workflow/rules/tune.smk"
include: "workflow/rules/ema_select.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/paper_figures.smk"
include: "workflow/rules/paper_tables.smk"
include: "workflow/rules/paper_toy.smk"
include: "workflow/rules/paper_fig4.smk"
include: "workflow/rules/cluster.smk"


rule all:
    default_target: True
    input:
        all_targets(),
