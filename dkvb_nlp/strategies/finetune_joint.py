"""Joint fine-tuning (upper bound): the `finetune` model trained i.i.d. on the union of the tasks.

`schedule: final` (default; the multi-task upper bound of the NLP papers): nothing is learned
until the last task; then the encoder and heads are fine-tuned once on the union of every
task's training split, shuffled together, and evaluated once. The accuracy matrix's earlier
rows are null, and so are AIA, BWT and forgetting; the final accuracy is what it bounds.
`schedule: cumulative`: after every task t, the encoder and heads are reset to their starting
point (the pretrained encoder and the same seeded heads) and fine-tuned on tasks 0..t, which
fills the whole matrix but costs about (T + 1) / 2 times as much (8x on CLINC150's 15 tasks).
A batch holds examples of one head. Same optimiser, loss masking and distributed behaviour as
`finetune`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..engine.context import SplitData
from .finetune import FinetuneOptions, FinetuneStrategy

SCHEDULES = ("final", "cumulative")


@dataclasses.dataclass
class FinetuneJointOptions(FinetuneOptions):
    """`finetune`'s options plus when to train (see the module docstring)."""

    schedule: str = "final"  # 'final': once, on all tasks, after the last; 'cumulative': after every task

    def check(self) -> None:
        super().check()
        if self.schedule not in SCHEDULES:
            raise ValueError(f"finetune_joint.schedule={self.schedule!r}; accepted: {', '.join(SCHEDULES)}")


class FinetuneJointStrategy(FinetuneStrategy):
    """Fine-tuning of the encoder and heads from scratch on the union of tasks 0..t."""

    name = "finetune_joint"
    Options = FinetuneJointOptions

    def setup(self, state=None, meta=None) -> None:
        super().setup()
        # The starting point every task resets to (the seeded heads are rebuilt the same on resume).
        self._initial = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        if state is not None:
            self.load_state(state, meta or {})

    def union(self, task_id: int) -> list[SplitData]:
        """One SplitData per head: the training examples of tasks 0..task_id, concatenated."""
        by_head: dict[int, list[SplitData]] = {}
        for t in range(task_id + 1):
            data = self.ctx.split(t, "train")
            by_head.setdefault(data.head, []).append(data)
        out = []
        for h, parts in sorted(by_head.items()):
            pairs = None if parts[0].pairs is None else [p for d in parts for p in d.pairs]
            out.append(SplitData(task_id, "train", h, [s for d in parts for s in d.texts], pairs,
                                 np.concatenate([d.labels for d in parts])))
        return out

    def evaluates_after(self, task_id: int) -> bool:
        return self.opts.schedule == "cumulative" or task_id == self.ctx.num_tasks - 1

    def learn(self, task_id: int) -> None:
        o, ctx = self.opts, self.ctx
        if not self.evaluates_after(task_id):
            return  # 'final': the union is learned once, after the last task
        self.model.load_state_dict(self._initial)
        groups = self.union(task_id)
        masks = []
        for data in groups:
            allowed = torch.full((ctx.stream.classes_per_head[data.head],), float("-inf"))
            allowed[ctx.seen_classes(task_id, data.head)] = 0.0
            masks.append(allowed)
        torch.manual_seed(ctx.task_seed(task_id, salt=2))
        params = [{"params": list(self.model.encoder.parameters()), "lr": o.lr, "weight_decay": o.weight_decay},
                  {"params": list(self.model.heads.parameters()), "lr": o.head_lr, "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW(params)
        gen = torch.Generator().manual_seed(ctx.task_seed(task_id, salt=3))
        self._prepared.train()
        total = sum(len(d) for d in groups)
        bar = self._bar(o.epochs * ((total + o.batch_size - 1) // o.batch_size), f"finetune_joint task {task_id + 1}")
        for _ in range(o.epochs):
            plan = []
            for g, data in enumerate(groups):
                order = torch.randperm(len(data), generator=gen).tolist()
                plan += [(g, order[s : s + o.batch_size]) for s in range(0, len(order), o.batch_size)]
            if len(groups) > 1:  # interleave the heads' batches
                plan = [plan[i] for i in torch.randperm(len(plan), generator=gen).tolist()]
            for g, rows in plan:
                data = groups[g]
                _, enc = next(self._batches(data, rows, len(rows)))
                self._step(optimizer, data.head, enc, torch.as_tensor(data.labels[rows]), masks[g])
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
