"""The workflow config: schema, defaults, cross-checks, and Snakemake refusing a bad config before any job."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ucgm_core.config import ConfigError, load_config, validate_config

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "config" / "config.yaml"
SMOKE = ROOT / "config" / "smoke.yaml"


def raw(path=DEFAULT) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def problems(cfg) -> list:
    with pytest.raises(ConfigError) as e:
        validate_config(cfg, "test.yaml")
    return e.value.problems


@pytest.mark.parametrize("path", [DEFAULT, SMOKE])
def test_shipped_configs_validate(path):
    cfg = load_config(path)
    assert cfg["samplers"]
    for t, rows in cfg["tables"].items():
        assert set(rows) <= set(cfg["samplers"])


def _leaves(d, prefix=()):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _leaves(v, prefix + (k,))
        else:
            yield prefix + (k,), v


def test_fewstep_long_overlay_changes_only_the_few_step_tuning():
    """config/fewstep_long.yaml, merged as `--configfile config/config.yaml config/fewstep_long.yaml` merges it
    (Snakemake's update_config), validates and changes the few-step tuning's length and zeta, nothing else."""
    from snakemake.utils import update_config

    base, merged = raw(), raw()
    update_config(merged, raw(ROOT / "config" / "fewstep_long.yaml"))
    validate_config(merged, "config/fewstep_long.yaml")
    validate_config(base)
    before, after = dict(_leaves(base)), dict(_leaves(merged))
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed == {
        ("models", "fewstep", "objective", "enhanced_ratio"),
        ("models", "fewstep", "train", "steps"),
    }
    assert after[("models", "fewstep", "train", "steps")] == 3 * before[("models", "fewstep", "train", "steps")]


def test_defaults_are_filled():
    cfg = raw(SMOKE)
    cfg["samplers"]["euler"].pop("options", None)
    validate_config(cfg)
    assert cfg["samplers"]["euler"]["options"] == {}
    assert cfg["samplers"]["euler"]["guidance"] == {"scale": 0.0, "interval": [0.0, 1.0]}
    assert cfg["models"]["multistep"]["objective"]["weighting"] == "Cosine"
    assert cfg["models"]["multistep"]["train"]["optimizer"] == "AdamW"
    assert cfg["evaluation"]["reference_split"] == "test"
    assert cfg["data"]["normalize_latents"] is True


def test_unknown_key_is_named():
    cfg = raw()
    cfg["models"]["multistep"]["train"]["stepz"] = 3
    (msg,) = problems(cfg)
    assert msg.startswith("models.multistep.train:") and "'stepz'" in msg and "steps" in msg


def test_unknown_top_level_key():
    cfg = raw()
    cfg["sampler"] = {}
    (msg,) = problems(cfg)
    assert "'sampler'" in msg and "samplers" in msg


def test_wrong_type_and_out_of_range_are_all_reported():
    cfg = raw()
    cfg["models"]["multistep"]["train"]["lr"] = "fast"
    cfg["models"]["fewstep"]["objective"]["consistency_ratio"] = 1.5
    cfg["evaluation"]["num_samples"] = 3
    msgs = problems(cfg)
    assert any(m.startswith("models.multistep.train.lr:") and "'fast' is not of type 'number'" in m for m in msgs)
    assert any(m.startswith("models.fewstep.objective.consistency_ratio:") and "maximum of 1" in m for m in msgs)
    assert any(m.startswith("evaluation.num_samples:") and "minimum of 10" in m for m in msgs)


def test_enum_values_listed():
    cfg = raw()
    cfg["samplers"]["ucgm"]["method"] = "dpm"
    (msg,) = problems(cfg)
    assert msg.startswith("samplers.ucgm.method:") and "'ucgm'" in msg and "'euler'" in msg


def test_sampler_naming_unknown_model():
    cfg = raw()
    cfg["samplers"]["euler"]["model"] = "multi_step"
    (msg,) = problems(cfg)
    assert msg.startswith("samplers.euler.model:") and "'multi_step'" in msg and "multistep" in msg


def test_unknown_sampler_option():
    cfg = raw()
    cfg["samplers"]["ucgm"]["options"]["kappa"] = 0.3
    (msg,) = problems(cfg)
    assert msg.startswith("samplers.ucgm.options:") and "'kappa'" in msg and "extrapolation" in msg


def test_table_naming_unknown_sampler():
    cfg = raw()
    cfg["tables"]["fmnist"].append("heun")
    (msg,) = problems(cfg)
    assert msg.startswith(f"tables.fmnist[{len(cfg['tables']['fmnist']) - 1}]:") and "'heun'" in msg


def test_unknown_architecture_dataset_and_model_loops():
    cfg = raw()
    cfg["data"]["dataset"] = "fashion"
    cfg["models"]["multistep"]["architecture"] = "UNet-XXL"
    cfg["models"]["fewstep"]["architecture"] = "UNet-XXL"
    cfg["models"]["multistep"]["init"] = "fewstep"
    msgs = problems(cfg)
    assert any(m.startswith("data.dataset:") and "fashion_mnist" in m for m in msgs)
    assert any(m.startswith("models.multistep.architecture:") and "UNet-S" in m for m in msgs)
    assert any(m.startswith("models.multistep:") and "loops" in m for m in msgs)


def test_objective_semantics_checked():
    cfg = raw()
    cfg["models"]["multistep"]["objective"]["enhanced_style"] = None
    (msg,) = problems(cfg)
    assert msg.startswith("models.multistep.objective") and "enhanced_style" in msg


def test_frozen_teacher_needs_a_source():
    cfg = raw()
    del cfg["models"]["fewstep"]["init"], cfg["models"]["fewstep"]["teacher"]
    (msg,) = problems(cfg)
    assert "teacher_decay" in msg and "models.fewstep.teacher" in msg


def test_grid_must_fit_first_shard():
    cfg = raw()
    cfg["evaluation"]["samples_per_shard"] = 50
    (msg,) = problems(cfg)
    assert msg.startswith("evaluation.grid_size:")


@pytest.mark.skipif(
    shutil.which("snakemake", path=os.path.dirname(sys.executable)) is None,
    reason="snakemake not installed beside this python",
)
def test_snakemake_refuses_bad_config_before_any_job(tmp_path):
    cfg = raw(SMOKE)
    cfg["samplers"]["euler"]["model"] = "nope"
    cfg["models"]["multistep"]["train"]["steps"] = 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    run = subprocess.run(
        [
            "snakemake",
            "--cores",
            "1",
            "--snakefile",
            str(ROOT / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--configfile",
            str(bad),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "models.multistep.train.steps" in out and "minimum of 1" in out, out[-2000:]
    assert not (tmp_path / "results").exists()


# --- experiments: several files, one namespace ------------------------------------------------------------


def _experiment(tmp_path: Path, name: str, edit=None) -> str:
    """A copy of the smoke config as experiment ``name`` (model/sampler/table names prefixed), as a file."""
    cfg = raw(SMOKE)
    cfg["name"] = name
    cfg["models"] = {f"{name}_{m}": spec for m, spec in cfg["models"].items()}
    for spec in cfg["models"].values():
        for role in ("init", "teacher"):
            if spec.get(role):
                spec[role] = f"{name}_{spec[role]}"
    cfg["samplers"] = {
        f"{name}_{s}": {**spec, "model": f"{name}_{spec['model']}"} for s, spec in cfg["samplers"].items()
    }
    cfg["tables"] = {name: list(cfg["samplers"])}
    if edit:
        edit(cfg)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _workflow_problems(cfg) -> list:
    from ucgm_core.config import load_workflow

    with pytest.raises(ConfigError) as e:
        load_workflow(cfg, "main.yaml", base_dir=ROOT)
    return e.value.problems


def test_experiments_merge_into_one_namespace(tmp_path):
    from ucgm_core.config import load_workflow

    cfg = raw(SMOKE)
    tables_only = tmp_path / "tables.yaml"
    tables_only.write_text(yaml.safe_dump({"name": "both", "tables": {"both": ["ucgm", "exp_a_ucgm"]}}))
    cfg["experiments"] = [_experiment(tmp_path, "exp_a"), str(tables_only)]
    wf = load_workflow(cfg, "main.yaml", base_dir=ROOT)
    assert wf.main == "smoke" and set(wf.experiments) == {"smoke", "exp_a", "both"}
    assert wf.experiment_of[("model", "exp_a_multistep")] == "exp_a"
    assert wf.tables["both"] == ["ucgm", "exp_a_ucgm"]  # a table may name samplers of any experiment
    assert wf.of("sampler", "exp_a_ucgm")["evaluation"] == wf.experiments["exp_a"]["evaluation"]


def test_experiment_problems_name_the_file_and_key(tmp_path):
    cfg = raw(SMOKE)
    # the same model name in two files
    cfg["experiments"] = [
        _experiment(tmp_path, "exp_a", lambda c: c["models"].update(multistep=c["models"]["exp_a_multistep"]))
    ]
    assert any("models.multistep: already defined by experiment 'smoke'" in p for p in _workflow_problems(cfg))
    # an override for an experiment that does not exist
    cfg = raw(SMOKE)
    cfg["experiments"] = [_experiment(tmp_path, "exp_b")]
    cfg["experiment_overrides"] = {"exp_c": {"data": {"resolution": 32}}}
    assert any("experiment_overrides: no experiment named 'exp_c'" in p for p in _workflow_problems(cfg))
    # a missing file
    cfg = raw(SMOKE)
    cfg["experiments"] = [str(tmp_path / "nowhere.yaml")]
    assert any("nowhere.yaml' not found" in p for p in _workflow_problems(cfg))


def test_overrides_reach_the_experiment(tmp_path):
    from ucgm_core.config import load_workflow

    cfg = raw(SMOKE)
    cfg["experiments"] = [_experiment(tmp_path, "exp_a")]
    cfg["experiment_overrides"] = {
        "exp_a": {"evaluation": {"num_samples": 20}, "models": {"exp_a_multistep": {"train": {"steps": 3}}}}
    }
    wf = load_workflow(cfg, "main.yaml", base_dir=ROOT)
    assert wf.experiments["exp_a"]["evaluation"]["num_samples"] == 20
    assert wf.models["exp_a_multistep"]["train"]["steps"] == 3
    assert (
        wf.models["exp_a_multistep"]["train"]["batch_size"] == raw(SMOKE)["models"]["multistep"]["train"]["batch_size"]
    )


def test_pretrained_and_snapshot_references_are_checked():
    cfg = raw(SMOKE)
    cfg["models"]["fewstep"]["init"] = "multistep@5"  # not a kept snapshot
    assert any(
        "'multistep@5' names step 5 of 'multistep', which is not in models.multistep.train.snapshots" in p
        for p in problems(cfg)
    )
    cfg["models"]["multistep"]["train"]["snapshots"] = [5]
    validate_config(cfg, "test.yaml")
    cfg = raw(SMOKE)
    cfg["models"]["released"] = {
        "architecture": "UNet-S",
        "pretrained": {"source": "weights.pt"},
        "objective": cfg["models"]["multistep"]["objective"],
    }
    assert any(
        "models.released.pretrained: a pretrained model is imported, not trained; remove objective" in p
        for p in problems(cfg)
    )
    cfg = raw(SMOKE)
    cfg["evaluation"]["reference_batch"] = {"source": "VIRTUAL_imagenet256_labeled.npz"}
    assert any("reference_batch" in p and "inception" in p for p in problems(cfg))


# --- datasets, autoencoders and reference batches: declared once, referred to by name ---------------------

IMAGENET = {"in1k256_e2evavae", "in1k256_vavae", "in1k256_sdvae", "in1k512_sdvae", "in1k512_dcae", "in1k512_edm2"}


def _shipped_workflow(edit=None):
    from ucgm_core.config import load_workflow

    cfg = raw(DEFAULT)
    if edit:
        edit(cfg)
    return load_workflow(cfg, "config/config.yaml", base_dir=ROOT)


def test_one_imagenet_source_reaches_every_imagenet_experiment(tmp_path):
    """Editing datasets.imagenet.source once changes the raw data of every ImageNet experiment, at both
    resolutions (the shards rule reads wf.data[(dataset, resolution)]), and no experiment file holds a path."""
    shipped = _shipped_workflow()
    mine = str(tmp_path / "my-imagenet.tar")
    wf = _shipped_workflow(lambda c: c["datasets"]["imagenet"].update(source=mine))
    assert shipped.datasets["imagenet"]["source"] != mine
    imagenet = {k: v for k, v in wf.data.items() if k[0] == "imagenet"}
    assert set(imagenet) == {("imagenet", 256), ("imagenet", 512)}
    assert {e for v in imagenet.values() for e in v["experiments"]} == IMAGENET
    for v in imagenet.values():
        assert v["source"] == mine and v["source_key"] == "config/config.yaml: datasets.imagenet.source"
    for e in IMAGENET:  # the experiment files themselves carry no path
        assert "source" not in raw(ROOT / "config" / "experiments" / f"{e}.yaml")["data"]
    # reference batches and autoencoders are names, each declared once in the main config
    assert {wf.reference(wf.experiments[e])[0] for e in IMAGENET} == {
        "VIRTUAL_imagenet256_labeled",
        "VIRTUAL_imagenet512",
    }
    assert {wf.declared_in[("autoencoders", wf.experiments[e]["data"]["autoencoder"])] for e in IMAGENET} == {
        "config/config.yaml"
    }


def test_disagreeing_declarations_are_refused_naming_both_files(tmp_path):
    """A dataset, autoencoder or reference batch declared differently in two files: refused at load time, the
    message naming both files and the key; an equal second declaration (defaults left out) is accepted."""
    cfg = raw(SMOKE)
    cfg["datasets"] = {"fashion_mnist": {"source": "/data/fmnist-a"}}
    cfg["autoencoders"] = {"identity": {"kwargs": {"channels": 3}}}
    cfg["references"] = {"ref": {"source": "/refs/a.npz"}}
    exp = _experiment(
        tmp_path,
        "exp_a",
        lambda c: c.update(
            datasets={"fashion_mnist": {"source": "/data/fmnist-b"}},
            autoencoders={"identity": {"kwargs": {"channels": 1}}},
            references={"ref": {"source": "/refs/a.npz", "sha256": None}},
        ),
    )
    cfg["experiments"] = [exp]
    found = _workflow_problems(cfg)
    for key, mine, theirs in (
        ("datasets.fashion_mnist", "fmnist-b", "fmnist-a"),
        ("autoencoders.identity", "'channels': 1", "'channels': 3"),
    ):
        hits = [
            p for p in found if p.startswith(f"{exp}: {key}: ") and "differs from its declaration in main.yaml" in p
        ]
        assert len(hits) == 1 and mine in hits[0] and theirs in hits[0], found
    assert not any("references.ref" in p for p in found), found  # equal once the defaults are filled in
    assert len(found) == 2, found


def test_old_style_data_source_in_an_experiment_file_is_refused(tmp_path):
    """data.source in a listed experiment file (where six copies hid each other) is refused, saying where it goes."""
    cfg = raw(SMOKE)
    exp = _experiment(tmp_path, "exp_a", lambda c: c["data"].update(source="/data/fmnist"))
    cfg["experiments"] = [exp]
    found = _workflow_problems(cfg)
    assert any(
        p.startswith(
            f"{exp}: data.source: '/data/fmnist' is declared once now, as datasets.fashion_mnist.source "
            "in the main config (main.yaml)"
        )
        and "experiment_overrides.exp_a.data.source" in p
        for p in found
    ), found


def test_experiment_overrides_of_data_source_must_agree_per_shards(tmp_path):
    """data.source set by experiment_overrides points one experiment elsewhere; experiments sharing a dataset and
    resolution (one set of shards) must agree, or the load is refused naming both files."""
    a, b = str(tmp_path / "a.tar"), str(tmp_path / "b")
    # 256 and 512 read different copies: accepted (the paper miniature does this)
    wf = _shipped_workflow(
        lambda c: c.update(experiment_overrides={e: {"data": {"source": a if "256" in e else b}} for e in IMAGENET})
    )
    assert wf.data[("imagenet", 256)]["source"] == a and wf.data[("imagenet", 512)]["source"] == b
    assert wf.data[("imagenet", 256)]["source_key"].endswith("in1k256_e2evavae.yaml: data.source")
    # one 256 experiment elsewhere while the others use the declaration: refused, both files named
    with pytest.raises(ConfigError) as e:
        _shipped_workflow(lambda c: c.update(experiment_overrides={"in1k256_vavae": {"data": {"source": a}}}))
    hits = [p for p in e.value.problems if "in1k256_vavae.yaml: data.source" in p]
    assert len(hits) == 1 and "in1k256_e2evavae.yaml" in hits[0] and a in hits[0], e.value.problems


def test_reference_batches_by_name_and_inline(tmp_path):
    """A reference batch name must be declared; two inline batches of one file stem must be the same file."""
    with pytest.raises(ConfigError) as e:
        _shipped_workflow(
            lambda c: c.update(
                experiment_overrides={"in1k512_dcae": {"evaluation": {"reference_batch": "VIRTUAL_imagenet1024"}}}
            )
        )
    assert any(
        "in1k512_dcae.yaml: evaluation.reference_batch: 'VIRTUAL_imagenet1024' is not declared; expected one "
        "of ['VIRTUAL_imagenet256_labeled', 'VIRTUAL_imagenet512']" in p
        for p in e.value.problems
    ), e.value.problems
    with pytest.raises(ConfigError) as e:
        _shipped_workflow(
            lambda c: c.update(
                experiment_overrides={
                    "in1k512_dcae": {
                        "evaluation": {"reference_batch": {"source": str(tmp_path / "x" / "VIRTUAL_imagenet512.npz")}}
                    }
                }
            )
        )
    hits = [p for p in e.value.problems if "evaluation.reference_batch" in p and "'VIRTUAL_imagenet512'" in p]
    assert len(hits) == 1 and str(tmp_path) in hits[0], e.value.problems
    assert (
        hits[0].startswith("config/experiments/in1k512_dcae.yaml: ")
        and "config/experiments/in1k512_sdvae.yaml" in hits[0]
    ), hits[0]  # both files: the override's and the first experiment with that batch


def test_experiment_overrides_merge_into_a_declaration():
    """An override of a declaration merges into it for the run (mappings merge, as every override); two
    overrides of one name that differ are refused, naming both."""
    shipped = _shipped_workflow().autoencoders["vavae_f16d32"]
    wf = _shipped_workflow(
        lambda c: c.update(
            experiment_overrides={"in1k256_vavae": {"autoencoders": {"vavae_f16d32": {"kwargs": {"seed": 1}}}}}
        )
    )
    entry = wf.autoencoders["vavae_f16d32"]
    assert shipped["kwargs"] == {"seed": 0} and entry["kwargs"] == {"seed": 1}
    assert entry["source"] == shipped["source"] and entry["source"].startswith("https://")
    assert wf.declared_in[("autoencoders", "vavae_f16d32")] == "config/config.yaml: experiment_overrides.in1k256_vavae"
    with pytest.raises(ConfigError) as e:
        _shipped_workflow(
            lambda c: c.update(
                experiment_overrides={
                    "in1k256_sdvae": {"autoencoders": {"sdvae_ema_f8c4": {"source": "/w/a.safetensors"}}},
                    "in1k512_sdvae": {"autoencoders": {"sdvae_ema_f8c4": {"source": "/w/b.safetensors"}}},
                }
            )
        )
    hits = [p for p in e.value.problems if "autoencoders.sdvae_ema_f8c4" in p]
    assert (
        len(hits) == 1
        and hits[0].startswith("config/config.yaml: experiment_overrides.in1k512_sdvae: ")
        and "experiment_overrides.in1k256_sdvae" in hits[0]
        and "/w/a.safetensors" in hits[0]
    ), e.value.problems


def test_workflow_config_reexports_the_config_package():
    """``ucgm_core.workflow_config`` (the old module) still names every public name of ``ucgm_core.config``, as
    the very same objects, so existing imports keep working after the split by concept."""
    import ucgm_core.config as config
    import ucgm_core.workflow_config as old

    assert sorted(old.__all__) == sorted(config.__all__) and len(config.__all__) == 11, old.__all__
    for name in config.__all__:
        assert getattr(old, name) is getattr(config, name), name
    assert config.SCHEMA_PATH.name == "config.schema.yaml" and config.SCHEMA_PATH.parent.name == "schemas"
    assert config.SCHEMA_PATH.parent.parent == Path(old.__file__).resolve().parent
