"""Helpers shared by the workflow scripts (spec parsing, logging, thread count)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import yaml


def load_spec(text_or_path: str):
    """JSON text, or the path of a JSON/YAML file."""
    s = text_or_path.strip()
    if s.startswith("{") or s.startswith("["):
        try:
            return json.loads(s)
        except json.JSONDecodeError as e:
            raise SystemExit(f"--spec: not valid JSON ({e})")
    path = Path(text_or_path)
    if not path.is_file():
        raise SystemExit(f"--spec: {text_or_path!r} is neither JSON text nor an existing file")
    with open(path) as f:
        return yaml.safe_load(f)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def set_threads(n) -> None:
    import torch

    if n:
        torch.set_num_threads(int(n))
        os.environ.setdefault("OMP_NUM_THREADS", str(n))
