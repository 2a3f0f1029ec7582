"""The shared machinery of the frozen-feature baselines: a small head on pooled MiniLM features.

`FeatureHeadStrategy` keeps one head per stream head (a linear layer, or an MLP), reads
`data.features().pooled` (the frozen encoder's mean-pooled token states; `normalize` L2-normalises
them as sentence-transformers does for MiniLM) and trains it with Adam or SGD on the
current task's examples only. The loss covers the classes seen so far (unseen logits masked with
-inf, so their weights get no gradient): the single-head class-IL convention DKVB follows.

Subclasses add a loss term (`extra_loss`), act before/after a task (`before_task`/`after_task`),
and save what they add (`extra_state`/`load_extra_state`). Every random choice in `learn(t)`
comes from `ctx.task_seed(t, salt)`, so a run resumed from a checkpoint continues exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..engine.bounds import bounded
from ..engine.context import SplitData
from .base import Strategy

SALT_INIT, SALT_ORDER, SALT_EXTRA = 101, 102, 103  # salts of ctx.task_seed (distinct streams)


@dataclasses.dataclass
class HeadOptions:
    """Training of a head on frozen features (defaults tuned on CLINC150 class_il validation)."""

    method: ClassVar[str] = "linear"  # the name used in error messages

    lr: float = bounded(1e-3, gt=0)
    epochs: int = bounded(5, ge=1)  # per task
    batch_size: int = bounded(32, ge=1)
    optimizer: str = "adam"  # or 'sgd' (with `momentum`)
    momentum: float = bounded(0.9, ge=0, lt=1)  # sgd only
    weight_decay: float = bounded(0.0, ge=0)
    normalize: bool = False  # L2-normalise first; the raw states (norm ~6) did as well on CLINC150 validation

    def check(self) -> None:
        """Raise a ValueError naming the bad option (numeric ranges: the fields' declared bounds)."""
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"{self.method}.optimizer={self.optimizer!r}; accepted: adam, sgd")


def class_mask(width: int, seen: Iterable[int]) -> torch.Tensor:
    """(width,) additive logit mask: 0 on `seen` classes, -inf elsewhere."""
    mask = torch.full((width,), float("-inf"))
    mask[list(seen)] = 0.0
    return mask


def pooled_features(data: SplitData, normalize: bool) -> torch.Tensor:
    """The split's mean-pooled frozen features (N, D) float32, optionally L2-normalised."""
    x = torch.from_numpy(np.array(data.features().pooled, dtype=np.float32))
    return F.normalize(x, dim=1) if normalize else x


