#!/usr/bin/env python
"""Fetch one file from its mirrors, verified (rules ``download`` and ``fetch``, Snakemake ``script:``), or
safely extract an archive. By hand::

    python workflow/scripts/download.py --url URL [--url URL2 ...] [--name FILE] --sha256 HEX --out-dir DIR
    python workflow/scripts/download.py --extract ARCHIVE --out-dir DIR

Under Snakemake the values come from ``snakemake.params`` (``urls``, ``sha256``, ``md5``, ``sha256_key``, the
config's ``download`` section as ``settings``) and the output path, never through a shell string; messages go
to the rule's log. An error ends the run with status 1 and one line on stderr, no traceback.
"""

import argparse  # no "from __future__": Snakemake's script: directive puts its preamble before it
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

from ucgm_core.data.download import DownloadError, RemoteFile, fetch, name_from_url, safe_extract

SETTINGS = {
    "max_bytes": "max_bytes",
    "deadline_s": "deadline",
    "allow_unverified": "allow_unverified",  # config
    "retries": "retries",
    "timeout_s": "timeout",
}  # key under `download:` -> keyword of download.fetch


def run(job: dict, say: Callable[[str], None]) -> int:
    """Extract ``job["extract"]`` or fetch ``job["urls"]`` into ``job["out_dir"]``; 0 on success, else 1.
    ``job`` has every key of :func:`from_argv` (None where unset: the library's default applies)."""
    try:
        if job["extract"]:
            paths = safe_extract(job["extract"], job["out_dir"])
            say(f"extracted {len(paths)} members of {job['extract']} into {job['out_dir']}")
            return 0
        urls = tuple(job["urls"])
        spec = RemoteFile(job["name"] or name_from_url(urls[0]), urls, sha256=job["sha256"], md5=job["md5"])
        kw = {SETTINGS[k]: v for k, v in job["settings"].items() if k in SETTINGS and v is not None}
        say(str(fetch(spec, job["out_dir"], sha256_key=job["sha256_key"], log=say, **kw)))
        return 0
    except (DownloadError, ValueError, OSError) as e:
        say(f"error: {e}")
        first, *rest = str(e).splitlines()  # a DownloadError lists every attempt: the first line and the last
        print(f"download.py: error: {first}" + (f" (last: {rest[-1].strip(' -')})" if rest else ""), file=sys.stderr)
        return 1


def from_argv(argv: Optional[Sequence[str]] = None) -> dict:
    """The job of a run by hand (unset flags: the library's defaults)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--url", action="append", dest="urls", help="a mirror (repeatable, tried in order)")
    what.add_argument("--extract", metavar="ARCHIVE", help="safely extract ARCHIVE into --out-dir")
    p.add_argument("--out-dir", required=True, help="destination folder")
    p.add_argument("--name", help="file name (default: the URL's last component, percent-decoded, checked)")
    p.add_argument("--sha256", help="expected sha256 (of the decompressed content for .gz)")
    p.add_argument("--md5", help="expected md5 of the raw file")
    p.add_argument("--sha256-key", help="where the sha256 belongs (shown in messages)")
    p.add_argument("--max-bytes", type=int, help="size cap per mirror")
    p.add_argument("--deadline", type=float, dest="deadline_s", help="overall deadline in seconds")
    p.add_argument("--allow-unverified", action="store_true", default=None, help="record a first-seen sha256")
    p.add_argument("--retries", type=int, help="attempts per mirror")
    p.add_argument("--timeout", type=float, dest="timeout_s", help="socket timeout per read in seconds")
    a = vars(p.parse_args(argv))
    settings = {k: a.pop(k) for k in SETTINGS}
    return {**a, "settings": settings}


def from_snakemake(smk) -> dict:
    """The job of a Snakemake rule: the output path gives the folder and the file name."""
    out = Path(smk.output[0])
    p = smk.params
    return {
        "extract": None,
        "urls": list(p.urls),
        "name": out.name,
        "out_dir": str(out.parent),
        "sha256": p.sha256 or None,
        "md5": p.md5 or None,
        "sha256_key": p.sha256_key,
        "settings": dict(p.settings),
    }


if __name__ == "__main__":
    if "snakemake" in globals():
        with open(snakemake.log[0], "w") as f:  # noqa: F821 (set by Snakemake's script: directive)
            status = run(from_snakemake(snakemake), lambda m: print(m, file=f, flush=True))  # noqa: F821
    else:
        status = run(from_argv(), lambda m: print(m, flush=True))
    sys.exit(status)
