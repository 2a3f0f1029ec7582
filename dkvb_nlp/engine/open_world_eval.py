"""The open-world view of an evaluation row: unknown inputs, scored by every method's own logits.

After task t of a shared-head stream, a method's logits over the classes seen so far give each
text a score, 1 - max softmax probability (`open_world.msp`; higher = more likely unknown). Two
kinds of unknown inputs are measured:

- **not yet seen** (class-incremental streams): the test texts of tasks t+1.. against those of
  tasks 0..t; `unseen_auroc` is the AUROC of telling them apart (no threshold);
- **out of scope** (`stream.unknown`, e.g. CLINC150's oos texts with class_il `oos=true`): the OOS
  test texts against the seen tasks' test texts: AUROC, FPR at 95% TPR, and at thresholds chosen
  on validation (seen tasks' validation texts + oos_validation; `open_world.choose_threshold`),
  rules 'youden' and 'accuracy' (in-scope accuracy within 1 point of the closed-set accuracy,
  the issue's operating point), the OOS recall and the in-scope accuracy (a rejected in-scope
  text counts wrong); `oos["validation"]` holds the same metrics on the validation texts.

The score (`oos["score"]`): 'msp', 1 - max softmax probability over the seen classes; or, where
the stream has a learned out-of-scope class (class_il `oos_train=True`, `data/oos_class.py`),
'oos_class', that class's probability minus the largest in-scope one (`open_world.oos_class`).
That class is never a closed-set answer: predictions and accuracies read the in-scope columns
only (`closed_set`).
"""

from __future__ import annotations

import numpy as np
import torch

from ..open_world import auroc, choose_threshold, fpr_at_95_tpr, msp, score

RULES = ("youden", "accuracy")


def masked_logits(ctx, strategy, data, after_task: int) -> torch.Tensor:
    """A split's closed-set logits: `seen_logits` with a learned out-of-scope class at -inf."""
    return closed_set(ctx, seen_logits(ctx, strategy, data, after_task))


def closed_set(ctx, logits: torch.Tensor) -> torch.Tensor:
    """Logits with the stream's learned out-of-scope class (if any) at -inf: in-scope answers only."""
    k = ctx.stream.oos_class_id
    if k is None:
        return logits
    logits = logits.clone()
    logits[:, k] = float("-inf")
    return logits


def stream_score(stream) -> str:
    """The out-of-scope score of a stream's open-world view: 'oos_class' with a learned out-of-scope
    class, else 'msp'."""
    return "msp" if stream.oos_class_id is None else "oos_class"


def oos_scores(ctx, logits: torch.Tensor) -> np.ndarray:
    """The stream's out-of-scope score (`stream_score`) of `seen_logits` (higher = more likely out of scope)."""
    name = stream_score(ctx.stream)
    inputs = {"logits": logits} if name == "msp" else {"logits": logits, "oos_index": ctx.stream.oos_class_id}
    return score(name, **inputs)


def seen_logits(ctx, strategy, data, after_task: int) -> torch.Tensor:
    """A split's logits with the classes not yet seen after `after_task` at -inf (shared head)."""
    # A strategy scores on its device (ctx.device); the metrics are computed on the host (numpy).
    logits = strategy.logits(data).float().cpu()
    if logits.shape != (len(data), ctx.stream.classes_per_head[data.head]):
        raise RuntimeError(f"{strategy.name}: logits of shape {tuple(logits.shape)} for {len(data)} examples "
                           f"and {ctx.stream.classes_per_head[data.head]} classes")
    seen = ctx.seen_classes(after_task, data.head)
    if seen and not ctx.stream.task_id_at_test:
        allowed = torch.full((logits.shape[1],), float("-inf"))
        allowed[seen] = 0.0
        logits = logits + allowed
    return logits


def applies(stream) -> bool:
    """Whether a stream has an open-world view: one shared head, no task id at test."""
    return stream.num_heads == 1 and not stream.task_id_at_test


def open_world_row(ctx, strategy, after_task: int, test_logits: list[torch.Tensor]) -> dict | None:
    """The open-world metrics after task `after_task` from the test logits of every task
    (`seen_logits`: a learned out-of-scope class kept)."""
    stream, t = ctx.stream, after_task
    if not applies(stream):
        return None
    row: dict = {}
    if stream.disjoint_labels and t < stream.num_tasks - 1:  # the closed-set view of classes not yet seen
        closed = [closed_set(ctx, z) for z in test_logits]
        row["unseen_auroc"] = auroc(msp(torch.cat(closed[: t + 1])), msp(torch.cat(closed[t + 1:])))
    if "test" in stream.unknown:
        row["oos"] = _oos(ctx, strategy, t, test_logits)
    return row or None


def _correct(ctx, logits: list[torch.Tensor], split: str, upto: int) -> np.ndarray:
    return np.concatenate([closed_set(ctx, z).argmax(1).numpy() == ctx.split(j, split).labels
                           for j, z in enumerate(logits[: upto + 1])])


def _oos(ctx, strategy, t: int, test_logits) -> dict:
    correct = _correct(ctx, test_logits, "test", t)
    seen_scores = oos_scores(ctx, torch.cat(test_logits[: t + 1]))
    out_scores = oos_scores(ctx, seen_logits(ctx, strategy, ctx.unknown_split("test"), t))
    result = {"score": stream_score(ctx.stream), "auroc": auroc(seen_scores, out_scores),
              "fpr_at_95_tpr": fpr_at_95_tpr(seen_scores, out_scores), "closed_set_accuracy": float(correct.mean())}
    if "validation" not in ctx.stream.unknown:
        return result
    val_logits = [seen_logits(ctx, strategy, ctx.split(j, "validation"), t) for j in range(t + 1)]
    val_in = oos_scores(ctx, torch.cat(val_logits))
    val_out = oos_scores(ctx, seen_logits(ctx, strategy, ctx.unknown_split("validation"), t))
    correct_val = _correct(ctx, val_logits, "validation", t)
    # The same metrics on validation, where the thresholds (and any choice of score) are made.
    result["validation"] = {"auroc": auroc(val_in, val_out), "closed_set_accuracy": float(correct_val.mean())}
    for rule in RULES:
        threshold = choose_threshold(val_in, val_out, rule=rule, correct_in_val=correct_val)
        result[rule] = {"threshold": threshold, **_at_threshold(threshold, seen_scores, out_scores, correct)}
        result["validation"][rule] = _at_threshold(threshold, val_in, val_out, correct_val)
    return result


def _at_threshold(threshold: float, in_scores: np.ndarray, out_scores: np.ndarray, correct: np.ndarray) -> dict:
    """OOS recall and in-scope accuracy (a rejected in-scope text counts wrong) at `threshold`."""
    return {"oos_recall": float(np.mean(out_scores > threshold)),
            "in_scope_accuracy": float(np.mean(correct & (in_scores <= threshold)))}
