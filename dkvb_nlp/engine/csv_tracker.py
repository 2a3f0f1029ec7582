"""A CSV experiment tracker for accelerate (`--report-to csv`): needs nothing but the standard library.

accelerate ships no CSV tracker, so this is a `GeneralTracker`: `<logging_dir>/<run_name>/`
gets `metrics.csv` (one row per `log` call: `step`, then one column per logged name, blank where
a row has no value; columns in order of first appearance) and `config.json` (the values given to
`store_init_configuration`). Each write replaces the whole file atomically, so a reader never
sees half a row; a file already there (a resumed run) is kept and appended to.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from accelerate.tracking import GeneralTracker

from ..io import atomic_write_json, atomic_write_text

METRICS_CSV = "metrics.csv"
CONFIG_JSON = "config.json"


class CSVTracker(GeneralTracker):
    """Scalars to `<logging_dir>/<run_name>/metrics.csv`, the configuration to `config.json`."""

    name = "csv"
    requires_logging_directory = True
    main_process_only = True

    def __init__(self, run_name: str, logging_dir: str | os.PathLike):
        super().__init__()
        self.run_name = run_name
        self.folder = Path(logging_dir) / run_name
        self.columns: list[str] = ["step"]
        self.rows: list[dict[str, str]] = []

    @property
    def tracker(self):
        return self.folder / METRICS_CSV

    def start(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / METRICS_CSV
        if path.is_file():  # a resumed run: keep what the earlier process recorded
            with path.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                self.columns = list(reader.fieldnames or ["step"])
                self.rows = list(reader)

    def store_init_configuration(self, values: dict):
        atomic_write_json(self.folder / CONFIG_JSON, values)

    def log(self, values: dict, step: int | None = None, **kwargs):
        row = {"step": "" if step is None else str(step)}
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise ValueError(f"csv tracker: {name}={value!r:.60} is not a number or a string")
            if name not in self.columns:
                self.columns.append(name)
            row[name] = repr(value) if isinstance(value, float) else str(value)  # repr: every digit
        self.rows.append(row)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.folder / METRICS_CSV, buf.getvalue())

    def finish(self):
        """Nothing is buffered: every `log` call already wrote the file."""
