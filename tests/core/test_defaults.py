"""One typed source of defaults (issue 12, item 2): the config schema's ``train``, ``objective`` and the
training's ``data`` keys agree with the dataclasses a training job is built from.

The pipeline fills in the schema's defaults; a library call (``TrainSettings.from_dict``,
``UCGMConfig.from_dict``, ``ucgm_core.training.run``) takes the dataclass field defaults. These tests keep
the two equal key by key, so a library call trains what the pipeline trains, and make every schema key either
a dataclass field or an explicitly listed workflow-only key (and every config-facing field a schema key).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Dict

import pytest
import yaml

from ucgm_core.accel import PRECISIONS
from ucgm_core.training.ema import EMA_INITS
from ucgm_core.training.loop import RUNTIME_FIELDS, WORKFLOW_TRAIN_KEYS, TrainSettings
from ucgm_core.training.objective import ENHANCED_STYLES, LOSSES, WEIGHTINGS, UCGMConfig
from ucgm_core.training.optim import OPTIMIZERS
from ucgm_core.training.run import PosthocConfig, TrainData, TrainSpec, fingerprint
from ucgm_core.transports import TRANSPORTS
from ucgm_core.workflow_config import SCHEMA_PATH

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())
TRAIN = SCHEMA["definitions"]["train"]
OBJECTIVE = SCHEMA["definitions"]["objective"]
DATA = SCHEMA["properties"]["data"]
# the train keys that tell where and how long a job runs: the workflow drops them from the model's spec
NOT_IN_SPEC = ("gpus", "hours")
# UCGMConfig fields that come from the data, not the config
OBJECTIVE_RUNTIME = ("num_classes",)


def _norm(value: Any) -> Any:
    """YAML gives lists where the dataclasses hold tuples: compare both as tuples."""
    return tuple(_norm(v) for v in value) if isinstance(value, (list, tuple)) else value


def _field_defaults(cls) -> Dict[str, Any]:
    """``{field: default}`` of a dataclass (``dataclasses.MISSING`` for required fields)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
        else:
            out[f.name] = dataclasses.MISSING
    return out


def _stated_default(prop: dict) -> str | None:
    """The ``(default X`` a schema property without ``default`` states in its description, if any."""
    m = re.search(r"\(default (\S+?)[;)]", prop.get("description", ""))
    return m.group(1) if m else None


def _as_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _schema_defaults(props: dict) -> Dict[str, Any]:
    return {k: p["default"] for k, p in props.items() if "default" in p}


# -- train -----------------------------------------------------------------------------------------------------
def test_train_schema_keys_are_settings_fields_or_listed_workflow_keys():
    config_fields = set(_field_defaults(TrainSettings)) - set(RUNTIME_FIELDS)
    schema_keys = set(TRAIN["properties"])
    assert not schema_keys - config_fields - set(WORKFLOW_TRAIN_KEYS), (
        f"schema train keys neither TrainSettings fields nor workflow keys: {sorted(schema_keys - config_fields)}"
    )
    assert not config_fields - schema_keys, (
        f"TrainSettings fields missing from the schema: {config_fields - schema_keys}"
    )
    assert not set(WORKFLOW_TRAIN_KEYS) & config_fields, "a workflow-only key is also a TrainSettings field"
    assert set(WORKFLOW_TRAIN_KEYS) <= schema_keys, "a listed workflow key is not in the schema"
    assert not set(RUNTIME_FIELDS) & schema_keys, "runtime fields (seeding, micro_batch) are not config keys"


def test_train_schema_defaults_equal_settings_defaults():
    fields = _field_defaults(TrainSettings)
    checked = 0
    for key, prop in TRAIN["properties"].items():
        if key not in fields:
            continue
        if key in TRAIN["required"]:
            assert "default" not in prop and fields[key] is dataclasses.MISSING, key
        elif "default" in prop:
            assert _norm(prop["default"]) == _norm(fields[key]), (key, prop["default"], fields[key])
        else:  # no schema default on purpose (a filled-in key would change every spec): the text says it
            assert _stated_default(prop) == _as_text(fields[key]), (key, prop.get("description"), fields[key])
        checked += 1
    assert checked == len(set(fields) - set(RUNTIME_FIELDS)) == 17


