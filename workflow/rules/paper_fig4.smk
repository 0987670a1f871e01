# The paper's Fig. 4 at paper scale (results/figures/paper/fig4_xhat_per_lambda.{png,csv}): x_hat along one
# 60-step UCGM-S run per lambda in {0, 0.5, 1} from the same noise, TiT-XL/1 on VA-VAE latents, ImageNet 256
# (ucgm_core/figures_paper/xhat.py). The models are Fig. 2a's (config/experiments/in1k256_vavae.yaml):
# each lambda's sampler below names its model, and its options (time warp, end gaps, order, kappa) are taken
# as they are, with stochasticity set to 0 so that every run keeps the shared noise. The miniature
# (results/figures/paper_mini/...) is workflow/rules/paper_toy.smk's rule paper_toy_fig4.

# Run length, shown steps and runs per lambda: config key `paper_fig4` (steps 60, the paper's run length;
# columns 8, x_hat at 8 evenly spaced steps, the CSV holding the same steps; images 1, as the paper shows).
FIG4_SAMPLERS = {0.0: "fig2a_lambda000", 0.5: "fig2a_lambda050", 1.0: "fig2a_lambda100"}


include: "functions/paper_fig4.smk"


rule paper_fig4_xhat:
    input:
        unpack(fig4_inputs),
    output:
        png=report(
            "results/figures/paper/fig4_xhat_per_lambda.png",
            caption="../report/paper_fig4_paper.rst",
            category="Paper figures",
            subcategory="Fig. 4",
            labels={"figure": "Fig. 4", "scale": "paper", "file": "plot (PNG)"},
        ),
        csv=report(
            "results/figures/paper/fig4_xhat_per_lambda.csv",
            caption="../report/paper_fig4_paper.rst",
            category="Paper figures",
            subcategory="Fig. 4",
            labels={"figure": "Fig. 4", "scale": "paper", "file": "data (CSV)"},
        ),
    log:
        "results/logs/paper_figures/paper/fig4_xhat_per_lambda.log",
    benchmark:
        "results/benchmarks/paper_figures/paper/fig4_xhat_per_lambda.tsv"
    threads: 1
    resources:  # as a sample shard job (profiles/slurm set-resources.sample), one GPU
        gpu=1,
        cpus_per_gpu=8,
        mem_mb=32000,
        runtime=lambda wc, attempt: 60 * attempt,
    params:
        lambdas=list(FIG4_SAMPLERS),
        # functions, not values: a config without the paper experiments (the smoke test's) must still parse
        options=lambda wc: json.dumps([SAMPLERS[s]["options"] for s in FIG4_SAMPLERS.values()], sort_keys=True),
        ae_kwargs=lambda wc: autoencoder_kwargs(sampler_experiment(FIG4_SAMPLERS[0.0])),
        seed=lambda wc: evaluation_of(FIG4_SAMPLERS[0.0])["seed"],
        num_images=lambda wc: fig4_setting("images"),
        steps=lambda wc: fig4_setting("steps"),
        columns=lambda wc: fig4_setting("columns"),
    script:
        "../scripts/paper_fig4.py"
