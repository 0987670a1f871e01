"""The training job's ``data`` keys reach the loader: ``data.hflip`` (random horizontal flips, on by default as
in the original) switched off trains on the plain latents only (the loader's state records its flip
probability; ``tests/data/test_data_latents.py`` checks that probability 0 draws no flipped row)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch

from test_preemption import SPEC, TRAIN, clean_env, make_latent_dir

from ucgm_core.training.run import SpecError, TrainSpec


@pytest.mark.parametrize("hflip, flip_prob", [(None, 0.5), (True, 0.5), (False, 0.0)])
def test_hflip_sets_the_loaders_flip_probability(tmp_path, hflip, flip_prob):
    spec = copy.deepcopy(SPEC)
    spec["train"].update(steps=2, checkpoint_every=2)
    if hflip is not None:
        spec["data"]["hflip"] = hflip
    args = ["--latents", str(make_latent_dir(tmp_path)), "--spec", json.dumps(spec), "--threads", "1"]
    args += ["--out-dir", str(tmp_path / "out"), "--state-dir", str(tmp_path / "state")]
    run = subprocess.run([sys.executable, TRAIN, *args], capture_output=True, text=True, env=clean_env())
    assert run.returncode == 0, run.stdout + run.stderr
    state = torch.load(next((tmp_path / "state").glob("*/state.pt")), weights_only=True)
    assert state["loader"]["flip_prob"] == flip_prob and state["train"]["step"] == 2


def test_hflip_is_a_data_key():
    spec = {"architecture": "UNet-S", "objective": {}, "train": {"steps": 1, "batch_size": 4}}
    assert TrainSpec.from_dict({**spec, "data": {"dataset": "toy", "hflip": False}}).data.hflip is False
    assert TrainSpec.from_dict({**spec, "data": {"dataset": "toy"}}).data.hflip is True
    with pytest.raises(SpecError, match=r"spec data: unknown keys \['flip'\]"):
        TrainSpec.from_dict({**spec, "data": {"dataset": "toy", "flip": False}})