def test_workflow_train_key_defaults_equal_the_run_module():
    spec = _field_defaults(TrainSpec)
    props = TRAIN["properties"]
    assert props["grid_every"]["default"] == spec["grid_every"] == 0
    assert _norm(props["snapshots"]["default"]) == _norm(spec["snapshots"]) == ()
    assert "default" not in props["posthoc_ema"] and spec["posthoc_ema"] is None  # off when absent
    sigma = props["posthoc_ema"]["properties"]["sigma_rels"]["default"]
    assert _norm(sigma) == _norm(_field_defaults(PosthocConfig)["sigma_rels"]) == (0.05, 0.10)
    assert props["posthoc_ema"]["required"] == ["snapshot_every"]
    assert _field_defaults(PosthocConfig)["snapshot_every"] is dataclasses.MISSING


def test_train_enums_are_what_the_library_accepts():
    props = TRAIN["properties"]
    assert set(props["optimizer"]["enum"]) == set(OPTIMIZERS)
    assert set(props["precision"]["enum"]) == set(PRECISIONS)
    assert set(props["ema_init"]["enum"]) == set(EMA_INITS)


def test_from_dict_with_the_schema_defaults_is_from_dict_without_them():
    """A library call with only the required keys trains what the pipeline (defaults filled in) trains."""
    filled = _schema_defaults(TRAIN["properties"])
    filled.update(steps=7, batch_size=4)
    bare = TrainSettings.from_dict({"steps": 7, "batch_size": 4}, seeding="step")
    assert TrainSettings.from_dict(filled, seeding="step") == bare
    assert bare.betas == (0.9, 0.95) and isinstance(bare.betas, tuple) and bare.seeding == "step"
    assert TrainSettings.from_dict({"steps": 1, "batch_size": 1, "tf32": 0}).tf32 is False


@pytest.mark.parametrize(
    "train, runtime, message",
    [
        ({"steps": 1, "batch_size": 1, "lr_typo": 1e-3}, {}, r"train: unknown keys \['lr_typo'\]"),
        ({"steps": 1, "batch_size": 1, "seeding": "step"}, {}, r"train: unknown keys \['seeding'\]"),
        ({"steps": 1}, {}, r"train: \['batch_size'\] missing"),
        ({"steps": 1, "batch_size": 1}, {"lr": 1.0}, r"\['lr'\] are not runtime fields"),
    ],
)
def test_settings_from_dict_refuses_what_it_cannot_place(train, runtime, message):
    with pytest.raises(ValueError, match=message):
        TrainSettings.from_dict(train, **runtime)


# -- objective -------------------------------------------------------------------------------------------------
def test_objective_schema_keys_and_defaults_equal_ucgm_config():
    fields = _field_defaults(UCGMConfig)
    props = OBJECTIVE["properties"]
    assert set(props) == set(fields) - set(OBJECTIVE_RUNTIME)
    for key, prop in props.items():
        if "default" in prop:
            assert _norm(prop["default"]) == _norm(fields[key]), (key, prop["default"], fields[key])
        else:  # no schema default on purpose (a filled-in key would change every spec): the text says it
            assert key == "loss", f"objective.{key}: no schema default"
            assert _stated_default(prop) == _as_text(fields[key]), (key, prop.get("description"), fields[key])
    filled, bare = (UCGMConfig.from_dict(d, num_classes=3) for d in (_schema_defaults(props), {}))
    assert _norm(dataclasses.astuple(filled)) == _norm(dataclasses.astuple(bare))  # lists vs tuples only


