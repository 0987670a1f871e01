"""Make one paper figure (PNG + CSV) from ucgm_core.figures_paper, or the manifest of an umbrella target.

Run by Snakemake's ``script:`` directive (workflow/rules/paper_figures.smk: ``params.figure`` names the figure,
``output.png`` / ``output.csv``, ``log[0]``) or by hand:

    python workflow/scripts/paper_figure.py figure fig8_beta --png out.png --csv out.csv
    python workflow/scripts/paper_figure.py manifest --out manifest.tsv FILE...

The command line only: the figures are :func:`ucgm_core.figures_paper.registry.make_figure`, the manifest
:func:`ucgm_core.report.write_manifest`.
"""

import argparse
import contextlib
import sys
import traceback
from typing import Sequence

from ucgm_core.figures_paper.registry import FIGURES, UnknownFigureError, make_figure
from ucgm_core.report import ReportError, write_manifest


def figure(name: str, png: str, csv: str) -> None:
    """Write the figure and its CSV, and print its key numbers (the job's log)."""
    for key, value in make_figure(name, png, csv).items():
        print(f"{name}: {key} = {value:.4f}", flush=True)
    print(f"wrote {png} and {csv}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; a bad input ends the run with one line naming it (SystemExit)."""
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
    try:
        if a.cmd == "figure":
            figure(a.name, a.png, a.csv)
        else:
            write_manifest(a.out, a.files)
            print(f"wrote {a.out}: {len(a.files)} files", flush=True)
    except (UnknownFigureError, ReportError) as e:  # an unknown figure, a missing file
        raise SystemExit(f"paper_figure.py {a.cmd}: {e}") from None
    return 0


def _run_from_snakemake(smk) -> None:
    """The figure rules (``script:``): the figure named by ``params.figure``, output and errors in the log.
    The umbrella rules call the command line (``manifest``) from ``shell:``."""
    with open(smk.log[0], "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            figure(smk.params.figure, smk.output.png, smk.output.csv)
        except BaseException:
            traceback.print_exc()  # into the job's log; Snakemake prints the re-raised error too
            raise


if "snakemake" in globals():
    _run_from_snakemake(snakemake)  # noqa: F821 - injected by Snakemake's script: directive
elif __name__ == "__main__":
    sys.exit(main())
