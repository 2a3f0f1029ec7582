"""Runs grouped by method and aggregated over seeds: the numbers every table, CSV and plot shows.

A group is one method on one (dataset, scenario). When all runs share a single (dataset,
scenario), a group's label is the method name; otherwise it is "dataset/scenario/method", so
runs on different benchmarks are never averaged together. Groups keep the order in which
their first run appears. Spread over seeds is the sample standard deviation (ddof=1), and 0.0
for a single seed.

Seeds that order the tasks differently (each run records its `task_names`):

- task_type_il (each task is one dataset, e.g. one GLUE task): every seed's matrix is reordered,
  rows and columns alike, to the first run's task order before averaging, so cell (i, j) of the
  mean is "accuracy on dataset j after training dataset i" whatever position either had in a
  seed (`MethodSummary.order == "by_name"`). The per-seed records and the curves (x = number of
  tasks trained so far) stay by position.
- class_il / domain_il (and any other scenario): tasks are class groups or domains drawn per
  seed, so there is no name to key on; the mean matrix is by position (row i = after the i-th
  task of each seed) and the task names become task1..taskT (`order == "by_position"`).

`MethodSummary.learned[i, j]` is True where task j had been trained once row i was measured,
in every seed (the lower triangle with the diagonal when all seeds share one order); plots
leave the other cells blank.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from ..metrics import SUMMARY_FIELDS
from ..results import validate_results

__all__ = ["MethodSummary", "aggregate", "group_runs", "mean_std", "task_names"]

# Scenarios whose tasks are whole datasets: a task name means the same task in every seed.
NAME_KEYED_SCENARIOS = ("task_type_il",)

# Per-run scalars aggregated over seeds, in the order tables show them.
SCALAR_FIELDS = (*SUMMARY_FIELDS, "train_seconds", "trainable_parameters")


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0.0 for one value) of a non-empty sequence."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("mean_std needs at least one value; got none")
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else 0.0)


def group_runs(results: Mapping) -> dict[str, list[dict]]:
    """Runs keyed by group label (method, or dataset/scenario/method), in first-appearance order."""
    validate_results(results)
    runs = results["runs"]
    several = len({(r["dataset"], r["scenario"]) for r in runs}) > 1
    groups: dict[str, list[dict]] = {}
    for run in runs:
        label = f"{run['dataset']}/{run['scenario']}/{run['method']}" if several else run["method"]
        groups.setdefault(label, []).append(run)
    for label, members in groups.items():
        seeds = [r["seed"] for r in members]
        dup = sorted({s for s in seeds if seeds.count(s) > 1})
        if dup:
            # Averaging a seed twice would understate the spread; this is usually a merge slip.
            raise ValueError(
                f"method {label!r} has several runs with seed(s) {dup}; seeds must be unique"
            )
        sizes = {len(r["accuracy_matrix"]) for r in members}
        if len(sizes) > 1:
            raise ValueError(
                f"method {label!r} has runs with different task counts {sorted(sizes)}; "
                "seeds of one method must share the task sequence length"
            )
    return groups


def task_names(runs, config: Mapping | None = None) -> list[str]:
    """Task names shared by runs (their `task_names`, else config['task_names']), else task1..taskT."""
    t = len(runs[0]["accuracy_matrix"])
    named = [r.get("task_names") for r in runs]
    if all(n is not None for n in named) and all(list(n) == list(named[0]) for n in named):
        return list(named[0])
    configured = (config or {}).get("task_names")
    if configured is not None and len(configured) == t and not any(n is not None for n in named):
        return [str(n) for n in configured]
    # Seeds with differently ordered tasks: row i is still "the i-th task", just not one name.
    return [f"task{j + 1}" for j in range(t)]


@dataclass
class MethodSummary:
    """One method's runs and their seed-aggregated numbers."""

    label: str
    runs: list[dict]
    task_names: list[str]
    accuracy_mean: np.ndarray  # (T, T) mean accuracy matrix over seeds
    accuracy_std: np.ndarray  # (T, T) its sample std (zeros for one seed)
    # field -> (mean, std), or None when no run of the method recorded it
    scalars: dict[str, tuple[float, float] | None] = field(default_factory=dict)
    # (T, T) bool: task j already trained when row i was measured, in every seed; None = j <= i
    learned: np.ndarray | None = None
    # "shared" (one task order), "by_name" (reordered per dataset) or "by_position"
    order: str = "shared"

    def __post_init__(self) -> None:
        if self.learned is None:
            t = len(self.task_names)
            self.learned = np.tril(np.ones((t, t), dtype=bool))

    @property
    def seeds(self) -> list[int]:
        """The seeds of the runs, in run order."""
        return [r["seed"] for r in self.runs]


def _name_order(runs) -> list[list[int]] | None:
    """Per run, the positions of the first run's tasks in that run, when task_type_il seeds order
    the same uniquely named tasks differently; None when there is nothing to reorder."""
    if any(r["scenario"] not in NAME_KEYED_SCENARIOS for r in runs):
        return None
    named = [r.get("task_names") for r in runs]
    if any(n is None or len(set(n)) != len(n) for n in named):
        return None
    canonical = list(named[0])
    if any(sorted(n) != sorted(canonical) for n in named):
        return None
    if all(list(n) == canonical for n in named):
        return None
    return [[list(n).index(name) for name in canonical] for n in named]


def aggregate(results: Mapping) -> list[MethodSummary]:
    """One MethodSummary per group of group_runs(results), in the same order."""
    summaries = []
    for label, runs in group_runs(results).items():
        mats = np.stack([np.asarray(r["accuracy_matrix"], dtype=np.float64) for r in runs])
        t = mats.shape[1]
        seen = np.tril(np.ones((t, t), dtype=bool))
        names = task_names(runs, results.get("config"))
        order = "shared"
        perms = _name_order(runs)
        if perms is not None:
            # Row and column k of every reordered matrix are the first run's k-th dataset.
            mats = np.stack([m[np.ix_(p, p)] for m, p in zip(mats, perms)])
            learned = np.logical_and.reduce([seen[np.ix_(p, p)] for p in perms])
            names, order = list(runs[0]["task_names"]), "by_name"
        else:
            learned = seen
            named = [r.get("task_names") for r in runs]
            if any(n is not None and list(n) != list(named[0] or []) for n in named):
                order = "by_position"
        std = mats.std(axis=0, ddof=1) if len(runs) > 1 else np.zeros_like(mats[0])
        scalars: dict[str, tuple[float, float] | None] = {}
        for name in SCALAR_FIELDS:
            present = [r[name] for r in runs if r[name] is not None]
            # Partial records (some seeds without timing) still average what was measured.
            scalars[name] = mean_std(present) if present else None
        summaries.append(
            MethodSummary(
                label=label,
                runs=list(runs),
                task_names=names,
                accuracy_mean=mats.mean(axis=0),
                accuracy_std=std,
                scalars=scalars,
                learned=learned,
                order=order,
            )
        )
    return summaries
