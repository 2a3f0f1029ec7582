"""The continual loop: for each task, learn it, then evaluate every task's test set."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from ..faults import crash_point
from ..results import make_run
from .checkpoint import Checkpoint, CheckpointError
from .context import RunContext
from .open_world_eval import closed_set, masked_logits, open_world_row, seen_logits
from .tracking import TrackedRun
from ..progress import progress_bar
from ..metrics import accuracy, macro_f1

logger = logging.getLogger(__name__)


def predict(ctx: RunContext, strategy, task_id: int, after_task: int, split: str = "test") -> np.ndarray:
    """Predicted label ids of a split, restricted to the classes the model has been shown.

    With one shared head, the classes of tasks 0..after_task; with one head per task and task
    ids at test, the example's own head (all of its classes).
    """
    return masked_logits(ctx, strategy, ctx.split(task_id, split), after_task).argmax(1).numpy()


def run_continual(ctx: RunContext, strategy, *, dataset: str, checkpoint_dir: str | Path | None = None,
                  resume: bool = False, log=print, after_task=None, tracker: TrackedRun | None = None) -> dict:
    """Train `strategy` task after task; returns one results.json run (see `report.make_run`).

    `after_task(t)`, if given, is called once task t is learned, evaluated and checkpointed.
    `tracker` (engine.tracking) receives the strategy's `ctx.log` scalars, each task's
    accuracy row and timings, and the final metrics."""
    tracker = tracker if tracker is not None else TrackedRun()
    with ctx.reporting_to(tracker.report):
        record = _run_continual(ctx, strategy, dataset, checkpoint_dir, resume, log, after_task, tracker)
    tracker.final({"final/accuracy": record["final_accuracy"], "final/aia": record["average_incremental_accuracy"],
                   "final/bwt": record["bwt"], "final/forgetting": record["forgetting"],
                   "final/train_seconds": record.get("train_seconds"), "final/eval_seconds": record.get("eval_seconds")})
    return record


def _run_continual(ctx: RunContext, strategy, dataset, checkpoint_dir, resume, log, after_task,
                   tracker: TrackedRun) -> dict:
    stream, n = ctx.stream, ctx.num_tasks
    ckpt = Checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
    acc_rows: list[list[float]] = []
    f1_rows: list[list[float]] = []
    world_rows: list[dict | None] = []  # the open-world view of each row (open_world_eval.py)
    train_seconds = eval_seconds = 0.0
    restored = ckpt.load(log=log) if (ckpt is not None and resume) else None
    start = time.perf_counter()
    if restored is not None:
        tensors, progress = restored
        try:
            strategy.setup(tensors, progress["strategy"])
        except (RuntimeError, KeyError, ValueError) as err:  # e.g. a state_dict of other shapes
            first = " ".join(str(err).split())[:300]
            raise CheckpointError(f"checkpoint {ckpt.folder / progress['state_file']} does not fit {strategy.name} "
                                  f"with the current options ({type(err).__name__}: {first}); resume with the "
                                  "options the run was started with, or start over with --overwrite") from None
        acc_rows, f1_rows = progress["accuracy_rows"], progress["macro_f1_rows"]
        world_rows = progress.get("open_world_rows", [None] * len(acc_rows))
        train_seconds, eval_seconds = progress["train_seconds"], progress["eval_seconds"]
        log(f"[{strategy.name} seed {ctx.seed}] resumed after task {len(acc_rows)}/{n}")
    else:
        strategy.setup()
    train_seconds += time.perf_counter() - start
    setup_seconds = time.perf_counter() - start
    for t in range(len(acc_rows), n):
        tracker.begin_task(t)
        t0 = time.perf_counter()
        strategy.learn(t)
        t1 = time.perf_counter()
        evaluated = t == n - 1 or strategy.evaluates_after(t)
        row_acc, row_f1 = ([], []) if evaluated else ([None] * n, [None] * n)  # None: not evaluated
        shown = ctx.progress and ctx.process.is_main_process
        test_logits = [seen_logits(ctx, strategy, ctx.split(j, "test"), t)
                       for j in progress_bar(range(n if evaluated else 0),
                                             desc=f"{strategy.name} evaluating after task {t + 1}",
                                             enabled=shown, unit="task")]
        for j, logits in enumerate(test_logits):
            pred = closed_set(ctx, logits).argmax(1).numpy()  # a learned out-of-scope class is no answer
            labels = ctx.split(j, "test").labels
            row_acc.append(accuracy(pred, labels))
            row_f1.append(macro_f1(pred, labels))
        world_rows.append(open_world_row(ctx, strategy, t, test_logits) if evaluated else None)
        del test_logits
        t2 = time.perf_counter()
        train_seconds += t1 - t0
        eval_seconds += t2 - t1
        acc_rows.append(row_acc)
        f1_rows.append(row_f1)
        done = f"accuracy on seen tasks {100 * np.mean(row_acc[: t + 1]):.1f}%" if evaluated else "not evaluated"
        oos = (world_rows[-1] or {}).get("oos")
        if oos is not None:
            done += f", OOS AUROC {100 * oos['auroc']:.1f}%"
        log(f"[{strategy.name} seed {ctx.seed}] task {t + 1}/{n} {stream[t].name}: {done}, "
            f"learn {t1 - t0:.1f}s, eval {t2 - t1:.1f}s")
        tracker.task_row({**_task_row(row_acc, t, t1 - t0, t2 - t1), **_world_scalars(world_rows[-1])} if evaluated
                         else {"time/learn_seconds": t1 - t0, "time/eval_seconds": t2 - t1})
        crash_point("task.learned")
        if ckpt is not None and ctx.process.is_main_process:
            tensors, meta = strategy.state()
            ckpt.save(tensors, {"completed_tasks": t + 1, "accuracy_rows": acc_rows, "macro_f1_rows": f1_rows,
                                "open_world_rows": world_rows, "train_seconds": train_seconds,
                                "eval_seconds": eval_seconds, "strategy": meta})
        if after_task is not None and ctx.process.is_main_process:
            after_task(t)
        ctx.process.wait_for_everyone()
    _, meta = strategy.state()
    return make_run(strategy.name, ctx.seed, stream.scenario, dataset, acc_rows, macro_f1_matrix=f1_rows,
                    train_seconds=train_seconds, trainable_parameters=strategy.trainable_parameters(),
                    eval_seconds=eval_seconds, task_names=[t.name for t in stream],
                    options=_jsonable_options(strategy), **_open_world_fields(world_rows),
                    **{k: v for k, v in meta.items() if k.startswith("key_init")})


def _open_world_fields(rows: list[dict | None]) -> dict:
    """results.json's `open_world`: one entry per task row (None where not measured); absent when no row has one."""
    return {"open_world": rows} if any(r is not None for r in rows) else {}


