"""Experience replay (ER) with a bounded reservoir buffer, linear head on frozen pooled features.

Each batch of the current task is trained together with an equal-sized batch drawn from the
buffer (loss = CE(current) + CE(replay), both over the classes seen so far). The buffer holds at
most `buffer_size` examples in total (1000 by default: about 7 per class at the end of CLINC150's
150 classes, 6.7% of its training set); after each task, the task's examples are offered to it
in a seeded random order by reservoir sampling (Vitter's algorithm R), so the buffer is a
uniform sample of every training example seen so far. Offering them after the task (not during
its epochs) is the multi-epoch ("offline") form of ER: the current task is fully available
anyway, and each example is offered once.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from ..engine.bounds import bounded
from .feature_head import SALT_EXTRA, FeatureHeadStrategy, HeadOptions

SALT_RESERVOIR = SALT_EXTRA + 10


@dataclasses.dataclass
class EROptions(HeadOptions):
    """Linear-head training plus replay (defaults tuned on CLINC150 class_il validation)."""

    method: ClassVar[str] = "er"

    buffer_size: int = bounded(1000, ge=1)  # examples in total, over all classes
    replay_batch_size: int = bounded(32, ge=1)  # buffer examples per training batch


class ReservoirBuffer:
    """At most `capacity` rows of (features, label, head, task, row[, logits]), reservoir-sampled."""

    def __init__(self, capacity: int, dim: int, logit_width: int = 0):
        self.capacity, self.seen, self.size = capacity, 0, 0
        self.x = torch.zeros(capacity, dim)
        self.y = torch.zeros(capacity, dtype=torch.long)
        self.head = torch.zeros(capacity, dtype=torch.long)
        self.task = torch.zeros(capacity, dtype=torch.long)
        self.row = torch.zeros(capacity, dtype=torch.long)  # position in the task's training split
        self.logits = torch.zeros(capacity, logit_width)

    def offer(self, x, y, head: int, task: int, gen: torch.Generator, logits=None) -> None:
        """Offer every row of x (in a random order) by reservoir sampling."""
        for i in torch.randperm(len(x), generator=gen).tolist():
            if self.size < self.capacity:
                slot = self.size
                self.size += 1
            else:
                slot = int(torch.randint(self.seen + 1, (1,), generator=gen))
                if slot >= self.capacity:
                    slot = -1
            self.seen += 1
            if slot < 0:
                continue
            self.x[slot], self.y[slot], self.head[slot], self.task[slot], self.row[slot] = x[i], y[i], head, task, i
            if logits is not None:
                self.logits[slot] = logits[i]

    def sample(self, k: int, gen: torch.Generator) -> torch.Tensor:
        """Indices of min(k, size) distinct filled slots, uniformly at random."""
        return torch.randperm(self.size, generator=gen)[:k]

    def state(self, prefix: str = "buffer.") -> tuple[dict[str, torch.Tensor], dict]:
        """Tensors and meta that restore the buffer exactly."""
        names = ("x", "y", "head", "task", "row", "logits")
        return {prefix + n: getattr(self, n).clone() for n in names}, {"buffer_seen": self.seen,
                                                                        "buffer_size": self.size}

    def load(self, state: dict[str, torch.Tensor], meta: dict, prefix: str = "buffer.") -> None:
        """Inverse of `state`."""
        for n in ("x", "y", "head", "task", "row", "logits"):
            setattr(self, n, state[prefix + n].clone())
        self.capacity = len(self.x)
        self.seen, self.size = int(meta["buffer_seen"]), int(meta["buffer_size"])


class ERStrategy(FeatureHeadStrategy):
    """Sequential linear probe that replays a reservoir-sampled buffer of past examples."""

    name = "er"
    Options = EROptions
    store_logits: ClassVar[bool] = False

    def setup(self, state=None, meta=None) -> None:
        width = max(self.ctx.stream.classes_per_head) if self.store_logits else 0
        self.buffer = ReservoirBuffer(self.opts.buffer_size, self.dim, width)
        super().setup(state, meta)

    def extra_loss(self, task_id, head, x, y, logits, gen):
        if self.buffer.size == 0:
            return 0.0
        b = self.buffer
        idx = b.sample(self.opts.replay_batch_size, gen)
        return self.loss_on(task_id, b.x[idx], b.y[idx], b.head[idx])

    def after_task(self, task_id, head, x, y) -> None:
        gen = torch.Generator().manual_seed(self.ctx.task_seed(task_id, SALT_RESERVOIR))
        logits = None
        if self.store_logits:
            with torch.no_grad():
                logits = torch.zeros(len(x), self.buffer.logits.shape[1])
                out = self.heads[head](x)
                logits[:, : out.shape[1]] = out
        self.buffer.offer(x, y, head, task_id, gen, logits)

    def extra_state(self):
        return self.buffer.state()

    def load_extra_state(self, state, meta) -> None:
        self.buffer.load(state, meta)
