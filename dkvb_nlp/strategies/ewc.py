"""EWC (Kirkpatrick et al., 2017) on the linear head over frozen pooled features.

After each task the diagonal Fisher information of the head's weights is computed on the task's
training features, and later tasks pay ``lambda/2 * sum F * (theta - theta*)^2``. This is the
online form (Schwarz et al., 2018): one running Fisher ``F <- gamma * F + F_task`` and one
anchor ``theta*`` = the weights after the latest task, so the penalty is exactly zero at the
anchor. The Fisher is the true one, not the empirical one: for a softmax-linear head the
expectation over y ~ p(y|x) is closed form, ``E[(p_c - 1[y=c])^2] x_d^2 = p_c (1 - p_c) x_d^2``,
so it needs no sampling (and no randomness). p is the model's distribution over the classes
seen so far, the same masked softmax the loss uses.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from ..engine.bounds import bounded
from .feature_head import FeatureHeadStrategy, HeadOptions


@dataclasses.dataclass
class EWCOptions(HeadOptions):
    """Linear-head training plus the EWC penalty (lambda tuned on CLINC150 class_il validation)."""

    method: ClassVar[str] = "ewc"

    ewc_lambda: float = bounded(1e4, ge=0)  # strength of the quadratic penalty (tried 1-1e8; flat from 1e4)
    gamma: float = bounded(1.0, ge=0, le=1)  # decay of the running Fisher (1: plain sum over tasks)


class EWCStrategy(FeatureHeadStrategy):
    """Sequential linear probe with an (online) EWC penalty towards the previous tasks' weights."""

    name = "ewc"
    Options = EWCOptions

    def __init__(self, ctx, options=None):
        super().__init__(ctx, options)
        self.fisher: dict[str, torch.Tensor] = {}  # parameter name -> running diagonal Fisher
        self.anchor: dict[str, torch.Tensor] = {}  # parameter name -> weights after the latest task

    @torch.no_grad()
    def task_fisher(self, task_id: int, head: int, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Diagonal Fisher of head `head`'s weight and bias, averaged over the features x."""
        p = torch.softmax(self.heads[head](x) + self.allowed(task_id, head), dim=1)
        var = p * (1 - p)  # (N, classes): E_y[(p_c - 1[y=c])^2]
        n = max(1, len(x))
        return {f"{head}.weight": var.T @ (x * x) / n, f"{head}.bias": var.sum(0) / n}

    def penalty(self) -> torch.Tensor:
        """``lambda/2 * sum F (theta - theta*)^2`` over the anchored parameters (0 before any)."""
        params = dict(self.heads.named_parameters())
        total = torch.zeros((), device=self.ctx.device)
        for name, fisher in self.fisher.items():
            total = total + (fisher * (params[name] - self.anchor[name]) ** 2).sum()
        return 0.5 * self.opts.ewc_lambda * total

    def extra_loss(self, task_id, head, x, y, logits, gen):
        return self.penalty() if self.fisher else 0.0

    def after_task(self, task_id, head, x, y) -> None:
        for name, f in self.task_fisher(task_id, head, x).items():
            self.fisher[name] = self.opts.gamma * self.fisher[name] + f if name in self.fisher else f
        params = dict(self.heads.named_parameters())
        self.anchor = {name: params[name].detach().clone() for name in self.fisher}

    def extra_state(self):
        tensors = {f"fisher.{k}": v for k, v in self.fisher.items()}
        tensors.update({f"anchor.{k}": v for k, v in self.anchor.items()})
        return tensors, {}

    def load_extra_state(self, state, meta) -> None:
        device = self.ctx.device  # a checkpoint's tensors come from the host
        self.fisher = {k[7:]: v.to(device, copy=True) for k, v in state.items() if k.startswith("fisher.")}
        self.anchor = {k[7:]: v.to(device, copy=True) for k, v in state.items() if k.startswith("anchor.")}
