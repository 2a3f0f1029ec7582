"""Nearest class mean with cosine similarity on frozen pooled features: task-free, no training.

Each class keeps the sum and count of its examples' L2-normalised features (float64, so the
sums hardly depend on the order examples arrive in); a class's score is the cosine between an
example's feature and its class mean. Nothing but these sums is learned, so the predictions
after the last task are the same whatever the task order; classes without examples score -inf.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..engine.context import SplitData
from .base import Strategy
from .feature_head import pooled_features


class NMCStrategy(Strategy):
    """Cosine nearest-class-mean classifier over accumulated class means."""

    name = "nmc"
    uses_features = True

    def setup(self, state=None, meta=None) -> None:
        dim, device = int(self.ctx.cache.encoder.config.hidden_size), self.ctx.device
        self.sums = [torch.zeros(n, dim, dtype=torch.float64, device=device) for n in self.ctx.stream.classes_per_head]
        self.counts = [torch.zeros(n, dtype=torch.long, device=device) for n in self.ctx.stream.classes_per_head]
        super().setup(state, meta)

    def learn(self, task_id: int) -> None:
        data = self.ctx.split(task_id, "train")
        x = pooled_features(data, normalize=True).double().to(self.ctx.device)
        y = torch.tensor(data.labels, dtype=torch.long).to(self.ctx.device)
        self.sums[data.head].index_add_(0, y, x)
        self.counts[data.head] += torch.bincount(y, minlength=len(self.counts[data.head]))

    @torch.no_grad()
    def logits(self, data: SplitData) -> torch.Tensor:
        h = data.head
        means = F.normalize(self.sums[h], dim=1)  # the direction of the sum is that of the mean
        x = pooled_features(data, normalize=True).double().to(self.ctx.device)
        scores = x @ means.T
        scores[:, self.counts[h] == 0] = float("-inf")
        return scores.float()

    def state(self):
        tensors = {f"sums.{h}": s.clone() for h, s in enumerate(self.sums)}
        tensors.update({f"counts.{h}": c.clone() for h, c in enumerate(self.counts)})
        return tensors, {}

    def load_state(self, state, meta) -> None:
        device = self.ctx.device  # a checkpoint's tensors come from the host
        self.sums = [state[f"sums.{h}"].to(device, copy=True) for h in range(len(self.sums))]
        self.counts = [state[f"counts.{h}"].to(device, copy=True) for h in range(len(self.counts))]

    def trainable_parameters(self) -> int:
        # Nothing is trained by gradient; the class means are what the classifier learns.
        return sum(s.numel() for s in self.sums)
