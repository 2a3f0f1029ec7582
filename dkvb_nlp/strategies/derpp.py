"""DER++ (Buzzega et al., 2020): replay with stored logits, linear head on frozen pooled features.

The reservoir buffer of `er` also keeps each example's logits, and each batch adds
``alpha * MSE(f(x'), z')`` on one buffer sample and ``beta * CE(f(x''), y'')`` on another.
Logits are stored when the example enters the buffer, after its task has been learned (the
multi-epoch form, as in `er`); the MSE covers the classes seen when they were stored, since the
other columns were never trained and pinning them would fight the classes still to come
(the issue X-DER addresses).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
import torch.nn.functional as F

from ..engine.bounds import bounded
from .er import EROptions, ERStrategy


@dataclasses.dataclass
class DERPPOptions(EROptions):
    """ER's options plus the weights of the logit (alpha) and label (beta) replay terms."""

    method: ClassVar[str] = "derpp"

    alpha: float = bounded(10.0, ge=0)  # weight of the MSE on stored logits (tried 0.1-30)
    beta: float = bounded(4.0, ge=0)  # weight of the cross-entropy on buffer labels (tried 0.5-4)


class DERPPStrategy(ERStrategy):
    """Replay of past examples' labels and logits (dark experience replay ++)."""

    name = "derpp"
    Options = DERPPOptions
    store_logits = True

    def stored_mask(self, idx: torch.Tensor) -> torch.Tensor:
        """(k, width) bool: the classes seen when each buffer row was stored."""
        b, width = self.buffer, self.buffer.logits.shape[1]
        cache = self.__dict__.setdefault("_stored_masks", {})
        for key in set(zip(b.task[idx].tolist(), b.head[idx].tolist())) - set(cache):
            cache[key] = torch.zeros(width, dtype=torch.bool)
            cache[key][self.ctx.seen_classes(*key)] = True
        return torch.stack([cache[key] for key in zip(b.task[idx].tolist(), b.head[idx].tolist())])

    def logit_loss(self, idx: torch.Tensor) -> torch.Tensor:
        """MSE between the current and the stored logits of buffer rows, over the stored classes."""
        b = self.buffer
        device = self.ctx.device  # the buffer stays on the host; the sampled rows move
        total, count = torch.zeros((), device=device), 0
        for h in b.head[idx].unique().tolist():
            rows = idx[b.head[idx] == h]
            out = self.heads[h](b.x[rows].to(device))
            mask = self.stored_mask(rows)[:, : out.shape[1]].to(device)
            stored = b.logits[rows][:, : out.shape[1]].to(device)
            total = total + F.mse_loss(out[mask], stored[mask], reduction="sum")
            count += int(mask.sum())
        return total / max(1, count)

    def extra_loss(self, task_id, head, x, y, logits, gen):
        b, o = self.buffer, self.opts
        if b.size == 0:
            return 0.0
        first = b.sample(o.replay_batch_size, gen)
        second = b.sample(o.replay_batch_size, gen)
        return o.alpha * self.logit_loss(first) + o.beta * self.loss_on(task_id, b.x[second], b.y[second],
                                                                           b.head[second])
