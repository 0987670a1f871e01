"""The sampling stage's defaults live once, in the library (issue 12 item 2), and the schema agrees with them.

* every sampler method the schema accepts is a registered sampler, and the other way round;
* every method's own option defaults (its keyword arguments' defaults) pass the config checks when written
  out in a config's ``options`` (so a knob's default is never refused as a value, and no check is stricter
  or looser than the sampler), and every option the checks know is an option of some sampler;
* the typed spec of a shard (:class:`SamplerSpec`) has the schema's defaults (``weights``, ``guidance``,
  ``evaluation.quantize``) and the ones the schema documents without filling them in (``precision``, ``tf32``,
  ``compile``: absent keys stay absent so that existing specs, hence reruns, are unchanged), and
  ``generate_images`` has the same ones;
* the schema's default guidance interval [0, 1] and the library's "no interval" select the same steps,
  because every transport's network time lies in [0, 1].
"""

from __future__ import annotations

import copy
import inspect
import re
from pathlib import Path

import pytest
import torch
import yaml

from ucgm_core.sampling import SAMPLERS, get_sampler
from ucgm_core.sampling.generate import generate_images
from ucgm_core.sampling.shard_writer import SamplerSpec
from ucgm_core.transports import TRANSPORTS, orient
from ucgm_core.workflow_config import SCHEMA_PATH, ConfigError, sampler_option_names, validate_config

ROOT = Path(__file__).resolve().parents[2]


def _schema() -> dict:
    with open(SCHEMA_PATH) as f:
        return yaml.safe_load(f)


def _sampler_schema() -> dict:
    return _schema()["properties"]["samplers"]["additionalProperties"]["properties"]


def _base_config() -> dict:
    with open(ROOT / "config" / "config.yaml") as f:
        return yaml.safe_load(f)


def _option_defaults(method: str) -> dict:
    """The method's knobs (what a config's ``options`` may set) with their defaults."""
    params = inspect.signature(get_sampler(method)).parameters
    return {
        k: params[k].default for k in sampler_option_names(method) if params[k].default is not inspect.Parameter.empty
    }


def test_schema_methods_are_the_registered_samplers():
    assert sorted(_sampler_schema()["method"]["enum"]) == sorted(SAMPLERS)


@pytest.mark.parametrize("method", sorted(SAMPLERS))
def test_every_option_default_is_a_valid_config_value(method):
    """A config that spells out all of a method's defaults is the config that leaves them out: accepted."""
    defaults = _option_defaults(method)
    assert defaults or method in ("euler", "heun"), f"{method}: no knobs found (the reader is broken)"
    cfg = _base_config()
    cfg["samplers"] = {"s": {"model": "multistep", "method": method, "steps": [4], "options": copy.deepcopy(defaults)}}
    for model in cfg["models"].values():  # the post-hoc EMA choice samples with the one sampler left
        if model.get("ema_select"):
            model["ema_select"]["sampler"] = "s"
    cfg.pop("tables", None)
    validate_config(cfg, f"defaults of {method}")
    # and the checks are not vacuous: a value no default could have is refused, naming the option
    if defaults:
        key = sorted(defaults)[0]
        cfg["samplers"]["s"]["options"] = {key: "not a value"}
        with pytest.raises(ConfigError, match=rf"samplers\.s\.options\.{key}: 'not a value' is not valid"):
            validate_config(cfg, f"a bad {key} of {method}")


def test_every_checked_option_is_an_option_of_some_sampler():
    from ucgm_core.config.samplers import option_checks  # the table of value checks

    knobs = {k for m in SAMPLERS for k in sampler_option_names(m)}
    assert set(option_checks()) - knobs == set(), "checks for options no sampler takes"


def _documented_default(description: str, choices: tuple) -> str:
    """The value a schema description names as the default: "fp32 (default)" or "(default true)"."""
    found = re.findall(r"(\w+) \(default\)|\(default (\w+)\b", description)
    values = {a or b for a, b in found} & set(choices)
    assert len(values) == 1, f"description {description!r} names no single default among {choices}"
    return values.pop()


def test_sampler_spec_defaults_are_the_schema_defaults():
    props = _sampler_schema()
    spec = SamplerSpec.from_dict({"method": "ucgm"})
    assert spec.weights == props["weights"]["default"]
    assert spec.quantize == _schema()["properties"]["evaluation"]["properties"]["quantize"]["default"]
    guidance = props["guidance"]["properties"]
    assert spec.guidance_scale == guidance["scale"]["default"] == props["guidance"]["default"]["scale"]
    assert spec.options == {} == props["options"]["default"]
    # documented, not filled in (no "default" key, so existing specs keep their fingerprints)
    for key in ("precision", "tf32", "compile"):
        assert "default" not in props[key], key
    assert spec.precision == _documented_default(props["precision"]["description"], ("fp32", "bf16"))
    assert str(spec.tf32).lower() == _documented_default(props["tf32"]["description"], ("true", "false"))
    assert str(spec.compile).lower() == _documented_default(props["compile"]["description"], ("true", "false"))
    # a spec with the schema's defaults written out means the same settings
    explicit = SamplerSpec.from_dict(
        {
            "method": "ucgm",
            "weights": props["weights"]["default"],
            "options": {},
            "guidance": props["guidance"]["default"],
        }
    )
    assert (explicit.weights, explicit.guidance_scale, explicit.options) == (
        spec.weights,
        spec.guidance_scale,
        spec.options,
    )


def test_generate_images_defaults_are_the_spec_defaults():
    params = inspect.signature(generate_images).parameters
    spec = SamplerSpec.from_dict({"method": "ucgm"})
    assert params["guidance_scale"].default == spec.guidance_scale
    assert params["guidance_interval"].default == spec.guidance_interval
    assert params["quantize"].default == spec.quantize
    assert params["precision"].default == spec.precision


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
def test_default_guidance_interval_selects_every_step(transport):
    """Schema default [0, 1] vs the library's None (no interval): the guided networks test
    ``lo <= t <= hi`` on the network time, which lies in [0, 1] for every transport, so both guide every step."""
    spec = SamplerSpec.from_dict({"method": "ucgm"})
    assert spec.guidance_interval is None
    lo, hi = _sampler_schema()["guidance"]["properties"]["interval"]["default"]
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    net_t = orient(transport).network_time(t)
    assert bool(((lo <= net_t) & (net_t <= hi)).all()), (transport, net_t.min().item(), net_t.max().item())


def _readme_sampler_rows() -> dict:
    """The rows of config/README.md's ``samplers.<name>`` section: key -> the row's text."""
    text = (ROOT / "config" / "README.md").read_text()
    section = text.split("\n## `samplers.<name>`\n", 1)[1].split("\n## ", 1)[0]
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)` \| (.*) \|$", section, re.M)}
    assert set(rows) == set(_sampler_schema()), "config/README.md's samplers table and the schema's keys differ"
    return rows


def test_readme_states_the_spec_defaults_and_every_option():
    rows = _readme_sampler_rows()
    spec = SamplerSpec.from_dict({"method": "ucgm"})
    for key, value in (
        ("weights", spec.weights),
        ("precision", spec.precision),
        ("tf32", str(spec.tf32).lower()),
        ("compile", str(spec.compile).lower()),
    ):
        assert rows[key].startswith(f"*{value}*"), (key, rows[key][:80])
    missing = {m: [k for k in sampler_option_names(m) if f"`{k}`" not in rows["options"]] for m in SAMPLERS}
    assert not any(missing.values()), f"config/README.md's options row lacks {missing}"
