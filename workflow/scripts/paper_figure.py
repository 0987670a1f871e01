"""Make one paper figure (PNG + CSV) from ucgm_core.figures_paper, or the manifest of an umbrella target.

Run by Snakemake's ``script:`` directive (workflow/rules/paper_figures.smk: ``params.figure`` names the figure,
``output.png`` / ``output.csv``, ``log[0]``) or by hand:

    python workflow/scripts/paper_figure.py figure fig8_beta --png out.png --csv out.csv
    python workflow/scripts/paper_figure.py manifest --out manifest.tsv FILE...
"""


import argparse
import contextlib
import importlib
import os
import sys
import traceback
from typing import Callable, Dict, List, Sequence

# figure name -> "module:function" in ucgm_core.figures_paper; each function takes (png, csv) and returns
# its key numbers as a dict. Imported lazily: a job imports only the module of its figure.
FIGURES: Dict[str, str] = {
    "fig7_pf_ode_1d": "closed_form:make_fig7",
    "fig8_beta": "closed_form:make_fig8",
}


def figure_function(name: str) -> Callable:
    """The maker of figure ``name``; an unknown name is refused with the known ones."""
    if name not in FIGURES:
        raise SystemExit(f"paper_figure.py: unknown figure {name!r}: expected one of {sorted(FIGURES)}")
    module, func = FIGURES[name].split(":")
    return getattr(importlib.import_module(f"ucgm_core.figures_paper.{module}"), func)


def make_figure(name: str, png: str, csv: str) -> None:
    """Write the figure and its CSV, and print its key numbers (the job's log)."""
    numbers = figure_function(name)(png, csv)
    for key, value in (numbers or {}).items():
        print(f"{name}: {key} = {value:.4f}", flush=True)
    print(f"wrote {png} and {csv}", flush=True)


def write_manifest(out: str, files: Sequence[str]) -> None:
    """A TSV of the umbrella target's files (path, bytes, sha256), written atomically."""
    from ucgm_core.io import atomic_write_bytes, sha256_file

    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise SystemExit(f"paper_figure.py manifest: expected files are missing: {missing}")
    lines: List[str] = ["path\tbytes\tsha256"]
    lines += [f"{f}\t{os.path.getsize(f)}\t{sha256_file(f)}" for f in files]
    atomic_write_bytes(out, ("\n".join(lines) + "\n").encode())
    print(f"wrote {out}: {len(files)} files", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("figure")
    f.add_argument("name", help=f"one of {sorted(FIGURES)}")
    f.add_argument("--png", required=True)
    f.add_argument("--csv", required=True)
    m = sub.add_parser("manifest")
    m.add_argument("--out", required=True)
    m.add_argument("files", nargs="+")
    a = p.parse_args(argv)
    if a.cmd == "figure":
        make_figure(a.name, a.png, a.csv)
    else:
        write_manifest(a.out, a.files)
    return 0


def _run_from_snakemake(smk) -> None:
    """The figure rules (``script:``): the figure named by ``params.figure``, output and errors in the log.
    The umbrella rules call the command line (``manifest``) from ``shell:``."""
    with open(smk.log[0], "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            make_figure(smk.params.figure, smk.output.png, smk.output.csv)
        except BaseException:
            traceback.print_exc()  # into the job's log; Snakemake prints the re-raised error too
            raise


if "snakemake" in globals():
    _run_from_snakemake(snakemake)  # noqa: F821 - injected by Snakemake's script: directive
elif __name__ == "__main__":
    sys.exit(main())
