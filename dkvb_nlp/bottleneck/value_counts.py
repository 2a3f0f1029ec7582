"""Count values: a value table derived from how often each class fetched each key (order-free).

With mean pooling after the bottleneck and the non-parametric decoder, the logits are linear in
the input's key histogram h(x): z(x) = V^T h(x). `CountValues` keeps the sufficient statistic
n[c, k, y] = number of (token, codebook c) positions of class-y examples whose nearest key in
codebook c is k, and derives the values of a multinomial naive Bayes over key codes:

    V[c, k, y] = weight * log((n[c, k, y] + a) / (n[c, ., y] + a K))

so z_y(x) is `weight` x the mean log-likelihood of the input's keys under class y. A sum over
examples does not depend on their order: after any sequence of tasks the values equal those of
one pass over all the data (class-incremental = i.i.d., exactly), and no example is stored.
Memory: C*K x classes float64 (79 MB at 16 x 4096 x 150). A class never seen has all-zero counts
and gets the smoothed uniform value log(1/K) x weight in every row.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _check_smoothing(smoothing: float) -> float:
    if not isinstance(smoothing, (int, float)) or isinstance(smoothing, bool) or not math.isfinite(smoothing) \
            or smoothing <= 0:
        raise ValueError(f"smoothing={smoothing!r} must be a finite number > 0")
    return float(smoothing)


class CountValues(nn.Module):
    """Class-by-key counts (C*K, classes) and the naive Bayes values derived from them.

    Args:
        num_codebooks, num_keys: C and K of the bottleneck.
        num_classes: columns to start with (more with `add_classes`).
        smoothing: a, the additive smoothing of the counts (> 0).
        weight: scale of the derived values (the logits' temperature).
    """

    def __init__(self, num_codebooks: int, num_keys: int, num_classes: int, smoothing: float = 0.1,
                 weight: float = 1.0):
        super().__init__()
        self.num_codebooks, self.num_keys = num_codebooks, num_keys
        self.smoothing = _check_smoothing(smoothing)
        if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
            raise ValueError(f"weight={weight!r} must be a finite number > 0")
        self.weight = float(weight)
        self.register_buffer("counts", torch.zeros(num_codebooks * num_keys, num_classes, dtype=torch.float64))
        offset = torch.arange(num_codebooks) * num_keys
        self.register_buffer("row_offset", offset, persistent=False)

    @property
    def num_classes(self) -> int:
        return self.counts.shape[1]

    def add_classes(self, n: int) -> "CountValues":
        """n more (empty) class columns; existing counts unchanged."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n={n!r} must be an integer >= 1")
        self.counts = torch.cat([self.counts, self.counts.new_zeros(self.counts.shape[0], n)], dim=1)
        return self

    @torch.no_grad()
    def partial_fit(self, indices: torch.Tensor, labels: torch.Tensor) -> "CountValues":
        """Add the key counts of examples: indices (B, [T,] C) with -1 padding, labels (B,)."""
        labels = torch.as_tensor(labels)
        if indices.dim() not in (2, 3) or indices.shape[-1] != self.num_codebooks:
            raise ValueError(f"indices must be (B, C) or (B, T, C) with C={self.num_codebooks}, "
                             f"got {tuple(indices.shape)}")
        if labels.shape != indices.shape[:1]:
            raise ValueError(f"labels of shape {tuple(labels.shape)} do not match {indices.shape[0]} examples")
        if indices.shape[0] == 0:
            raise ValueError("partial_fit got an empty batch")
        labels = labels.long().to(self.counts.device)
        if int(labels.min()) < 0 or int(labels.max()) >= self.num_classes:
            bad = int(labels.max()) if int(labels.max()) >= self.num_classes else int(labels.min())
            raise ValueError(f"label {bad} outside the head's classes 0 to {self.num_classes - 1}; "
                             "add the class first")
        idx = indices.long().to(self.counts.device)
        if idx.dim() == 2:
            idx = idx.unsqueeze(1)
        valid = idx[..., 0] >= 0  # (B, T): padding is per token
        if bool(valid.any()):
            used = idx[valid]
            if int(used.min()) < 0 or int(used.max()) >= self.num_keys:
                raise ValueError(f"key indices must be in 0..{self.num_keys - 1} (or -1 for padding)")
        bag, _ = valid.nonzero(as_tuple=True)
        rows = (idx[valid] + self.row_offset).reshape(-1)  # (M*C,)
        cls = labels[bag].repeat_interleave(self.num_codebooks)
        flat = self.counts.view(-1)
        flat.index_add_(0, rows * self.num_classes + cls, torch.ones_like(rows, dtype=flat.dtype))
        return self

    @torch.no_grad()
    def values(self, columns: torch.Tensor | None = None) -> torch.Tensor:
        """The derived value table (C*K, classes), float32; with `columns` (class indices) only
        those columns, (C*K, len(columns)): a class's values read its own counts only."""
        a, k = self.smoothing, self.num_keys
        n = self.counts.view(self.num_codebooks, k, -1)
        if columns is not None:
            n = n[..., columns]
        v = torch.log((n + a) / (n.sum(1, keepdim=True) + a * k)) * self.weight
        return v.reshape(-1, n.shape[-1]).float()