def test_objective_enums_are_what_the_library_accepts():
    props = OBJECTIVE["properties"]
    assert set(props["transport"]["enum"]) == set(TRANSPORTS)
    assert set(props["enhanced_style"]["enum"]) == set(ENHANCED_STYLES) | {None}
    assert set(props["weighting"]["enum"]) == set(WEIGHTINGS)
    assert set(props["loss"]["enum"]) == set(LOSSES)


def test_objective_from_dict_refuses_unknown_keys_and_keeps_values():
    with pytest.raises(ValueError, match=r"objective: unknown keys \['num_classes'\]"):
        UCGMConfig.from_dict({"num_classes": 3}, num_classes=3)
    cfg = UCGMConfig.from_dict({"time_dist": [1.0, 2.0, 1.0]}, num_classes=3)
    assert cfg.time_dist == [1.0, 2.0, 1.0] and cfg.num_classes == 3  # as given: the state records it so


# -- data (the keys a training job reads) ------------------------------------------------------------------------
def test_training_data_defaults_equal_the_schema():
    fields = _field_defaults(TrainData)
    props = DATA["properties"]
    # dataset is required in the config; the job's None means "the latent manifest's dataset"
    assert "dataset" in DATA["required"] and fields["dataset"] is None
    for key in set(fields) - {"dataset"}:
        assert _norm(props[key]["default"]) == _norm(fields[key]), (key, props[key]["default"], fields[key])


# -- the stage script and the state folder ---------------------------------------------------------------------
def test_train_script_carries_no_defaults():
    text = (ROOT / "workflow" / "scripts" / "train.py").read_text()
    assert ".get(" not in text and "TrainSettings(" not in text and "UCGMConfig(" not in text
    # its size: tests/core/test_architecture.py::test_stage_scripts_are_thin (every stage script)


def test_fingerprint_is_unchanged(tmp_path):
    """Pinned values computed with workflow/scripts/train.py before its code moved to ucgm_core.training.run:
    the same spec and files name the same state folder, so existing runs resume."""
    spec = {
        "architecture": "UNet-S",
        "objective": {"transport": "Linear"},
        "train": {"steps": 3, "batch_size": 4, "compile": True},
        "data": {"dataset": "toy"},
    }
    assert fingerprint(spec, []) == "3def892d6aeecbc2"
    (tmp_path / "f.bin").write_bytes(b"ucgm")
    assert fingerprint(spec, [tmp_path / "f.bin", None]) == "6890859e7ce296f4"
    assert TrainSpec.from_dict(spec).raw == spec


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s.pop("objective"), r"spec: 'objective' missing"),
        (lambda s: s["data"].update(resolutoin=8), r"spec data: unknown keys \['resolutoin'\]"),
        (
            lambda s: s["train"].update(posthoc_ema={"sigma_rels": [0.1]}),
            r"train.posthoc_ema: 'snapshot_every' missing",
        ),
        (lambda s: s["train"].update(optimiser="Adam"), r"train: unknown keys \['optimiser'\]"),
    ],
)
def test_train_spec_errors_name_the_key(change, message):
    from ucgm_core.training.run import SpecError

    spec = {
        "architecture": "UNet-S",
        "objective": {},
        "train": {"steps": 3, "batch_size": 4},
        "data": {"dataset": "toy"},
    }
    change(spec)
    with pytest.raises(SpecError, match=message):
        TrainSpec.from_dict(spec)


def test_train_spec_fills_the_workflow_keys():
    spec = TrainSpec.from_dict(
        {
            "architecture": "UNet-S",
            "objective": {},
            "data": {"dataset": "toy"},
            "train": {
                "steps": 3,
                "batch_size": 4,
                "grid_every": None,
                "snapshots": [2],
                "posthoc_ema": {"snapshot_every": 2},
            },
        },
        micro_batch=2,
    )
    assert spec.grid_every == 0 and list(spec.snapshots) == [2] and spec.settings.micro_batch == 2
    assert spec.posthoc_ema == PosthocConfig(snapshot_every=2) and spec.settings.seeding == "step"
    assert spec.data == TrainData(dataset="toy")
