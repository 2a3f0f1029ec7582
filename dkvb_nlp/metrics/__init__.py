"""Continual-learning metrics from an accuracy matrix, and per-evaluation accuracy / macro-F1.

A neutral module (numpy only): the engine, the reports, vision and the benchmarks all read
their metrics here, so no import runs from report/ back up to engine/.

The accuracy matrix `A` is T x T: `A[i][j]` is the test accuracy on task j after training
task i, a fraction in [0, 1]. Every entry must be measured (also the not-yet-trained tasks
above the diagonal: the "accuracy on all tasks" curve and forward transfer read them).

- final accuracy: mean of the last row.
- average incremental accuracy (AIA): mean over i of mean(A[i][:i+1]).
- backward transfer (BWT, Lopez-Paz & Ranzato, 2017): mean over j < T-1 of A[T-1][j] - A[j][j].
- forgetting (Chaudhry et al., 2018): mean over j < T-1 of max_{j <= l <= T-2} A[l][j] - A[T-1][j].
- forward transfer (FWT, Lopez-Paz & Ranzato, 2017): mean over j >= 1 of A[j-1][j] - b[j], with
  b[j] the accuracy of the untrained (randomly initialised) model on task j.

With a single task (T == 1) there is nothing to look back (or forward) on: BWT, forgetting
and FWT are 0.0, not None, so that they average over seeds and print like any other value.

A method that learns only once, after the last task (`finetune_joint`'s default: the
multi-task upper bound), is evaluated only then. Its earlier rows are unmeasured: all NaN
(None in JSON). `check_accuracy_matrix(..., allow_unmeasured_rows=True)` accepts such a
matrix, `summarize` gives its final accuracy and None for the metrics that need the earlier
rows (AIA, BWT, forgetting), and those metric functions refuse it.

The same metrics, forward transfer included, load as an `evaluate` module shipped in this package
(offline): `evaluate.load(continual_learning_metric_path())`; its script calls the functions here.

Since the max in forgetting includes l = j, forgetting_j >= A[j][j] - A[T-1][j] = -BWT_j per
task, hence forgetting >= -BWT; both are 0 when every task keeps its just-trained accuracy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = [
    "accuracy",
    "average_incremental_accuracy",
    "bwt",
    "check_accuracy_matrix",
    "continual_learning_metric_path",
    "final_accuracy",
    "forgetting",
    "forward_transfer",
    "macro_f1",
    "SUMMARY_FIELDS",
    "summarize",
    "unmeasured_rows",
]

# The names under which summarize() reports, and results.json stores, the scalar metrics.
SUMMARY_FIELDS = ("final_accuracy", "average_incremental_accuracy", "bwt", "forgetting")


def check_accuracy_matrix(matrix, name: str = "accuracy matrix", *, allow_unmeasured_rows: bool = False) -> np.ndarray:
    """The matrix as float64, or a ValueError unless it is a non-empty finite square in [0, 1].

    With `allow_unmeasured_rows`, rows before the last may be entirely NaN/None (not evaluated).
    """
    try:
        a = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError) as err:
        # Ragged nested lists land here; say so instead of numpy's "inhomogeneous shape".
        lengths = _row_lengths(matrix)
        if lengths is not None and len(set(lengths)) > 1:
            raise ValueError(
                f"{name} must be a T x T array of numbers (one accuracy per task in every row); "
                f"its rows have lengths {lengths}"
            ) from None
        raise ValueError(f"{name} must be a T x T array of numbers; got {matrix!r} ({err})") from None
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"{name} must be square (T x T); got shape {a.shape}")
    if a.shape[0] == 0:
        raise ValueError(f"{name} is empty; at least one task (1 x 1) is needed")
    finite = np.isfinite(a)
    blank = _blank_rows(a)
    if allow_unmeasured_rows:
        # A whole row of NaN is "not evaluated after that task"; the last row must be measured.
        finite[[i for i in blank if i < a.shape[0] - 1]] = True
    if not np.all(finite):
        if blank and not allow_unmeasured_rows:
            raise ValueError(f"{name} has rows {blank} not evaluated (a method evaluated only after the last "
                             "task); this metric needs every row")
        bad = tuple(int(k) for k in np.argwhere(~finite)[0])
        raise ValueError(
            f"{name} must be finite; entry {bad} is {a[bad]} "
            "(evaluate every task after every task, also the ones not trained yet)"
        )
    lo, hi = np.nanmin(a), np.nanmax(a)
    if lo < 0.0 or hi > 1.0:
        # The usual slip is percentages; every report multiplies by 100 itself.
        raise ValueError(
            f"{name} values must be fractions in [0, 1], not percentages; "
            f"got min {lo:g}, max {hi:g}"
        )
    return a


def _row_lengths(matrix) -> list[int] | None:
    """The length of every row of a nested sequence, or None when it is not one."""
    try:
        return [len(row) for row in matrix]
    except TypeError:
        return None


def _blank_rows(a: np.ndarray) -> list[int]:
    """Indices of the all-NaN rows of a float matrix (no checks)."""
    return [int(i) for i in np.flatnonzero(np.isnan(a).all(axis=1))]


def unmeasured_rows(matrix) -> list[int]:
    """Indices of the rows that were not evaluated (all NaN); [] for a complete matrix."""
    return _blank_rows(check_accuracy_matrix(matrix, allow_unmeasured_rows=True))


def final_accuracy(matrix) -> float:
    """Mean accuracy over all tasks after training the last task."""
    a = check_accuracy_matrix(matrix, allow_unmeasured_rows=True)
    return float(a[-1].mean())


def average_incremental_accuracy(matrix) -> float:
    """Mean over training steps i of the mean accuracy on the tasks seen so far (0..i)."""
    a = check_accuracy_matrix(matrix)
    return float(np.mean([a[i, : i + 1].mean() for i in range(a.shape[0])]))


def bwt(matrix) -> float:
    """Backward transfer: mean of A[T-1][j] - A[j][j] over j < T-1 (0.0 when T == 1)."""
    a = check_accuracy_matrix(matrix)
    t = a.shape[0]
    if t == 1:
        return 0.0
    return float(np.mean(a[-1, :-1] - np.diag(a)[:-1]))


def forgetting(matrix) -> float:
    """Forgetting: mean over j < T-1 of max_{j <= l < T-1} A[l][j] - A[T-1][j] (0.0 when T == 1)."""
    a = check_accuracy_matrix(matrix)
    t = a.shape[0]
    if t == 1:
        return 0.0
    # Rows above the diagonal are before task j was trained; they must not count as "best".
    best = [a[j : t - 1, j].max() for j in range(t - 1)]
    return float(np.mean(np.asarray(best) - a[-1, :-1]))


def forward_transfer(matrix, baseline: Sequence[float]) -> float:
    """Forward transfer: mean over j >= 1 of A[j-1][j] - baseline[j] (0.0 when T == 1)."""
    a = check_accuracy_matrix(matrix)
    t = a.shape[0]
    b = np.asarray(baseline, dtype=np.float64)
    if b.shape != (t,):
        raise ValueError(f"baseline must hold one accuracy per task, shape ({t},); got shape {b.shape}")
    if not np.all(np.isfinite(b)):
        raise ValueError(f"baseline must be finite; got {b.tolist()}")
    if b.min() < 0.0 or b.max() > 1.0:
        raise ValueError(
            f"baseline values must be fractions in [0, 1], not percentages; got min {b.min():g}, max {b.max():g}"
        )
    if t == 1:
        return 0.0
    return float(np.mean(np.diag(a, k=1) - b[1:]))


def summarize(matrix) -> dict:
    """The scalar metrics of an accuracy matrix, keyed by SUMMARY_FIELDS.

    With unmeasured rows (a method evaluated only after the last task), only the final accuracy
    is defined; the other fields are None.
    """
    a = check_accuracy_matrix(matrix, allow_unmeasured_rows=True)
    if _blank_rows(a):
        return {field: (float(a[-1].mean()) if field == "final_accuracy" else None) for field in SUMMARY_FIELDS}
    return {
        "final_accuracy": final_accuracy(a),
        "average_incremental_accuracy": average_incremental_accuracy(a),
        "bwt": bwt(a),
        "forgetting": forgetting(a),
    }


def continual_learning_metric_path() -> str:
    """The folder of the `evaluate` module of these metrics, for `evaluate.load(path)` (offline).

    `evaluate.load(continual_learning_metric_path())` gives a metric whose `compute(accuracy_matrix=
    rows, baseline=None)` returns `summarize`'s fields plus `forward_transfer` (None without a
    baseline), computed by the functions of this module.
    """
    return str(Path(__file__).resolve().parent / "continual_learning")


def _check_predictions(predictions, labels) -> tuple[np.ndarray, np.ndarray]:
    p, y = np.asarray(predictions), np.asarray(labels)
    if p.ndim != 1 or y.ndim != 1:
        raise ValueError(
            f"predictions and labels must be 1-d class ids; got shapes {p.shape} and {y.shape}"
        )
    if p.shape != y.shape:
        raise ValueError(
            f"predictions and labels must have the same length; got {p.shape[0]} and {y.shape[0]}"
        )
    if y.size == 0:
        raise ValueError("predictions and labels are empty; at least one example is needed")
    return p, y


def accuracy(predictions, labels) -> float:
    """Fraction of predictions equal to their labels."""
    p, y = _check_predictions(predictions, labels)
    return float(np.mean(p == y))


def macro_f1(predictions, labels) -> float:
    """F1 averaged over the classes present in labels (sklearn: labels=unique(labels), average="macro")."""
    p, y = _check_predictions(predictions, labels)
    # A test split of one task holds only that task's classes; averaging over every class the
    # model can output would add spurious zeros for classes that could not be scored.
    scores = []
    for c in np.unique(y):
        tp = np.sum((p == c) & (y == c))
        fp = np.sum((p == c) & (y != c))
        fn = np.sum((p != c) & (y == c))
        # 2PR/(P+R) rewritten without P and R, so a class never predicted scores 0 instead of
        # dividing by zero; the denominator is > 0 since c occurs in the labels (fn + tp >= 1).
        scores.append(2.0 * tp / (2.0 * tp + fp + fn))
    return float(np.mean(scores))
