"""Learning without Forgetting (Li & Hoiem, 2017), linear head on frozen pooled features.

Before a task, the current head is frozen as the "old model". Training then adds, on the new
task's examples, ``lambda * T^2 * KL(softmax(old / T) || softmax(new / T))`` over the logits of
the classes seen before the task (temperature T = 2, as in the paper), next to the
cross-entropy over the classes seen so far: the class-incremental form of LwF (van de Ven et
al., 2020). With one head per task, every earlier head is distilled on the new examples. The
features are frozen, so the old model's logits are exact and the old model is just the head at
the start of the task (nothing extra to checkpoint).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import ClassVar

import torch
import torch.nn.functional as F

from ..engine.bounds import bounded
from .feature_head import FeatureHeadStrategy, HeadOptions


@dataclasses.dataclass
class LwFOptions(HeadOptions):
    """Linear-head training plus distillation (lambda tuned on CLINC150 class_il validation)."""

    method: ClassVar[str] = "lwf"

    distill_lambda: float = bounded(1e4, ge=0)  # weight of the distillation term (tried 0.3-1e6; flat from 1e4)
    temperature: float = bounded(2.0, gt=0)


def distillation(new: torch.Tensor, old: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(old/T) || softmax(new/T))``, averaged over the batch."""
    t = temperature
    return F.kl_div(F.log_softmax(new / t, 1), F.log_softmax(old / t, 1), log_target=True,
                    reduction="batchmean") * t * t


class LwFStrategy(FeatureHeadStrategy):
    """Sequential linear probe distilled towards the previous model on the old classes."""

    name = "lwf"
    Options = LwFOptions

    def before_task(self, task_id, head, x, y) -> None:
        self.old_heads = copy.deepcopy(self.heads).requires_grad_(False)
        # (head, its classes seen before this task) for every head that has some
        self.old_classes = [(h, torch.tensor(self.ctx.seen_classes(task_id - 1, h)))
                            for h in range(len(self.heads))] if task_id > 0 else []
        self.old_classes = [(h, c) for h, c in self.old_classes if len(c)]

    def extra_loss(self, task_id, head, x, y, logits, gen):
        total = 0.0
        for h, classes in self.old_classes:
            new = logits if h == head else self.heads[h](x)
            with torch.no_grad():
                old = self.old_heads[h](x)
            total = total + distillation(new[:, classes], old[:, classes], self.opts.temperature)
        return self.opts.distill_lambda * total
