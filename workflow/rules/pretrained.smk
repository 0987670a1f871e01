# Stage 4': released networks (REPA-E, REPA, LightningDiT, DDT, EDM2, EDM) converted into this project's
# checkpoint format, with the latent normalisation of their experiment; sampled and tuned like our own.


def pretrained_inputs(wc):
    exp = model_experiment(wc.model)
    out = {"weights": source_file("models", wc.model, MODELS[wc.model]["pretrained"],
                                  f"models.{wc.model}.pretrained.source")}
    if needs_latent_stats(exp):
        out["stats"] = f"{latents_dir(exp)}/stats.pt"
    return out


def pretrained_args(wc, input):
    exp = model_experiment(wc.model)
    d, spec = exp["data"], MODELS[wc.model]
    args = [f"--architecture {spec['architecture']}",
            f"--overrides {shlex.quote(json.dumps(spec.get('architecture_overrides') or {}, sort_keys=True))}",
            f"--dataset {d['dataset']} --resolution {d['resolution']} --autoencoder {d['autoencoder']}",
            f"--ae-kwargs {shlex.quote(autoencoder_kwargs(exp))}", f"--multiplier {d['latent_multiplier']}"]
    if d.get("num_classes"):
        args.append(f"--num-classes {d['num_classes']}")
    if not d["normalize_latents"]:
        args.append("--no-normalize")
    elif d.get("latent_stats"):
        args.append(f"--latent-stats {shlex.quote(json.dumps(d['latent_stats']))}")
    else:
        args.append(f"--stats {input.stats}")
    if spec["pretrained"].get("sha256"):
        args.append(f"--sha256 {spec['pretrained']['sha256']}")
    if spec["pretrained"].get("allow_unsafe_pickle"):
        args.append("--allow-unsafe-pickle")
    return " ".join(args)


rule pretrained:
    input:
        unpack(pretrained_inputs),
    output:
        "results/models/{model}/checkpoint.pt",
    wildcard_constraints:
        model=models_where("pretrained"),
    log:
        "results/logs/pretrained/{model}.log",
    benchmark:
        "results/benchmarks/pretrained/{model}.tsv"
    params:
        args=pretrained_args,
    shell:
        "{PY} {SCRIPTS}/pretrained.py --weights {input.weights:q} {params.args} --out {output} > {log} 2>&1"
