"""Sequential fine-tuning: the whole encoder plus a linear head per stream head, task after task.

The NLP paper's main comparison. No replay and no regularisation, so it forgets; the loss
covers the classes seen so far (the same masking DKVB gets). Under `accelerate launch` with
several processes, each global batch is split across them (DDP), so the updates equal one
process's up to floating-point reassociation; evaluation is sharded and gathered.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from ..encoders.load import autocast_dtype
from ..engine.bounds import bounded
from ..engine.context import SplitData
from .base import Strategy


@dataclasses.dataclass
class FinetuneOptions:
    """Hyperparameters of sequential fine-tuning (AdamW, linear warm-up-free schedule)."""

    lr: float = bounded(5e-5, gt=0)  # encoder learning rate (AdamW)
    head_lr: float = bounded(1e-3, gt=0)  # classifier head learning rate
    epochs: int = bounded(1, ge=1)  # per task
    batch_size: int = bounded(32, ge=1)
    weight_decay: float = bounded(0.01, ge=0)
    pooling: str = "mean"  # mean of token states, or 'cls'
    eval_batch_size: int = bounded(128, ge=1)
    max_grad_norm: float = bounded(1.0, gt=0)

    def check(self) -> None:
        """Raise a ValueError naming the bad option (numeric ranges: the fields' declared bounds)."""
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"finetune.pooling={self.pooling!r}; accepted: mean, cls")


