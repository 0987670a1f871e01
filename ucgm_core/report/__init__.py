"""Tables, manifests and the paper's table and Fig. 2 CSVs, built from evaluation JSON files.

The workflow's report tools (``workflow/scripts/report.py``, ``paper_tables.py``, ``paper_figure.py``) map their
flags onto these functions; nothing here parses a command line.
"""

from .manifest import write_manifest
from .paper import (
    FIG2_COLUMNS,
    FIG2_COORDS,
    TABLE_COLUMNS,
    fig2_frame,
    paper_log_fid,
    paper_table,
    plot_fig2,
    reference_row,
)
from .table import COLUMNS, ReportError, labels_from_json, metric_series, results_table, row, write_csv

__all__ = [
    "COLUMNS",
    "FIG2_COLUMNS",
    "FIG2_COORDS",
    "ReportError",
    "TABLE_COLUMNS",
    "fig2_frame",
    "labels_from_json",
    "metric_series",
    "paper_log_fid",
    "paper_table",
    "plot_fig2",
    "reference_row",
    "results_table",
    "row",
    "write_csv",
    "write_manifest",
]
