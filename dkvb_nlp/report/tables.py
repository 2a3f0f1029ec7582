"""The summary table: one row per method, numbers aggregated over seeds.

Columns: method, seeds, final accuracy, AIA, BWT, forgetting (all in %, "mean ± std" over
seeds, std omitted for one seed), train time (s, mean), trainable parameters (mean). A value no
run recorded prints as "-". Styles: "text" (aligned plain text) and "markdown".
"""

from __future__ import annotations

from typing import Mapping

from .aggregate import MethodSummary, aggregate

__all__ = ["TABLE_STYLES", "format_table", "print_table", "table_rows"]

TABLE_STYLES = ("text", "markdown")

_HEADER = (
    "method",
    "seeds",
    "final acc (%)",
    "AIA (%)",
    "BWT (%)",
    "forgetting (%)",
    "train time (s)",
    "trainable params",
)
# Numbers read best right-aligned; the method name left-aligned.
_RIGHT = (False, True, True, True, True, True, True, True)


def _percent(stat: tuple[float, float] | None, n: int) -> str:
    if stat is None:
        return "-"
    mean, std = stat
    return f"{100 * mean:.2f}" if n == 1 else f"{100 * mean:.2f} ± {100 * std:.2f}"


def _row(s: MethodSummary) -> list[str]:
    n = len(s.runs)
    seconds = s.scalars["train_seconds"]
    params = s.scalars["trainable_parameters"]
    return [
        s.label,
        str(n),
        _percent(s.scalars["final_accuracy"], n),
        _percent(s.scalars["average_incremental_accuracy"], n),
        _percent(s.scalars["bwt"], n),
        _percent(s.scalars["forgetting"], n),
        "-" if seconds is None else f"{seconds[0]:.1f}",
        "-" if params is None else f"{round(params[0]):,}",
    ]


def table_rows(results: Mapping) -> list[list[str]]:
    """Header row then one row of formatted cells per method."""
    return [list(_HEADER)] + [_row(s) for s in aggregate(results)]


def format_table(results: Mapping, style: str = "text") -> str:
    """The summary table as aligned plain text or markdown."""
    if style not in TABLE_STYLES:
        raise ValueError(f"unknown table style {style!r}; accepted: {', '.join(TABLE_STYLES)}")
    rows = table_rows(results)
    if style == "markdown":
        # A "|" in a method name would split its cell.
        rows = [[c.replace("|", "\\|") for c in r] for r in rows]
    widths = [max(len(r[c]) for r in rows) for c in range(len(_HEADER))]

    def line(cells: list[str]) -> list[str]:
        return [c.rjust(w) if right else c.ljust(w) for c, w, right in zip(cells, widths, _RIGHT)]

    if style == "markdown":
        rule = [("-" * (w - 1) + ":") if right else "-" * w for w, right in zip(widths, _RIGHT)]
        body = [line(rows[0]), rule] + [line(r) for r in rows[1:]]
        return "\n".join("| " + " | ".join(cells) + " |" for cells in body) + "\n"
    body = [line(rows[0]), ["-" * w for w in widths]] + [line(r) for r in rows[1:]]
    return "\n".join("  ".join(cells).rstrip() for cells in body) + "\n"


def print_table(results: Mapping, style: str = "text") -> str:
    """Print the summary table and return it."""
    table = format_table(results, style)
    print(table, end="")
    return table
