"""Reports of a continual-learning job: results.json, summary tables, accuracy CSVs and plots.

One idea per module (the results.json schema itself, read/write and versions, is the neutral
`dkvb_nlp.results`, which the engine writes records with): `aggregate` (grouping runs by
method, mean/std over seeds), `tables`, `matrix_csv`, `plots`, `naming` (output file names),
`html` (report.html), `open_world_table` (the open-world rows), `writer` (write_report). Atomic writes live in `dkvb_nlp.io`.
"""

from .aggregate import MethodSummary, aggregate, group_runs
from .html import report_html
from .matrix_csv import accuracy_csv_texts, write_accuracy_csvs
from .plots import plot_pngs, write_plots
from ..results import (
    RUN_FIELDS,
    make_results,
    make_run,
    read_results,
    validate_results,
    versions,
    write_results,
)
from .tables import format_table, print_table
from .writer import write_report

__all__ = [
    "RUN_FIELDS",
    "MethodSummary",
    "accuracy_csv_texts",
    "aggregate",
    "format_table",
    "group_runs",
    "make_results",
    "make_run",
    "plot_pngs",
    "print_table",
    "read_results",
    "report_html",
    "validate_results",
    "versions",
    "write_accuracy_csvs",
    "write_plots",
    "write_report",
    "write_results",
]