def _world_scalars(row: dict | None) -> dict[str, float]:
    """A tracker's scalars of an open-world row (open_world_eval.py)."""
    row = row or {}
    out = {"open_world/unseen_auroc": row["unseen_auroc"]} if "unseen_auroc" in row else {}
    oos = row.get("oos") or {}
    for name in ("auroc", "fpr_at_95_tpr"):
        if name in oos:
            out[f"open_world/oos_{name}"] = oos[name]
    for rule in ("youden", "accuracy"):
        if rule in oos:
            out[f"open_world/oos_recall_{rule}"] = oos[rule]["oos_recall"]
            out[f"open_world/in_scope_accuracy_{rule}"] = oos[rule]["in_scope_accuracy"]
    return out


def _task_row(row_acc: list[float], t: int, learn: float, evaluate: float) -> dict[str, float]:
    """A tracker's record of one evaluated task: accuracy on seen, all, and each task (1-based)."""
    return {"eval/accuracy_seen": float(np.mean(row_acc[: t + 1])), "eval/accuracy_all": float(np.mean(row_acc)),
            **{f"eval/accuracy_task{j + 1}": float(a) for j, a in enumerate(row_acc)},
            "time/learn_seconds": learn, "time/eval_seconds": evaluate}


def _jsonable_options(strategy) -> dict:
    import dataclasses

    return dataclasses.asdict(strategy.opts) if dataclasses.is_dataclass(strategy.opts) else {}
