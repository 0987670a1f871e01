# Functions of workflow/rules/extractor.smk (kept apart from its rules: snakemake --lint).


def reference_argv(exp):
    """evaluate.py's arguments naming an experiment's reference, one list item each (quoted by `:q`)."""
    ev, ref = exp["evaluation"], reference_batch(exp)
    if ref:
        return ["--reference-batch", fetched("references", *ref)]
    return ["--images", shards_dir(exp), "--split", ev["reference_split"]]


def _classifier_experiment(wc):
    for exp in WF.experiments.values():
        if exp.get("data") and data_id(exp) == wc.data and exp["extractor"]["kind"] == "classifier":
            return exp
    raise WorkflowError(f"no experiment evaluates data {wc.data} with a classifier extractor")


def _inception_weights():
    found = {
        e["extractor"].get("weights")
        for e in WF.experiments.values()
        if e.get("extractor", {}).get("kind") == "inception"
    }
    found.discard(None)
    if len(found) > 1:
        raise WorkflowError(f"extractor.weights: experiments name different Inception weights {sorted(found)}")
    return found.pop() if found else None


def _reference_experiment(marker):
    for exp in WF.experiments.values():
        if exp.get("evaluation") and reference_marker(exp) == marker:
            return exp
    raise WorkflowError(f"no experiment has the reference {marker}")


def _reference_inputs(wc, marker):
    exp = _reference_experiment(marker)
    ev, ref = exp["evaluation"], reference_batch(exp)
    out = {"weights": extractor_weights(exp)}
    if ref:
        where = (
            f"{WF.declared_in[('references', ref[0])]}: references.{ref[0]}.source"
            if isinstance(ev["reference_batch"], str)
            else f"{WF.files[exp['name']]}: evaluation.reference_batch.source"
        )
        out["batch"] = source_file("references", ref[0], ref[1], where)
    else:
        out["images"] = f"{shards_dir(exp)}/{ev['reference_split']}.json"
    return out
