"""RanPAC (McDonnell et al., 2023) on frozen pooled features: random projection + streaming ridge.

Features x (L2-normalised pooled MiniLM states) are projected to M dimensions by a fixed random
Gaussian matrix and passed through ReLU, h = relu(x R). Each task adds its examples to the Gram
matrix G = sum h h^T and to Q = sum h y^T (one-hot labels), and the classifier is
W = (G + lambda I)^-1 Q, so after any task it equals the ridge regression on all data seen so
far: with a fixed lambda the result does not depend on the task order, and nothing is forgotten.
Only RanPAC's second phase is used: the encoder stays frozen (no first-task adaptation).

lambda: a fixed value by default (tuned on CLINC150 class_il validation), which keeps the
method order-invariant. `ridge=null` selects RanPAC's own rule instead: after each task, the
lambda in 10^-8..10^13 with the lowest squared error on the last 20% of the task's examples
when fitted on the first 80% (then the result depends on which task came last).
With several heads (task-aware scenarios) G is shared and each head has its own Q.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from ..engine.bounds import bounded
from ..engine.context import SplitData
from .base import Strategy
from .feature_head import pooled_features

RIDGE_GRID = tuple(10.0 ** k for k in range(-8, 14))  # RanPAC's candidates


@dataclasses.dataclass
class RanPACOptions:
    """Projection size and ridge strength (tuned on CLINC150 class_il validation)."""

    dim: int = bounded(5000, ge=1)  # M, the random projection's size
    # lambda (tried 1e-4-1e5); null: RanPAC's per-task hold-out rule (order-dependent)
    ridge: float | None = bounded(100.0, gt=0)
    normalize: bool = True  # L2-normalise the pooled features before projecting


def select_ridge(h: torch.Tensor, targets: torch.Tensor) -> float:
    """RanPAC's rule: the grid lambda with the lowest MSE on the last 20% when fitted on the first 80%."""
    cut = int(0.8 * len(h))
    if cut == 0 or cut == len(h):
        return 1.0
    fit, held = h[:cut], h[cut:]
    if cut < fit.shape[1]:
        # Fewer examples than dimensions: the dual form W = H^T (H H^T + lambda I)^-1 Y is the
        # same solution from an n x n decomposition instead of M x M.
        evals, evecs = torch.linalg.eigh(fit @ fit.T)
        qe, he = evecs.T @ targets[:cut], held @ fit.T @ evecs
    else:
        evals, evecs = torch.linalg.eigh(fit.T @ fit)  # one decomposition serves every lambda
        qe, he = evecs.T @ (fit.T @ targets[:cut]), held @ evecs
    errors = [F.mse_loss(he @ (qe / (evals + lam)[:, None]), targets[cut:]).item() for lam in RIDGE_GRID]
    return RIDGE_GRID[min(range(len(errors)), key=errors.__getitem__)]


class RanPACStrategy(Strategy):
    """Ridge classifier on ReLU random features, updated in closed form after each task."""

    name = "ranpac"
    Options = RanPACOptions
    uses_features = True

    def setup(self, state=None, meta=None) -> None:
        o, stream = self.opts, self.ctx.stream
        dim = int(self.ctx.cache.encoder.config.hidden_size)
        # The projection depends on the run's seed only (never on the task order); it is
        # regenerated on resume rather than saved.
        # Drawn on the host (the same matrix on every device), then moved to the run's device.
        device = self.ctx.device
        gen = torch.Generator().manual_seed(self.ctx.seed * 7 + 12345)
        self.projection = torch.randn(dim, o.dim, generator=gen, dtype=torch.float64).to(device)
        self.gram = torch.zeros(o.dim, o.dim, dtype=torch.float64, device=device)
        self.q = [torch.zeros(o.dim, n, dtype=torch.float64, device=device) for n in stream.classes_per_head]
        self.lam = o.ridge if o.ridge is not None else 1.0
        self.weights: list[torch.Tensor | None] = [None] * stream.num_heads
        super().setup(state, meta)

    def embed(self, data: SplitData) -> torch.Tensor:
        """h = relu(x R): (N, M) float64."""
        return torch.relu(pooled_features(data, self.opts.normalize).double().to(self.ctx.device) @ self.projection)

    def learn(self, task_id: int) -> None:
        data = self.ctx.split(task_id, "train")
        h = self.embed(data)
        labels = torch.tensor(data.labels, dtype=torch.long).to(self.ctx.device)
        targets = F.one_hot(labels, self.ctx.stream.classes_per_head[data.head]).double()
        self.gram += h.T @ h
        self.q[data.head] += h.T @ targets
        if self.opts.ridge is None:
            self.lam = select_ridge(h, targets)
        self.solve()

    def solve(self) -> None:
        """W = (G + lambda I)^-1 Q for every head that has examples."""
        a = self.gram + self.lam * torch.eye(len(self.gram), dtype=torch.float64, device=self.gram.device)
        factor, info = torch.linalg.cholesky_ex(a)  # G + lambda I is SPD: Cholesky is half an LU's cost
        solve = (lambda q: torch.cholesky_solve(q, factor)) if int(info) == 0 else (lambda q: torch.linalg.solve(a, q))
        self.weights = [solve(q) if bool(q.any()) else None for q in self.q]

    @torch.no_grad()
    def logits(self, data: SplitData) -> torch.Tensor:
        w = self.weights[data.head]
        if w is None:  # nothing learned for this head yet
            return torch.zeros(len(data), self.ctx.stream.classes_per_head[data.head], device=self.ctx.device)
        return (self.embed(data) @ w).float()

    def state(self):
        tensors = {"gram": self.gram.clone(), **{f"q.{h}": q.clone() for h, q in enumerate(self.q)}}
        return tensors, {"ridge": self.lam}

    def load_state(self, state, meta) -> None:
        device = self.ctx.device  # a checkpoint's tensors come from the host
        self.gram = state["gram"].to(device, copy=True)
        self.q = [state[f"q.{h}"].to(device, copy=True) for h in range(len(self.q))]
        self.lam = float(meta["ridge"])
        if any(bool(q.any()) for q in self.q):
            self.solve()

    def trainable_parameters(self) -> int:
        # W is fitted in closed form; the random projection is fixed.
        return sum(q.numel() for q in self.q)
