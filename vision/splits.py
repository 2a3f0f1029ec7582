"""Class-incremental splits: "5x2" = 5 splits of 2 classes; seed 0 keeps the class order, others shuffle.

As in the paper's code: seed 0 gives [[0, 1], [2, 3], ...]; any other seed re-samples which
classes go together (so no favourable split is picked), reproducibly per seed.
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["SPLIT_SPECS", "class_splits", "iid_chunks", "parse_split_spec", "split_name"]

# The granularities of the paper (Section 5.2 and Appendix D.1) for 10 classes.
SPLIT_SPECS = ("5x2", "10x1", "2x5")


def parse_split_spec(spec: str, num_classes: int) -> tuple[int, int]:
    """'SxK' -> (S splits, K classes each); S*K must equal num_classes."""
    m = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", str(spec))
    if not m:
        raise ValueError(f"splits={spec!r}: expected 'SxK' (S splits of K classes), e.g. {', '.join(SPLIT_SPECS)}")
    s, k = int(m.group(1)), int(m.group(2))
    if s < 1 or k < 1 or s * k != num_classes:
        raise ValueError(f"splits={spec!r}: {s} x {k} classes must cover the {num_classes} classes exactly; "
                         f"use S x K = {num_classes}")
    return s, k


def class_splits(spec: str, num_classes: int, seed: int = 0) -> list[list[int]]:
    """The class lists of the splits, in presentation order (seed 0: 0..C-1 in order)."""
    s, k = parse_split_spec(spec, num_classes)
    order = np.arange(num_classes) if seed == 0 else np.random.default_rng(seed).permutation(num_classes)
    return [sorted(int(c) for c in order[i * k : (i + 1) * k]) for i in range(s)]


def split_name(classes: list[int]) -> str:
    """Display name of a split, e.g. 'classes 0,1'."""
    return "classes " + ",".join(str(c) for c in classes)


def iid_chunks(total_epochs: int, parts: int) -> list[int]:
    """total_epochs cut into `parts` near-equal checkpoints (the i.i.d. run's rows)."""
    if parts < 1 or total_epochs < parts:
        raise ValueError(f"cannot cut {total_epochs} epochs into {parts} evaluation points; need epochs >= {parts}")
    base, extra = divmod(total_epochs, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]
