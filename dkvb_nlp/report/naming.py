"""Output file names of a report, in one place.

- `results.json`, `summary.txt` (aligned table), `summary.md` (markdown table)
- `accuracy_matrix_<method>.csv`: the mean accuracy matrix over the method's seeds (the run's
  own matrix for one seed); `accuracy_matrix_<method>_seed<k>.csv`: one per seed, written only
  when the method has two or more seeds
- `accuracy_heatmap_<method>.png`: heatmap of the mean matrix
- `accuracy_curves.png`: average accuracy on seen tasks and on all tasks, all methods
- `report.html`: the table and every plot on one self-contained page (html.py)

`<method>` is the group label (see aggregate.py) with every character outside
[A-Za-z0-9._-] replaced by "_".
"""

from __future__ import annotations

import re
from typing import Iterable

__all__ = [
    "CURVES_PNG",
    "REPORT_HTML",
    "RESULTS_JSON",
    "SUMMARY_MD",
    "SUMMARY_TXT",
    "accuracy_csv_name",
    "heatmap_png_name",
    "slug",
    "slugs",
]

RESULTS_JSON = "results.json"
SUMMARY_TXT = "summary.txt"
SUMMARY_MD = "summary.md"
CURVES_PNG = "accuracy_curves.png"
REPORT_HTML = "report.html"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def slug(label: str) -> str:
    """label made safe as part of a file name."""
    return _UNSAFE.sub("_", label) or "_"


def slugs(labels: Iterable[str]) -> dict[str, str]:
    """label -> slug for every label, or a ValueError if two labels would share a file name."""
    out: dict[str, str] = {}
    for label in labels:
        s = slug(label)
        other = next((l for l, t in out.items() if t == s), None)
        if other is not None:
            raise ValueError(
                f"methods {other!r} and {label!r} both map to file name part {s!r}; "
                "rename one (file names keep only letters, digits, '.', '_' and '-')"
            )
        out[label] = s
    return out


def accuracy_csv_name(method_slug: str, seed: int | None = None) -> str:
    """accuracy_matrix_<method>.csv (mean over seeds), or ..._seed<k>.csv for one seed."""
    suffix = "" if seed is None else f"_seed{seed}"
    return f"accuracy_matrix_{method_slug}{suffix}.csv"


def heatmap_png_name(method_slug: str) -> str:
    """accuracy_heatmap_<method>.png."""
    return f"accuracy_heatmap_{method_slug}.png"
