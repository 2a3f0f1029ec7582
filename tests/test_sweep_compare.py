"""benchmarks/sweep_values.py --compare: the cross-dataset table behind the per-dataset presets."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sweep_module():
    spec = importlib.util.spec_from_file_location("sweep_values", ROOT / "benchmarks" / "sweep_values.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def record(tmp_path, name: str, rows: list[dict]) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"scenario": "class_il", "dataset": name, "seed": 0, "rows": rows}))
    return path


def test_compare_ranks_the_settings_every_sweep_has_by_mean_validation(tmp_path, capsys):
    a = {"values": "ridge", "ridge_features": 8, "ridge": 10.0}
    b = {"values": "ridge", "ridge_features": 8, "ridge": 100.0}
    only_one = {"values": "counts", "smoothing": 0.1}
    paths = [record(tmp_path, "short", [{**a, "val": 90.0, "test": 89.0}, {**b, "val": 80.0, "test": 79.0},
                                        {**only_one, "val": 99.0, "test": 99.0}]),
             record(tmp_path, "long", [{**a, "val": 60.0, "test": 58.0}, {**b, "val": 75.0, "test": 74.0}])]
    table = sweep_module().compare(paths)
    # the counts row is in one sweep only; b's mean (80 + 75) / 2 beats a's (90 + 60) / 2
    assert [row["setting"]["ridge"] for row in table] == [100.0, 10.0]
    assert [row["mean_val"] for row in table] == [77.5, 75.0]
    # the worst shortfall from a dataset's best validation row (short's best is the counts row, 99)
    assert [row["max_shortfall"] for row in table] == [19.0, 15.0]
    assert table[0]["per_dataset"] == {"short": (80.0, 79.0), "long": (75.0, 74.0)}
    assert "best validation per dataset: short 99.00, long 75.00" in capsys.readouterr().out
