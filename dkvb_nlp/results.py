"""results.json: the run records of a job, their schema, and the versions they were made with.

Schema (field names are fixed; runs may carry extra fields, e.g. `task_names`)::

    {"runs": [{"method": str, "seed": int, "scenario": str, "dataset": str,
               "accuracy_matrix": T x T fractions, "final_accuracy": float,
               "average_incremental_accuracy": float, "bwt": float, "forgetting": float,
               "macro_f1_matrix": T x T fractions or null, "train_seconds": float or null,
               "trainable_parameters": int or null, ...}],
     "config": {...}, "versions": {...}}

The four scalar metrics must agree with `summarize(accuracy_matrix)`; `make_run` fills them.
A method evaluated only after the last task (`finetune_joint`'s default) has null rows before
the last one, and null AIA, BWT and forgetting.
JSON has no NaN or infinity: non-finite floats in config or extra fields are written as null.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import numbers
import platform
import sys
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .metrics import SUMMARY_FIELDS, check_accuracy_matrix, summarize
from .io import atomic_write_json

__all__ = [
    "RUN_FIELDS",
    "make_results",
    "make_run",
    "read_results",
    "to_jsonable",
    "validate_results",
    "versions",
    "write_results",
]

RUN_FIELDS = (
    "method",
    "seed",
    "scenario",
    "dataset",
    "accuracy_matrix",
    *SUMMARY_FIELDS,
    "macro_f1_matrix",
    "train_seconds",
    "trainable_parameters",
)

# Distributions whose versions a result depends on; key in versions() -> distribution name.
_DISTRIBUTIONS = {
    "torch": "torch",
    "transformers": "transformers",
    "datasets": "datasets",
    "accelerate": "accelerate",
    "numpy": "numpy",
    "dkvb_nlp": "dkvb-nlp",
}

# Summary fields are recomputed from the matrix on validation; this only absorbs float noise.
_SUMMARY_TOLERANCE = 1e-9


def versions() -> dict:
    """Versions of python, the platform and the key packages (None for a package not installed)."""
    out: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    for key, dist in _DISTRIBUTIONS.items():
        try:
            out[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[key] = None
    # Only when torch is already loaded: importing it just to ask would cost seconds.
    torch = sys.modules.get("torch")
    if torch is not None:
        out["cuda"] = getattr(getattr(torch, "version", None), "cuda", None)
    return out


def to_jsonable(obj: Any) -> Any:
    """obj with numpy arrays/scalars, tuples and paths turned into JSON types; NaN/inf become None."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj  # str, None, or something json.dumps will name in its TypeError


def make_run(
    method: str,
    seed: int,
    scenario: str,
    dataset: str,
    accuracy_matrix,
    *,
    macro_f1_matrix=None,
    train_seconds: float | None = None,
    trainable_parameters: int | None = None,
    **extra,
) -> dict:
    """One run record with the scalar metrics computed from accuracy_matrix (extra fields kept)."""
    a = check_accuracy_matrix(accuracy_matrix, allow_unmeasured_rows=True)
    run = {
        "method": method,
        "seed": seed,
        "scenario": scenario,
        "dataset": dataset,
        "accuracy_matrix": _nulled(a),
        **summarize(a),
        "macro_f1_matrix": None if macro_f1_matrix is None else _nulled(np.asarray(macro_f1_matrix, float)),
        "train_seconds": None if train_seconds is None else float(train_seconds),
        "trainable_parameters": None if trainable_parameters is None else int(trainable_parameters),
    }
    clash = sorted(set(extra) & set(run))
    if clash:
        raise ValueError(f"extra fields {clash} clash with the schema's own fields")
    run.update(extra)
    _validate_run(run, 0)
    return run


def _nulled(matrix: np.ndarray) -> list:
    """The matrix as lists, an unmeasured (NaN) entry as None: the record equals its JSON."""
    return [[None if math.isnan(v) else v for v in row] for row in matrix.tolist()]