class FeatureHeadStrategy(Strategy):
    """A head per stream head on frozen pooled features, trained task after task."""

    Options = HeadOptions
    uses_features = True
    hidden: ClassVar[int | None] = None  # hidden units of an MLP head; None: linear

    def __init__(self, ctx, options=None):
        super().__init__(ctx, options)
        self._x: dict[tuple[int, str], torch.Tensor] = {}
        self._masks: dict[tuple[int, int], torch.Tensor] = {}
        self.heads = nn.ModuleList()

    # ------------------------------------------------------------------ set-up
    @property
    def dim(self) -> int:
        """Feature size D of the frozen encoder."""
        return int(self.ctx.cache.encoder.config.hidden_size)

    def make_heads(self, seed: int) -> nn.ModuleList:
        """Fresh heads, initialised from `seed` without touching the global RNG."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            heads = []
            for n in self.ctx.stream.classes_per_head:
                if self.hidden is None:
                    heads.append(nn.Linear(self.dim, n))
                else:
                    heads.append(nn.Sequential(nn.Linear(self.dim, self.hidden), nn.ReLU(), nn.Linear(self.hidden, n)))
        # Initialised on the host (the same weights on every device), then moved to the run's device.
        return nn.ModuleList(heads).to(self.ctx.device)

    def setup(self, state=None, meta=None) -> None:
        self.heads = self.make_heads(self.ctx.task_seed(0, SALT_INIT))
        if state is not None:
            self.load_state(state, meta or {})

    def features(self, data: SplitData) -> torch.Tensor:
        """`pooled_features` of a split, kept in host memory after the first call (moved to the
        run's device where they are used: a task's features per `fit`, a split's per `logits`)."""
        key = (data.task_id, data.split)
        if key not in self._x:
            self._x[key] = pooled_features(data, self.opts.normalize)
        return self._x[key]

    def allowed(self, task_id: int, head: int) -> torch.Tensor:
        """The additive mask of the classes of `head` seen after task `task_id` (cached)."""
        key = (task_id, head)
        if key not in self._masks:
            self._masks[key] = class_mask(self.ctx.stream.classes_per_head[head],
                                          self.ctx.seen_classes(task_id, head)).to(self.ctx.device)
        return self._masks[key]

    # ------------------------------------------------------------------ learning
    def make_optimizer(self) -> torch.optim.Optimizer:
        """A fresh optimiser per task (no state crosses tasks, so checkpoints need none)."""
        o = self.opts
        params = list(self.heads.parameters())
        if o.optimizer == "adam":
            return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)

    def learn(self, task_id: int) -> None:
        data = self.ctx.split(task_id, "train")
        # The task's pooled features on the run's device: the hooks and `fit` compute there.
        x, y = self.features(data).to(self.ctx.device), torch.tensor(data.labels, dtype=torch.long).to(self.ctx.device)
        self.before_task(task_id, data.head, x, y)
        self.fit(task_id, [(data.head, x, y)])
        self.after_task(task_id, data.head, x, y)

    def fit(self, task_id: int, groups: list[tuple[int, torch.Tensor, torch.Tensor]]) -> None:
        """`epochs` shuffled passes over `groups` of (head, features, labels); a batch holds one head."""
        o = self.opts
        gen = torch.Generator().manual_seed(self.ctx.task_seed(task_id, SALT_ORDER))
        extra_gen = torch.Generator().manual_seed(self.ctx.task_seed(task_id, SALT_EXTRA))
        masks = {h: self.allowed(task_id, h) for h, _, _ in groups}
        device = self.ctx.device
        groups = [(h, x.to(device), y.to(device)) for h, x, y in groups]  # the task's (small) pooled features
        optimizer = self.make_optimizer()
        self.heads.train()
        for _ in range(o.epochs):
            batches = []
            for g, (_, x, _) in enumerate(groups):
                order = torch.randperm(len(x), generator=gen)
                batches += [(g, order[s : s + o.batch_size]) for s in range(0, len(order), o.batch_size)]
            if len(groups) > 1:  # interleave the heads' batches in a random order
                batches = [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]
            total, count = 0.0, 0
            for g, rows in batches:
                head, x, y = groups[g]
                rows = rows.to(device)  # the order comes from a host generator (the same on every device)
                xb, yb = x[rows], y[rows]
                logits = self.heads[head](xb)
                loss = F.cross_entropy(logits + masks[head], yb)
                loss = loss + self.extra_loss(task_id, head, xb, yb, logits, extra_gen)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total, count = total + float(loss.detach()) * len(rows), count + len(rows)
            self.ctx.log({"train/loss": total / max(1, count)})  # the epoch's mean batch loss per example
        self.heads.eval()

    def loss_on(self, task_id: int, x: torch.Tensor, y: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
        """Mean masked cross-entropy of examples that may belong to several heads (e.g. a replay
        buffer's rows, kept on the host: they move to the run's device here)."""
        device = self.ctx.device
        x, y, heads = x.to(device), y.to(device), heads.to(device)
        total = x.new_zeros(())
        for h in heads.unique().tolist():
            sel = heads == h
            logits = self.heads[h](x[sel]) + self.allowed(task_id, h)
            total = total + F.cross_entropy(logits, y[sel], reduction="sum")
        return total / max(1, len(x))

    # ------------------------------------------------------------------ hooks
    def before_task(self, task_id: int, head: int, x: torch.Tensor, y: torch.Tensor) -> None:
        """Called before training on a task's (features, labels)."""

    def extra_loss(self, task_id: int, head: int, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor,
                   gen: torch.Generator) -> torch.Tensor | float:
        """A term added to each batch's cross-entropy (replay, distillation, penalty)."""
        return 0.0

    def after_task(self, task_id: int, head: int, x: torch.Tensor, y: torch.Tensor) -> None:
        """Called after training on a task's (features, labels)."""

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def logits(self, data: SplitData) -> torch.Tensor:
        return self.heads[data.head](self.features(data).to(self.ctx.device)).float()

    # ------------------------------------------------------------------ checkpoints
    def state(self):
        tensors = {f"heads.{k}": v.detach().clone() for k, v in self.heads.state_dict().items()}
        extra, meta = self.extra_state()
        return {**tensors, **extra}, meta

    def load_state(self, state, meta) -> None:
        self.heads.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("heads.")})
        self.load_extra_state({k: v for k, v in state.items() if not k.startswith("heads.")}, meta)

    def extra_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """What a subclass adds to the checkpoint (tensors, JSON meta)."""
        return {}, {}

    def load_extra_state(self, state: dict[str, torch.Tensor], meta: dict) -> None:
        """Inverse of `extra_state`."""

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.heads.parameters())
