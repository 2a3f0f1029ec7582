"""Joint training (upper bound): the linear probe trained i.i.d. on every task seen so far.

At task t the head is re-initialised and trained from scratch on the union of the training
splits of tasks 0..t, shuffled together (the usual "joint after each task" reference), so the
accuracy matrix is filled like any other method's and its last row is the i.i.d. model on all
the data. Same head, optimiser and loss masking as `linear`; `epochs` are passes over the union.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from .feature_head import SALT_INIT, FeatureHeadStrategy, HeadOptions


@dataclasses.dataclass
class JointOptions(HeadOptions):
    """Training of the joint linear probe (defaults tuned on CLINC150 class_il validation)."""

    method: ClassVar[str] = "joint"


class JointStrategy(FeatureHeadStrategy):
    """Linear probe re-trained from scratch on the union of the tasks seen so far."""

    name = "joint"
    Options = JointOptions

    def learn(self, task_id: int) -> None:
        self.heads = self.make_heads(self.ctx.task_seed(task_id, SALT_INIT))
        by_head: dict[int, list] = {}
        for t in range(task_id + 1):
            data = self.ctx.split(t, "train")
            by_head.setdefault(data.head, []).append((self.features(data), torch.tensor(data.labels, dtype=torch.long)))
        groups = [(h, torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts]))
                  for h, parts in sorted(by_head.items())]
        self.fit(task_id, groups)