def make_results(runs, config: Mapping | None = None, versions_: Mapping | None = None) -> dict:
    """A results dict from run records; versions default to versions() now."""
    results = {
        "runs": list(runs),
        "config": dict(config or {}),
        "versions": dict(versions() if versions_ is None else versions_),
    }
    validate_results(results)
    return results


def _validate_run(run: Any, k: int) -> None:
    where = f"runs[{k}]"
    if not isinstance(run, Mapping):
        raise ValueError(f"{where} must be a dict; got {type(run).__name__}")
    missing = [f for f in RUN_FIELDS if f not in run]
    if missing:
        raise ValueError(f"{where} lacks fields {missing}; required: {list(RUN_FIELDS)}")
    for field in ("method", "scenario", "dataset"):
        if not isinstance(run[field], str) or not run[field]:
            raise ValueError(f"{where}.{field} must be a non-empty string; got {run[field]!r}")
    if isinstance(run["seed"], bool) or not isinstance(run["seed"], numbers.Integral):
        raise ValueError(f"{where}.seed must be an integer; got {run['seed']!r}")
    a = check_accuracy_matrix(run["accuracy_matrix"], f"{where}.accuracy_matrix", allow_unmeasured_rows=True)
    expected = summarize(a)
    for field in SUMMARY_FIELDS:
        value = run[field]
        if expected[field] is None:
            if value is not None:
                raise ValueError(f"{where}.{field} is {value!r} but its accuracy_matrix has unmeasured rows, "
                                 "so it must be null")
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not abs(float(value) - expected[field]) <= _SUMMARY_TOLERANCE
        ):
            raise ValueError(
                f"{where}.{field} is {value!r} but its accuracy_matrix gives {expected[field]!r}; "
                "build runs with make_run() or summarize()"
            )
    if run["macro_f1_matrix"] is not None:
        f1 = check_accuracy_matrix(run["macro_f1_matrix"], f"{where}.macro_f1_matrix", allow_unmeasured_rows=True)
        if f1.shape != a.shape:
            raise ValueError(
                f"{where}.macro_f1_matrix has shape {f1.shape}; its accuracy_matrix has {a.shape}"
            )
    seconds = run["train_seconds"]
    if seconds is not None and (
        isinstance(seconds, bool) or not isinstance(seconds, numbers.Real) or not seconds >= 0
    ):
        raise ValueError(f"{where}.train_seconds must be a number >= 0 or None; got {seconds!r}")
    params = run["trainable_parameters"]
    if params is not None and (
        isinstance(params, bool) or not isinstance(params, numbers.Integral) or params < 0
    ):
        raise ValueError(f"{where}.trainable_parameters must be an integer >= 0 or None; got {params!r}")
    names = run.get("task_names")
    if names is not None and (
        not isinstance(names, (list, tuple))
        or len(names) != a.shape[0]
        or not all(isinstance(n, str) for n in names)
    ):
        raise ValueError(f"{where}.task_names must be {a.shape[0]} strings (one per task); got {names!r}")


def validate_results(results: Any) -> None:
    """Raise a ValueError naming the first field of results that breaks the schema."""
    if not isinstance(results, Mapping):
        raise ValueError(f"results must be a dict with 'runs'; got {type(results).__name__}")
    runs = results.get("runs")
    if not isinstance(runs, (list, tuple)) or not runs:
        raise ValueError(f"results['runs'] must be a non-empty list of run dicts; got {runs!r}")
    for key in ("config", "versions"):
        if key in results and not isinstance(results[key], Mapping):
            raise ValueError(f"results[{key!r}] must be a dict; got {type(results[key]).__name__}")
    for k, run in enumerate(runs):
        _validate_run(run, k)


def write_results(results: Mapping, path) -> Path:
    """Validate results and write them atomically as JSON to path."""
    validate_results(results)
    # allow_nan=False: to_jsonable already nulled non-finite floats, so strict JSON is guaranteed.
    return atomic_write_json(path, to_jsonable(results), allow_nan=False)


def read_results(path) -> dict:
    """Read and validate a results.json."""
    with open(path, encoding="utf-8") as f:
        results = json.load(f)
    validate_results(results)
    return results
