"""Bad config values that used to be accepted and fail hours into a run: each is refused before any job runs.

``CASES`` lists every kind of problem with the edit that makes it (on the embedded default, without its
experiment files) and what its message must say: the key path it starts with, and pieces naming the value
and what was expected. Add a row for a new kind. One test checks each row alone (exactly one problem, so
the check does not fire on anything else); one applies every row at once and expects every message in one
:class:`ConfigError`; one checks that problems in several experiment files are reported together.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, List, NamedTuple

import pytest
import yaml

from ucgm_core.config import ConfigError, load_workflow, validate_config

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "config" / "config.yaml"
SHA = "0" * 64


class Case(NamedTuple):
    kind: str
    edit: Callable[[dict], None]
    key: str  # the message starts with this key path
    says: tuple  # and contains each of these
    others: tuple = ()  # key paths of the further problems the same edit makes, by design
    alone: bool = False  # True: its edit undoes another row's (left out of the all-at-once test)


def _set(path: str, value):
    """An edit setting ``path`` (dotted, into the config) to ``value``."""

    def edit(cfg: dict) -> None:
        *parents, last = path.split(".")
        node = cfg
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = copy.deepcopy(value)

    return edit


def _both(*edits):
    def edit(cfg: dict) -> None:
        for e in edits:
            e(cfg)

    return edit


CASES: List[Case] = [
    Case(
        "ucgm order",
        _set("samplers.ucgm.options.order", 3),
        "samplers.ucgm.options.order:",
        ("3", "'ucgm'", "order must be 1 or 2"),
    ),
    Case(
        "ucgm extrapolation",
        _set("samplers.ucgm.options.extrapolation", -5),
        "samplers.ucgm.options.extrapolation:",
        ("-5", "finite number >= 0"),
    ),
    Case(
        "ucgm stochasticity",
        _set("samplers.ucgm.options.stochasticity", "bogus"),
        "samplers.ucgm.options.stochasticity:",
        ("'bogus'", 'number in [0, 1] or "SDE"'),
    ),
    Case(
        "ucgm end_gaps",
        _set("samplers.ucgm.options.end_gaps", [0.9, 0.9]),
        "samplers.ucgm.options.end_gaps:",
        ("[0.9, 0.9]", "g0 + g1 < 1"),
    ),
    Case(
        "ucgm time_warp",
        _set("samplers.ucgm.options.time_warp", [1.0, -1.0, 1.0]),
        "samplers.ucgm.options.time_warp:",
        ("[1.0, -1.0, 1.0]", "3 positive numbers"),
    ),
    Case(
        "ucgm order 2 at the noise end",
        _set("samplers.ucgm.options", {"order": 2, "end_gaps": [0.0, 0.05]}),
        "samplers.ucgm.options.end_gaps:",
        ("[0.0, 0.05]", "order 2", "Linear", "end_gaps[0] > 0"),
        alone=True,
    ),
    Case(
        "baseline option range reversed",
        _set("samplers.euler.options", {"t_min": 0.5, "t_max": 0.2}),
        "samplers.euler.options:",
        ("t_min 0.5", "t_max 0.2", "expected t_min < t_max"),
    ),
    Case(
        "original's option value",
        _set(
            "samplers.edm_bad", {"model": "multistep", "method": "edm_heun", "steps": [8], "options": {"sigma_min": 0}}
        ),
        "samplers.edm_bad.options.sigma_min:",
        ("0", "'edm_heun'", "> 0"),
    ),
    Case(
        "original's option of the wrong type",
        _set(
            "samplers.ddt_bad",
            {"model": "multistep", "method": "ddt_euler", "steps": [8], "options": {"timeshift": "1"}},
        ),
        "samplers.ddt_bad.options.timeshift:",
        ("'1'", "finite number"),
    ),
    Case(
        "original's guidance range reversed",
        _set(
            "samplers.repae_bad",
            {"model": "multistep", "method": "repae_sde", "steps": [8], "options": {"guidance_low": 0.9}},
        ),
        "samplers.repae_bad.options:",
        ("guidance_low 0.9", "guidance_high 0.75", "defaults", "guidance_low < guidance_high"),
    ),
    Case(
        "too few steps for the method",
        _set("samplers.edm_few", {"model": "multistep", "method": "edm_heun", "steps": [1, 8]}),
        "samplers.edm_few.steps:",
        ("[1]", "'edm_heun'", ">= 2"),
    ),
    Case(
        "guidance interval reversed",
        _set("samplers.ucgm.guidance", {"scale": 1.5, "interval": [0.8, 0.2]}),
        "samplers.ucgm.guidance.interval:",
        ("[0.8, 0.2]", "low < high"),
    ),
    Case(
        "unknown architecture override",
        _set("models.multistep.architecture_overrides.depth", 3),
        "models.multistep.architecture_overrides:",
        ("'depth'", "UNet-S", "num_blocks"),
    ),
    Case(
        "architecture override of the data shape",
        _set("models.fewstep.architecture_overrides.input_size", 32),
        "models.fewstep.architecture_overrides:",
        ("input_size", "data.resolution"),
    ),
    Case(
        "architecture num_classes",
        _set("models.multistep.architecture_overrides.num_classes", 7),
        "models.multistep.architecture_overrides.num_classes:",
        ("7", "expected 1 (unconditional) or the data's"),
    ),
    Case(
        "data num_classes vs the catalogue",
        _set("data.num_classes", 12),
        "data.num_classes:",
        ("12", "'fashion_mnist' has 10 classes", "expected 10"),
    ),
    Case(
        "resolution vs autoencoder stride",
        _set("data", {"dataset": "fashion_mnist", "resolution": 30, "autoencoder": "sdvae_ema_f8c4"}),
        "data.resolution:",
        ("30", "stride 8", "'sdvae_ema_f8c4'"),
        alone=True,
    ),
    Case(
        "resolution vs patch size",
        _both(
            _set("data.resolution", 26),
            _set("models.multistep.architecture", "TiT-Tiny/4"),
            _set("models.fewstep.architecture", "TiT-Tiny/4"),
        ),
        "models.multistep.architecture:",
        ("patch size 4", "latent size 26", "multiple of 4"),
        others=("models.fewstep.architecture:",),
        alone=True,
    ),
    Case(
        "gpus not dividing batch_size",
        _set("models.multistep.train.gpus", 3),
        "models.multistep.train.gpus:",
        ("3", "batch_size 64", "divisor"),
    ),
    Case(
        "snapshot beyond train.steps",
        _set("models.multistep.train.snapshots", [1600, 5000]),  # 1600: the default's fewstep teacher
        "models.multistep.train.snapshots:",
        ("[5000]", "train.steps 1600", "<= 1600"),
    ),
    Case(
        "init snapshot not kept",
        _set("models.fewstep.init", "multistep@800"),
        "models.fewstep.init:",
        ("'multistep@800'", "not in models.multistep.train.snapshots [1600]"),
        alone=True,
    ),
    Case(
        "init snapshot beyond train.steps",
        _both(_set("models.multistep.train.snapshots", [1600, 5000]), _set("models.fewstep.init", "multistep@5000")),
        "models.fewstep.init:",
        ("'multistep@5000'", "beyond models.multistep.train.steps 1600", "<= 1600"),
        others=("models.multistep.train.snapshots:",),
    ),
    Case(
        "teacher snapshot of a pretrained model",
        _both(
            _set("models.released", {"architecture": "UNet-S", "pretrained": {"source": "w.pt"}}),
            _set("models.fewstep.teacher", "released@100"),
        ),
        "models.fewstep.teacher:",
        ("'released@100'", "pretrained", "expected 'released' alone"),
    ),
    Case(
        "unknown autoencoder kwargs",
        _set("autoencoders.identity", {"kwargs": {"chanels": 3}}),
        "autoencoders.identity.kwargs:",
        ("'chanels'", "IdentityAutoencoder", "'channels'"),
    ),
    Case(
        "unknown autoencoder",
        _set("autoencoders.sdvae", {"kwargs": {}}),
        "autoencoders.sdvae:",
        ("'sdvae'", "sdvae_ema_f8c4"),
    ),
    Case(
        "http pretrained weights without sha256",
        _set("models.released_http", {"architecture": "UNet-S", "pretrained": {"source": "http://example.org/w.pt"}}),
        "models.released_http.pretrained.sha256:",
        ("'http://example.org/w.pt'", "sha256 (64 hex digits)"),
    ),
    Case(
        "http autoencoder weights without sha256",
        _set("autoencoders.sdvae_ema_f8c4", {"source": "http://example.org/vae.safetensors"}),
        "autoencoders.sdvae_ema_f8c4.sha256:",
        ("'http://example.org/vae.safetensors'", "download.allow_unverified"),
    ),
    Case(
        "http reference batch without sha256",
        _both(
            _set("extractor", {"kind": "inception"}),
            _set("evaluation.reference_batch", {"source": "HTTP://example.org/ref.npz"}),
        ),
        "evaluation.reference_batch.sha256:",
        ("'HTTP://example.org/ref.npz'", "must be verified"),
    ),
]


def _base() -> dict:
    with open(DEFAULT) as f:
        cfg = yaml.safe_load(f)
    cfg.pop("experiments")  # the default's own models and samplers; the experiment files are tested below
    return cfg


def _problems(cfg: dict) -> List[str]:
    with pytest.raises(ConfigError) as e:
        validate_config(cfg, "bad.yaml")
    assert str(e.value).startswith("invalid configuration bad.yaml:")
    return e.value.problems


def test_the_base_config_is_valid():
    validate_config(_base(), "base.yaml")


@pytest.mark.parametrize("case", CASES, ids=[c.kind for c in CASES])
def test_each_kind_is_refused_naming_key_value_and_expectation(case: Case):
    cfg = _base()
    case.edit(cfg)
    msgs = _problems(cfg)
    mine = [m for m in msgs if m.startswith(case.key)]
    assert len(mine) == 1, msgs
    for piece in case.says:
        assert piece in mine[0], (piece, mine[0])
    rest = sorted(m.split(" ", 1)[0] for m in msgs if m not in mine)
    assert rest == sorted(case.others), msgs


def test_every_problem_is_reported_at_once():
    """Every row that can live beside the others, applied together: one ConfigError lists each of them."""
    cfg = _base()
    applied = [c for c in CASES if not c.alone]
    for case in applied:
        case.edit(cfg)
    assert len(applied) >= len(CASES) - 5
    msgs = _problems(cfg)
    for case in applied:
        assert any(m.startswith(case.key) and all(p in m for p in case.says) for m in msgs), (case.kind, msgs)


def test_problems_of_several_experiment_files_come_together(tmp_path):
    """Two experiment files, each with a bad value: one ConfigError names both files and both keys."""
    main = _base()
    files = []
    for name, edit in (
        ("exp_a", _set("samplers.ucgm.options.order", 3)),
        ("exp_b", _set("models.multistep.train.gpus", 3)),
    ):
        cfg = _base()
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
        edit(
            {
                "samplers": {"ucgm": cfg["samplers"][f"{name}_ucgm"]},
                "models": {"multistep": cfg["models"][f"{name}_multistep"]},
            }
        )
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        files.append(str(path))
    main["experiments"] = files
    with pytest.raises(ConfigError) as e:
        load_workflow(main, "main.yaml", base_dir=ROOT)
    msgs = e.value.problems
    assert any(m.startswith(f"{files[0]}: samplers.exp_a_ucgm.options.order:") for m in msgs), msgs
    assert any(m.startswith(f"{files[1]}: models.exp_b_multistep.train.gpus:") for m in msgs), msgs


def test_https_without_sha256_is_left_to_the_fetch_rule():
    """An https URL without sha256 validates (the fetch rule refuses it unless download.allow_unverified); one
    with its sha256, a local path and a file:// URL need nothing."""
    cfg = _base()
    cfg["models"]["released"] = {"architecture": "UNet-S", "pretrained": {"source": "https://example.org/w.pt"}}
    cfg["models"]["released_sha"] = {
        "architecture": "UNet-S",
        "pretrained": {"source": "http://example.org/w.pt", "sha256": SHA},
    }
    cfg["autoencoders"] = {"sdvae_ema_f8c4": {"source": "file:///weights/vae.safetensors"}}
    validate_config(cfg, "ok.yaml")


def test_shipped_configs_still_validate():
    """The embedded default with every paper experiment."""
    with open(DEFAULT) as f:
        cfg = yaml.safe_load(f)
    wf = load_workflow(cfg, str(DEFAULT), base_dir=ROOT)
    assert len(wf.experiments) > 5
