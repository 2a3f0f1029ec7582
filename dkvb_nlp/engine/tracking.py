"""Experiment trackers (`--report-to none|csv|tensorboard|wandb|mlflow`) through accelerate's tracker API.

Each (method, seed) of a job is one tracker run named `<method>_seed<k>`: TensorBoard and CSV
write `<output-dir>/logs/<method>_seed<k>/`, W&B and MLflow log a run of that name in the
project (experiment) `dkvb-nlp`, grouped by the output folder's name. What is logged:

- the configuration (the job's settings and the method's options, flattened to scalars);
- what a strategy reports through `RunContext.log` (e.g. `train/loss` after each epoch);
- after each task: `task`, `eval/accuracy_seen`, `eval/accuracy_all`, `eval/accuracy_task<j>`
  (1-based positions in the stream), `time/learn_seconds`, `time/eval_seconds`;
- at the end: `final/accuracy`, `final/aia`, `final/bwt`, `final/forgetting`,
  `final/train_seconds`, `final/eval_seconds` (the run's totals).

Steps count training progress: every strategy report is one step (an epoch), and a task row
takes the step of its task's last report, or a step of its own for a method that reports
nothing. So steps only grow (W&B requires it) and losses and accuracies share one axis.
Only the main process logs. The registry `REPORT_TO` maps each name to its tracker; a name
whose package is missing is refused by `check_report_to` before anything runs.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path
from typing import Any, Callable, Mapping

from ..registry import Registry

PROJECT = "dkvb-nlp"
LOGS_DIR = "logs"  # under the output folder


@dataclasses.dataclass(frozen=True)
class TrackerKind:
    """How to build one kind of tracker; `package` is the module it needs (None: none)."""

    make: Callable[[str, Path, str], Any] | None  # (run_name, logging_dir, group) -> a GeneralTracker
    package: str | None = None
    install: str = ""


REPORT_TO: Registry[TrackerKind] = Registry("tracker for report_to")


def _csv(run_name: str, logging_dir: Path, group: str):
    from .csv_tracker import CSVTracker

    return CSVTracker(run_name, logging_dir)


def _tensorboard(run_name: str, logging_dir: Path, group: str):
    from accelerate.tracking import TensorBoardTracker

    return TensorBoardTracker(run_name, logging_dir)


def _wandb(run_name: str, logging_dir: Path, group: str):
    from accelerate.tracking import WandBTracker

    # accelerate names the W&B project after its first argument: the project, not the run.
    return WandBTracker(PROJECT, name=run_name, group=group, dir=str(logging_dir))


def _mlflow(run_name: str, logging_dir: Path, group: str):
    from accelerate.tracking import MLflowTracker

    return MLflowTracker(experiment_name=PROJECT, run_name=run_name, tags={"group": group})


REPORT_TO.register("none")(TrackerKind(None))
REPORT_TO.register("csv")(TrackerKind(_csv))
REPORT_TO.register("tensorboard")(TrackerKind(_tensorboard, "tensorboard", "pip install 'dkvb-nlp[tracking]'"))
REPORT_TO.register("wandb")(TrackerKind(_wandb, "wandb", "pip install wandb"))
REPORT_TO.register("mlflow")(TrackerKind(_mlflow, "mlflow", "pip install mlflow"))


def check_report_to(name: str) -> TrackerKind:
    """The tracker kind `name`, or a ValueError naming it and what is accepted or missing."""
    kind = REPORT_TO.get(name)
    if kind.package is not None and importlib.util.find_spec(kind.package) is None:
        raise ValueError(f"report_to={name!r} needs the {kind.package} package, which is not installed "
                         f"({kind.install}); 'csv' and 'none' need nothing")
    return kind


def flat_config(values: Mapping[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """Nested settings as {'a.b': scalar}: lists and None as JSON text (what trackers accept)."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flat_config(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = json.dumps(value, default=str)
    return out


class TrackedRun:
    """The scalars of one (method, seed) run, sent to its trackers with growing steps."""

    def __init__(self, accelerator=None):
        self.accelerator = accelerator
        self.step = 0
        self.task = 0  # 1-based, the task being learned
        self._reported = False  # a strategy report in the current task

    @property
    def active(self) -> bool:
        return self.accelerator is not None

    def begin_task(self, task_id: int) -> None:
        """Task `task_id` (0-based) starts: later reports carry `task`."""
        self.task, self._reported = task_id + 1, False

    def report(self, values: Mapping[str, float]) -> None:
        """A strategy's scalars (one epoch): a step of their own."""
        self.step += 1
        self._reported = True
        self._send({"task": self.task, **values})

    def task_row(self, values: Mapping[str, float]) -> None:
        """The task's evaluation and timings: at its last report's step, or a step of its own."""
        if not self._reported:
            self.step += 1
        self._reported = True
        self._send({"task": self.task, **values})

    def final(self, values: Mapping[str, float]) -> None:
        """The run's summary, at the last step."""
        self._send(dict(values))

    def _send(self, values: Mapping[str, Any]) -> None:
        if self.accelerator is None:
            return
        clean = {k: float(v) if not isinstance(v, int) or isinstance(v, bool) else v
                 for k, v in values.items() if v is not None}
        self.accelerator.log(clean, step=self.step)

    def close(self) -> None:
        """Finish the trackers (flush and close their files or runs).

        Not `Accelerator.end_training()`: that also destroys the process group, which the job
        still needs for its other (method, seed) runs.
        """
        if self.accelerator is not None:
            for tracker in self.accelerator.trackers:
                tracker.finish()
            self.accelerator = None


def open_tracked_run(report_to: str, logging_dir, run_name: str, config: Mapping[str, Any], *,
                     group: str = "", main_process: bool = True) -> TrackedRun:
    """A started tracker run (`report_to` 'none', or any process but the main one: inert)."""
    kind = check_report_to(report_to)
    if kind.make is None or not main_process:
        return TrackedRun()
    import torch
    from accelerate import Accelerator

    logging_dir = Path(logging_dir)
    tracker = kind.make(run_name, logging_dir, group)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), log_with=[tracker], project_dir=str(logging_dir))
    accelerator.init_trackers(PROJECT, config=flat_config(config))
    return TrackedRun(accelerator)
