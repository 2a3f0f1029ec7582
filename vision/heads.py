"""Baselines on cached features: linear probe with / without bias and a 128-unit MLP (the paper's).

Trained like the paper's code: label-smoothed cross-entropy, mini-batches of 256, gradient
norm clipped to 1, SGD lr 0.001 without momentum (Adam selectable), on all seen classes of one
shared 10-way head.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dkvb_nlp.registry import Registry

__all__ = ["HEADS", "OPTIMIZERS", "FeatureHead", "build_head"]

HEADS: Registry[Callable[[int, int, int], nn.Module]] = Registry("baseline head")
OPTIMIZERS: Registry[Callable] = Registry("optimizer")


@HEADS.register("linear")
def linear(dim: int, num_classes: int, hidden: int = 128) -> nn.Module:
    """Linear probe with bias."""
    return nn.Linear(dim, num_classes)


@HEADS.register("linear_nobias")
def linear_nobias(dim: int, num_classes: int, hidden: int = 128) -> nn.Module:
    """Linear probe without bias (no per-class offset to drift toward the latest classes)."""
    return nn.Linear(dim, num_classes, bias=False)


@HEADS.register("mlp")
def mlp(dim: int, num_classes: int, hidden: int = 128) -> nn.Module:
    """One hidden ReLU layer of `hidden` units."""
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


OPTIMIZERS.register("sgd")(lambda params, lr: torch.optim.SGD(params, lr=lr))
OPTIMIZERS.register("adam")(lambda params, lr: torch.optim.Adam(params, lr=lr))


class FeatureHead:
    """A head over fixed features, trained epoch by epoch on any subset of rows."""

    def __init__(self, kind: str, dim: int, num_classes: int, *, hidden: int = 128, optimizer: str = "sgd",
                 lr: float = 0.001, batch_size: int = 256, label_smoothing: float = 0.1,
                 grad_clip: float | None = 1.0, seed: int = 0):
        if not lr > 0:
            raise ValueError(f"lr={lr} must be > 0")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)  # layer init uses the global generator; keep runs reproducible
        try:
            self.module = HEADS.get(kind)(dim, num_classes, hidden)
        finally:
            torch.random.set_rng_state(state)
        self.optimizer = OPTIMIZERS.get(optimizer)(self.module.parameters(), lr)
        self.batch_size, self.label_smoothing, self.grad_clip = batch_size, label_smoothing, grad_clip
        self.generator = torch.Generator().manual_seed(seed)

    def fit(self, x: torch.Tensor, y: torch.Tensor, epochs: int) -> list[float]:
        """`epochs` shuffled passes over (x, y); the mean loss of each."""
        losses = []
        n = x.shape[0]
        for _ in range(epochs):
            total = 0.0
            for batch in torch.randperm(n, generator=self.generator).split(self.batch_size):
                loss = F.cross_entropy(self.module(x[batch]), y[batch], label_smoothing=self.label_smoothing)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.grad_clip is not None:
                    nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip)
                self.optimizer.step()
                total += float(loss.detach()) * batch.numel()
            losses.append(total / n)
        return losses

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> np.ndarray:
        """Predicted class ids (N,)."""
        return self.module(x).argmax(1).numpy()

    def trainable_parameters(self) -> int:
        """Number of trainable scalars."""
        return sum(p.numel() for p in self.module.parameters())


def build_head(kind: str, dim: int, num_classes: int, **options) -> FeatureHead:
    """A FeatureHead of the registered kind (linear, linear_nobias, mlp)."""
    HEADS.get(kind)  # the registry's error names the accepted kinds
    return FeatureHead(kind, dim, num_classes, **options)
