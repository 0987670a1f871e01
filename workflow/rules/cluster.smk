# Cluster execution (profiles/slurm): the rules below run on the machine that runs Snakemake, never as
# cluster jobs. They take seconds and no GPU (tables, figures, sample grids, snapshot copies), or need the
# internet, which compute nodes often lack (dataset and weight downloads; the Inception weights when no local
# file is configured). Every other rule is submitted with the resources the profile and the config give it.
localrules:
    download,
    fetch,
    extractor_inception,
    snapshot,
    table,
    table_figure,
    table_samples,
    sampler_figure,
    sample_grid,