class TextClassifier(nn.Module):
    """An encoder with one linear head per stream head, over pooled token states."""

    def __init__(self, encoder: nn.Module, classes_per_head, pooling: str):
        super().__init__()
        self.encoder = encoder
        dim = encoder.config.hidden_size
        self.heads = nn.ModuleList(nn.Linear(dim, n) for n in classes_per_head)
        self.pooling = pooling

    def forward(self, head: int, **inputs) -> torch.Tensor:
        states = self.encoder(**inputs).last_hidden_state
        if self.pooling == "cls":
            pooled = states[:, 0]
        else:
            mask = inputs["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp_min(1)
        return self.heads[head](pooled.float())


class FinetuneStrategy(Strategy):
    """Fine-tune every encoder weight and a linear head on each task in turn."""

    name = "finetune"
    Options = FinetuneOptions
    uses_features = False

    def setup(self, state=None, meta=None) -> None:
        from accelerate import Accelerator

        ctx = self.ctx
        encoder = copy.deepcopy(ctx.cache.encoder) if ctx.cache is not None else ctx.encoder()
        for p in encoder.parameters():
            p.requires_grad_(True)
        self.tokenizer = ctx.cache.tokenizer if ctx.cache is not None else ctx.tokenizer()
        torch.manual_seed(ctx.task_seed(0, salt=1))  # the heads' initialisation
        self.model = TextClassifier(encoder, ctx.stream.classes_per_head, self.opts.pooling)
        from accelerate.utils import DistributedDataParallelKwargs

        # The encoder's pooler and the other tasks' heads get no gradient in a step.
        ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
        self.accelerator = Accelerator(split_batches=True, cpu=not torch.cuda.is_available(), kwargs_handlers=[ddp])
        # The precision of the device it trains on. float16 (GPUs without native bf16) would need
        # loss scaling to train; this baseline then trains in float32 instead.
        dtype = autocast_dtype(ctx.cache.autocast if ctx.cache is not None else "auto", self.accelerator.device)
        self.dtype = None if dtype == torch.float16 else dtype
        if state is not None:
            self.model.load_state_dict(state)
        self._prepared = self.accelerator.prepare_model(self.model)

    def _batches(self, data: SplitData, order: list[int], batch_size: int):
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            texts = [data.texts[i] for i in rows]
            pairs = [data.pairs[i] for i in rows] if data.pairs is not None else None
            args = (texts,) if pairs is None else (texts, pairs)
            enc = self.tokenizer(*args, truncation=True, max_length=self.ctx.max_length, padding=True,
                                 return_tensors="pt")
            yield rows, {k: v.to(self.accelerator.device) for k, v in enc.items()}

    def _cast(self):
        import contextlib

        return torch.autocast(self.accelerator.device.type, dtype=self.dtype) if self.dtype else contextlib.nullcontext()

    def learn(self, task_id: int) -> None:
        o, ctx = self.opts, self.ctx
        data = ctx.split(task_id, "train")
        seen = ctx.seen_classes(task_id, data.head)
        allowed = torch.full((ctx.stream.classes_per_head[data.head],), float("-inf"))
        allowed[seen] = 0.0
        torch.manual_seed(ctx.task_seed(task_id, salt=2))
        params = [{"params": [p for p in self.model.encoder.parameters()], "lr": o.lr, "weight_decay": o.weight_decay},
                  {"params": list(self.model.heads.parameters()), "lr": o.head_lr, "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW(params)  # fresh per task: no state carried across tasks
        labels_all = torch.tensor(data.labels, dtype=torch.long)
        gen = torch.Generator().manual_seed(ctx.task_seed(task_id, salt=3))
        self._prepared.train()
        bar = self._bar(o.epochs * ((len(data) + o.batch_size - 1) // o.batch_size), f"finetune task {task_id + 1}")
        for _ in range(o.epochs):
            order = torch.randperm(len(data), generator=gen).tolist()
            total = 0.0
            for rows, enc in self._batches(data, order, o.batch_size):
                total += self._step(optimizer, data.head, enc, labels_all[rows], allowed) * len(rows)
                if bar is not None:
                    bar.update(1)
            self.ctx.log({"train/loss": total / max(1, len(order))})
        if bar is not None:
            bar.close()

    def _step(self, optimizer, head: int, enc: dict, labels: torch.Tensor, allowed: torch.Tensor) -> float:
        """One update on a global batch: each process takes its slice (split_batches semantics).

        Returns the mean loss over this process's slice of the batch (the whole batch with one process)."""
        acc, o = self.accelerator, self.opts
        n, world, rank = labels.shape[0], acc.num_processes, acc.process_index
        share = slice(rank * n // world, (rank + 1) * n // world)
        enc = {k: v[share] for k, v in enc.items()}
        y = labels[share].to(acc.device)
        with self._cast():
            logits = self._prepared(head, **enc)
        loss = F.cross_entropy(logits.float() + allowed.to(logits.device), y, reduction="sum") / n
        acc.backward(loss * world)  # DDP averages over processes; undo it to average over the batch
        acc.clip_grad_norm_(self.model.parameters(), o.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach()) * n / max(1, y.shape[0])

    def _bar(self, total: int, desc: str):
        if not (self.ctx.progress and self.accelerator.is_main_process):
            return None
        from ..progress import progress_bar

        return progress_bar(total=total, desc=desc, unit="batch")

    @torch.no_grad()
    def logits(self, data: SplitData) -> torch.Tensor:
        acc = self.accelerator
        self._prepared.eval()
        world, rank = acc.num_processes, acc.process_index
        mine = list(range(rank, len(data), world))  # every world-th example, gathered back below
        out = []
        with torch.inference_mode(), self._cast():
            for _, enc in self._batches(data, mine, self.opts.eval_batch_size):
                out.append(self.model(data.head, **enc).float().cpu())
        width = self.ctx.stream.classes_per_head[data.head]
        local = torch.cat(out) if out else torch.zeros(0, width)
        if world == 1:
            return local
        from accelerate.utils import gather_object

        parts = gather_object([(rank, local)])
        result = torch.zeros(len(data), width)
        for r, part in parts:
            result[r::world] = part
        return result

    def state(self):
        return {k: v for k, v in self.model.state_dict().items()}, {}

    def load_state(self, state, meta) -> None:
        self.model.load_state_dict(state)

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)
