# Cluster execution (profiles/slurm): the rules below run on the machine that runs Snakemake, never as
# cluster jobs. They take seconds and no GPU (tables, figures, sample grids), or need the internet, which
# compute nodes often lack (download; the Inception weights when no local file is configured). Every other
# rule is submitted with the resources the profile gives it.
localrules:
    download,
    extractor_inception,
    table,
    table_figure,
    sampler_figure,
    sample_grid,
