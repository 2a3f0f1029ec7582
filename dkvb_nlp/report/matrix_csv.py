"""Accuracy matrices as CSV: rows = after training task i, columns = evaluated on task j.

Per method `accuracy_matrix_<method>.csv` holds the mean matrix over its seeds (the run's own
matrix for a single seed); with two or more seeds each seed also gets
`accuracy_matrix_<method>_seed<k>.csv`. The top-left cell is "after \\ on"; the other header
cells and the first column are task names. Values are fractions in [0, 1]. When seeds order
the tasks differently, a seed's file uses that seed's own order and names, and the mean is per
dataset (task_type_il) or by position (other scenarios; see aggregate.py).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..io import atomic_write_text
from .aggregate import aggregate
from .naming import accuracy_csv_name, slugs

__all__ = ["accuracy_csv_texts", "matrix_csv_text", "write_accuracy_csvs"]

CORNER = "after \\ on"


def matrix_csv_text(matrix, task_names: Sequence[str]) -> str:
    """A T x T matrix as CSV text with task names as row and column headers."""
    a = np.asarray(matrix, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] != len(task_names):
        raise ValueError(
            f"matrix must be T x T with T = {len(task_names)} task names; got shape {a.shape}"
        )
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([CORNER, *task_names])
    for name, row in zip(task_names, a):
        # repr-precision floats: the CSV must round-trip to the numbers in results.json. A row
        # not evaluated (NaN: a method that learns only after the last task) stays empty.
        writer.writerow([name, *("" if np.isnan(v) else repr(float(v)) for v in row)])
    return buf.getvalue()


def accuracy_csv_texts(results: Mapping) -> dict[str, str]:
    """The accuracy-matrix CSVs of every method, file name -> CSV text (nothing written)."""
    summaries = aggregate(results)
    names = slugs(s.label for s in summaries)
    files: dict[str, str] = {}

    def add(name: str, text: str) -> None:
        if name in files:
            # e.g. method "a" with seed 1 and a method called "a_seed1"
            raise ValueError(f"two outputs would be named {name}; rename a method")
        files[name] = text

    for s in summaries:
        add(accuracy_csv_name(names[s.label]), matrix_csv_text(s.accuracy_mean, s.task_names))
        if len(s.runs) > 1:
            for run in s.runs:
                # A seed's own matrix is in its own task order (the mean may be reordered).
                own = run.get("task_names") if s.order != "shared" else None
                add(
                    accuracy_csv_name(names[s.label], run["seed"]),
                    matrix_csv_text(run["accuracy_matrix"], own or s.task_names),
                )
    return files


def write_accuracy_csvs(results: Mapping, out_dir) -> dict[str, Path]:
    """Write the accuracy-matrix CSVs of every method into out_dir; file name -> path."""
    out_dir = Path(out_dir)
    texts = accuracy_csv_texts(results)
    return {name: atomic_write_text(out_dir / name, text) for name, text in texts.items()}
