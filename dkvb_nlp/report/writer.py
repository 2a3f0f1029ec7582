"""write_report: every report file of a job from its results dict, in one call.

Writes into out_dir (created if missing): results.json, summary.txt, summary.md, the
accuracy-matrix CSVs, the PNG plots and report.html (the table and plots on one page; names
in naming.py). All content is rendered in
memory before the first write, so bad results (schema errors, duplicate seeds, method names
that collide as file names, a failing plot) leave out_dir as it was; each file is then
written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from ..io import atomic_write_bytes, atomic_write_text
from .matrix_csv import accuracy_csv_texts
from .html import report_html
from .naming import REPORT_HTML, RESULTS_JSON, SUMMARY_MD, SUMMARY_TXT
from .plots import plot_pngs
from ..results import validate_results, write_results
from .tables import format_table

__all__ = ["write_report"]


def write_report(results: Mapping, out_dir, *, echo: bool = True) -> dict[str, Path]:
    """Write results.json, tables, CSVs, plots and report.html into out_dir (echo prints the table); name -> path."""
    validate_results(results)
    texts = {SUMMARY_TXT: format_table(results, "text"), SUMMARY_MD: format_table(results, "markdown")}
    texts.update(accuracy_csv_texts(results))
    pngs = plot_pngs(results)
    texts[REPORT_HTML] = report_html(results, pngs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # results.json first: should a later write fail (disk full), the numbers are already safe.
    paths = {RESULTS_JSON: write_results(results, out_dir / RESULTS_JSON)}
    paths.update({name: atomic_write_text(out_dir / name, text) for name, text in texts.items()})
    paths.update({name: atomic_write_bytes(out_dir / name, data) for name, data in pngs.items()})
    if echo:
        print(texts[SUMMARY_TXT], end="")
    return paths
