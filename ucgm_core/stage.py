"""What the stage tools of ``workflow/scripts/`` share: reading a spec, a time-stamped log line, the thread
count. Kept in the package so that a tool runs by hand, from a rule or imported by a test, with no
``sys.path`` set-up."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Optional, TextIO


def load_spec(text_or_path: str, what: str = "--spec") -> Any:
    """JSON text, or the path of a JSON/YAML file. ``what`` names the flag in the error (a ValueError)."""
    import yaml

    s = text_or_path.strip()
    if s.startswith("{") or s.startswith("["):
        try:
            return json.loads(s)
        except json.JSONDecodeError as e:
            raise ValueError(f"{what}: not valid JSON ({e})") from None
    path = Path(text_or_path)
    if not path.is_file():
        raise ValueError(f"{what}: {text_or_path!r} is neither JSON text nor an existing file")
    with open(path) as f:
        return yaml.safe_load(f)


def log(msg: str, file: Optional[TextIO] = None) -> None:
    """``[HH:MM:SS] msg`` to ``file`` (default stdout), flushed (job logs are read while the job runs)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=file, flush=True)


def set_threads(n: int | None) -> None:
    """``torch.set_num_threads(n)`` (and ``OMP_NUM_THREADS`` for what starts later); None or 0: unchanged."""
    import torch

    if n:
        torch.set_num_threads(int(n))
        os.environ.setdefault("OMP_NUM_THREADS", str(n))
