"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


def _fixtures_root() -> Path:
    env = os.environ.get("UCGM_FIXTURES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The reference fixtures (../shared/fixtures next to the checkout, or $UCGM_FIXTURES)."""
    root = _fixtures_root()
    if not (root / "ucgm_reference").is_dir():
        pytest.skip(f"reference fixtures not found at {root} (set UCGM_FIXTURES)")
    return root
