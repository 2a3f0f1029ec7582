"""The open-world rows of a results dict as a table: one row per method and seed.

From the `open_world` entries the loop records (`dkvb_nlp/engine/open_world_eval.py`): after the
last task, the out-of-scope score (`msp`, or `oos_class` with a learned out-of-scope class;
results without the field predate `oos_class` and are `msp`), its AUROC and FPR at 95% TPR, the
closed-set accuracy, the OOS recall and in-scope accuracy at the 'accuracy' (1-point budget) and
'youden' thresholds chosen on validation; the mean over tasks 1..T-1 of the AUROC of seen vs
not-yet-seen classes; and on validation itself (where the thresholds are chosen; '-' in results
that predate it), the AUROC and the recall / in-scope accuracy at the 'accuracy' threshold.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

HEADER = ("method", "seed", "OOS score", "closed-set acc", "OOS AUROC", "FPR@95TPR",
          "recall / in-scope acc (accuracy rule)", "recall / in-scope acc (youden)",
          "seen vs unseen AUROC (mean over tasks)",
          "validation: closed-set acc", "validation: OOS AUROC", "validation: recall / in-scope acc (accuracy rule)")


def _recall_cell(at_rule: Mapping | None) -> str:
    """'recall / in-scope accuracy' (in %) at one rule's threshold, '-' where it was not measured."""
    if at_rule is None:
        return "-"
    return f"{100 * at_rule['oos_recall']:.1f} / {100 * at_rule['in_scope_accuracy']:.2f}"


def open_world_rows(results: Mapping) -> list[list[str]]:
    """[HEADER, row, ...] in %; empty when no run has an open-world entry."""
    rows = []
    for run in results.get("runs", []):
        world = [r for r in (run.get("open_world") or []) if r]
        if not world:
            continue
        last = next((r["oos"] for r in reversed(world) if "oos" in r), None)
        unseen = [r["unseen_auroc"] for r in world if "unseen_auroc" in r]
        cells = [str(run["method"]), str(run["seed"])]
        if last is None:
            cells += ["-"] * 6
        else:
            cells += [str(last.get("score", "msp")), f"{100 * last['closed_set_accuracy']:.2f}",
                      f"{100 * last['auroc']:.2f}",
                      f"{100 * last['fpr_at_95_tpr']:.2f}"]
            cells += [_recall_cell(last.get(rule)) for rule in ("accuracy", "youden")]
        cells.append(f"{100 * np.mean(unseen):.2f}" if unseen else "-")
        val = (last or {}).get("validation")
        if val is None:
            cells += ["-"] * 3
        else:
            cells += [f"{100 * val['closed_set_accuracy']:.2f}", f"{100 * val['auroc']:.2f}",
                      _recall_cell(val.get("accuracy"))]
        rows.append(cells)
    return [list(HEADER), *rows] if rows else []


def open_world_markdown(results: Mapping) -> str:
    """The table as Markdown ('' when there is nothing to show)."""
    rows = open_world_rows(results)
    if not rows:
        return ""
    header, *body = rows
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)
