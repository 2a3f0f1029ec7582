"""The open-world rows of a run's results.json as a table (one line per method and seed).

    python benchmarks/open_world_table.py runs/latest/results.json

Reads the `open_world` entries the loop records (`dkvb_nlp/engine/open_world_eval.py`): after the
last task, the out-of-scope AUROC, FPR at 95% TPR, the closed-set accuracy, and the OOS recall and
in-scope accuracy at the 'accuracy' (1-point budget) and 'youden' thresholds chosen on validation;
and the mean over tasks 1..T-1 of the AUROC of seen vs not-yet-seen classes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def rows(results: dict) -> list[str]:
    lines = ["| method | seed | closed-set acc | OOS AUROC | FPR@95TPR | recall / in-scope acc (accuracy rule) "
             "| recall / in-scope acc (youden) | seen vs unseen AUROC (mean over tasks) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for run in results["runs"]:
        world = [r for r in (run.get("open_world") or []) if r]
        if not world:
            continue
        last = next((r["oos"] for r in reversed(world) if "oos" in r), None)
        unseen = [r["unseen_auroc"] for r in world if "unseen_auroc" in r]
        cells = [run["method"], str(run["seed"])]
        if last is None:
            cells += ["-"] * 5
        else:
            cells += [f"{100 * last['closed_set_accuracy']:.2f}", f"{100 * last['auroc']:.2f}",
                      f"{100 * last['fpr_at_95_tpr']:.2f}"]
            for rule in ("accuracy", "youden"):
                r = last.get(rule)
                cells.append("-" if r is None else f"{100 * r['oos_recall']:.1f} / {100 * r['in_scope_accuracy']:.2f}")
        cells.append(f"{100 * np.mean(unseen):.2f}" if unseen else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="a results.json written by benchmarks/run.py")
    args = ap.parse_args(argv)
    if not args.results.is_file():
        sys.exit(f"no such file: {args.results}")
    print("\n".join(rows(json.loads(args.results.read_text()))))


if __name__ == "__main__":
    main()
