"""A ridge readout over the keys an input fetched: streaming closed form, order-free.

The bottleneck's keys carry more than their identity: the mean of the key vectors an input
fetched (codebook by codebook, over its tokens) is the input's pooled state as the frozen
front reconstructs it. `RidgeReadout` maps that vector (L2-normalised) through a fixed random
projection and a ReLU, phi(x) = relu(R^T q(x)) (M features, RanPAC-style; McDonnell et al.,
2023), and keeps the sufficient statistics G = sum phi phi^T (M x M) and Q = sum phi y^T. Its
weights W = (G + lambda I)^-1 Q are the ridge regression on every example seen so far, so the
result does not depend on the order of tasks or batches, and no example is stored.

Memory: M^2 + M x classes float64 (134 MB at M = 4096), whatever the amount of data. Only the
lower triangle of G is accumulated (its upper triangle stays zero: the Cholesky factorisation
reads nothing else), block by block, which saves about 40% of an update's B x M^2 work. A solve
costs M^3 / 3 (done lazily, when logits are next asked for).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def pooled_keys(front, indices: torch.Tensor) -> torch.Tensor:
    """Mean over valid tokens of the fetched keys, codebooks side by side: (B, C * key_dim)."""
    keys = front.keys.float()
    c = front.num_codebooks
    idx = indices.long()
    if idx.dim() == 2:  # one vector per example: no token axis
        return torch.cat([keys[j][idx[:, j]] for j in range(c)], dim=1)
    b, t, _ = idx.shape
    valid = idx[..., 0] >= 0
    counts = valid.sum(1)
    offsets = torch.zeros(b, dtype=torch.long, device=idx.device)
    offsets[1:] = counts.cumsum(0)[:-1]
    picked = idx[valid]  # (M, C)
    parts = [F.embedding_bag(picked[:, j], keys[j], offsets, mode="mean") for j in range(c)]
    return torch.cat(parts, dim=1)


_BLOCK = 1024


def _blocks(size: int):
    """(start, stop) of the row blocks of a size x size matrix."""
    return [(start, min(size, start + _BLOCK)) for start in range(0, size, _BLOCK)]


class RidgeReadout(nn.Module):
    """Ridge regression on random ReLU features of the pooled keys, updated in closed form.

    Args:
        in_dim: size of the pooled keys (C x key_dim).
        num_classes: columns to start with (more with `add_classes`).
        num_features: M, the random projection's size.
        ridge: lambda (> 0).
        seed: seeds the projection (regenerated, never saved).
    """

    def __init__(self, in_dim: int, num_classes: int, num_features: int = 4096, ridge: float = 100.0,
                 seed: int = 0):
        super().__init__()
        if not isinstance(num_features, int) or isinstance(num_features, bool) or num_features < 1:
            raise ValueError(f"num_features={num_features!r} must be an integer >= 1")
        if not isinstance(ridge, (int, float)) or isinstance(ridge, bool) or not math.isfinite(ridge) or ridge <= 0:
            raise ValueError(f"ridge={ridge!r} must be a finite number > 0")
        self.ridge, self.seed = float(ridge), int(seed)
        gen = torch.Generator().manual_seed(self.seed * 7 + 12345)
        self.register_buffer("projection", torch.randn(in_dim, num_features, generator=gen), persistent=False)
        self.register_buffer("gram", torch.zeros(num_features, num_features, dtype=torch.float64))
        self.register_buffer("targets", torch.zeros(num_features, num_classes, dtype=torch.float64))
        self._weight: torch.Tensor | None = None

    @property
    def num_classes(self) -> int:
        return self.targets.shape[1]

    @property
    def num_features(self) -> int:
        return self.gram.shape[0]

    def add_classes(self, n: int) -> "RidgeReadout":
        """n more class columns (no examples yet: their weights are 0)."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n={n!r} must be an integer >= 1")
        self.targets = torch.cat([self.targets, self.targets.new_zeros(self.targets.shape[0], n)], dim=1)
        self._weight = None
        return self

    def features(self, pooled: torch.Tensor) -> torch.Tensor:
        """phi = relu(normalize(pooled) R): (B, M) float32."""
        return torch.relu(F.normalize(pooled.float(), dim=1) @ self.projection)

    @torch.no_grad()
    def partial_fit(self, pooled: torch.Tensor, labels: torch.Tensor) -> "RidgeReadout":
        """Add examples (pooled keys (B, in_dim), labels (B,)) to the statistics."""
        labels = torch.as_tensor(labels).long().to(self.gram.device)
        if pooled.shape[0] == 0:
            raise ValueError("partial_fit got an empty batch")
        if labels.shape != pooled.shape[:1]:
            raise ValueError(f"labels of shape {tuple(labels.shape)} do not match {pooled.shape[0]} examples")
        if int(labels.min()) < 0 or int(labels.max()) >= self.num_classes:
            bad = int(labels.max()) if int(labels.max()) >= self.num_classes else int(labels.min())
            raise ValueError(f"label {bad} outside the head's classes 0 to {self.num_classes - 1}; "
                             "add the class first")
        phi = self.features(pooled).double()
        for start, stop in _blocks(self.num_features):  # lower triangle only, block row by block row
            self.gram[start:stop, :stop].addmm_(phi[:, start:stop].T, phi[:, :stop])
            diagonal = self.gram[start:stop, start:stop]
            diagonal.copy_(diagonal.tril())  # the diagonal block's upper part: zero, as documented
        self.targets.index_add_(1, labels, phi.T)
        self._weight = None
        return self

    @torch.no_grad()
    def weight(self) -> torch.Tensor:
        """W = (G + lambda I)^-1 Q, (M, classes) float32; solved once per change of the statistics."""
        if self._weight is None or self._weight.shape[1] != self.num_classes:
            a = self.gram.clone()  # a copy: the statistics stay as they are (a plain copy, not tril's masked one)
            a.diagonal().add_(self.ridge)
            factor, info = torch.linalg.cholesky_ex(a)  # reads the lower triangle only
            if int(info) == 0:
                w = torch.cholesky_solve(self.targets, factor)
            else:  # not positive definite in floating point: a general solve of the symmetric matrix
                lower = a.tril()
                w = torch.linalg.solve(lower + lower.tril(-1).T, self.targets)
            self._weight = w.float()
        return self._weight

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """Logits (B, classes) of pooled keys."""
        return self.features(pooled) @ self.weight()

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._weight = None
