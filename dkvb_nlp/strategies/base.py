"""One interface for DKVB and every baseline: set up, learn a task, score a split, save, restore.

A strategy is one file with a class registered in `STRATEGIES` and an `Options` dataclass of
its hyperparameters (documented defaults; unknown keys are rejected with the accepted ones).
The engine owns the loop, the metrics, the checkpoints and the masking of unseen classes, so a
strategy only has to be right about learning.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping

import torch

from ..engine.context import RunContext, SplitData
from ..registry import Registry

STRATEGIES: Registry[type] = Registry("method")


@dataclasses.dataclass
class NoOptions:
    """A strategy without hyperparameters."""


def build_options(cls: type, given: Mapping[str, Any] | None, method: str):
    """`cls(**given)` with a clear error for unknown keys or bad types."""
    given = dict(given or {})
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ValueError(f"method {method!r} has no option(s) {unknown}; accepted: {', '.join(names) or '(none)'}")
    opts = cls(**given)
    for f in dataclasses.fields(cls):
        value = getattr(opts, f.name)
        default = f.default if f.default is not dataclasses.MISSING else None
        if default is not None and value is not None and isinstance(default, (int, float)) \
                and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{method}.{f.name}={value!r} must be a number (default {default!r})")
            if isinstance(default, int) and not isinstance(value, int):
                raise ValueError(f"{method}.{f.name}={value!r} must be an integer (default {default!r})")
    if hasattr(opts, "check"):
        opts.check()
    return opts


class Strategy:
    """Base class. Subclasses set `name`, `Options`, and implement `learn` and `logits`."""

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    uses_features: ClassVar[bool] = True  # reads the frozen encoder's feature cache

    def __init__(self, ctx: RunContext, options: Mapping[str, Any] | None = None):
        self.ctx = ctx
        self.opts = build_options(self.Options, options, self.name)

    def setup(self, state: dict[str, torch.Tensor] | None = None, meta: dict | None = None) -> None:
        """Prepare before the first task, or restore from a checkpoint's `state`/`meta`."""
        if state is not None:
            self.load_state(state, meta or {})

    def learn(self, task_id: int) -> None:
        """Train on task `task_id`'s training split (and nothing else of the past)."""
        raise NotImplementedError

    def logits(self, data: SplitData) -> torch.Tensor:
        """Scores (N, classes of data.head) for every example of a split."""
        raise NotImplementedError

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Tensors and JSON-able metadata that restore this strategy exactly."""
        return {}, {}

    def load_state(self, state: dict[str, torch.Tensor], meta: dict) -> None:
        """Inverse of `state()`."""

    def trainable_parameters(self) -> int:
        """Number of scalars this method trains."""
        return 0
