"""One interface for DKVB and every baseline: set up, learn a task, score a split, save, restore.

A strategy is one file with a `Strategy` subclass and an `Options` dataclass of its
hyperparameters (documented defaults; unknown keys are rejected with the accepted ones). A
subclass that sets `name` is registered in `STRATEGIES` under it: the name is given once, and
a strategy defined outside the package (a `--plugin` module or a `dkvb_nlp.plugins` entry point,
see `dkvb_nlp.runner.plugins`) registers the same way.
The engine owns the loop, the metrics, the checkpoints and the masking of unseen classes, so a
strategy only has to be right about learning.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping

import torch

from ..engine.bounds import check_bounds
from ..engine.context import RunContext, SplitData
from ..registry import Registry

STRATEGIES: Registry[type] = Registry("method")


@dataclasses.dataclass
class NoOptions:
    """A strategy without hyperparameters."""


_ANNOTATION_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "None": (type(None),)}


def _accepts(annotation, value) -> bool | None:
    """Whether `value` fits a simple annotation like 'int | None'; None when not understood."""
    names = [part.strip() for part in str(annotation).split("|")]
    if not all(n in _ANNOTATION_TYPES for n in names):
        return None
    types = tuple(t for n in names for t in _ANNOTATION_TYPES[n])
    if isinstance(value, bool) and "bool" not in names:
        return False
    return isinstance(value, types)


def build_options(cls: type, given: Mapping[str, Any] | None, method: str):
    """`cls(**given)` with a clear ValueError for unknown keys, values of the wrong type or out of range.

    Ranges are the ones the fields declare (`engine.bounds.bounded`), checked by `check_bounds`.
    """
    if given is not None and not isinstance(given, Mapping):
        raise ValueError(f"options of method {method!r} must be a mapping, got {given!r:.80}")
    given = dict(given or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(given) - set(fields))
    if unknown:
        raise ValueError(f"method {method!r} has no option(s) {unknown}; accepted: {', '.join(fields) or '(none)'}")
    for name, value in given.items():
        annotation = fields[name].type
        if _accepts(annotation, value) is False:
            default = fields[name].default
            kind = "a number" if "float" in str(annotation) else ("an integer" if "int" in str(annotation) else annotation)
            raise ValueError(f"{method}.{name}={value!r:.60} must be {kind} (default {default!r})")
    opts = cls(**given)
    check_bounds(opts, f"{method}.")  # every declared numeric range, in one place
    if hasattr(opts, "check"):
        opts.check()
    return opts


class Strategy:
    """Base class. Subclasses set `name`, `Options`, and implement `learn` and `logits`."""

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    uses_features: ClassVar[bool] = True  # reads the frozen encoder's feature cache

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):  # its own name: registered under it (a ValueError if taken)
            STRATEGIES.register(cls.name)(cls)

    def __init__(self, ctx: RunContext, options: Mapping[str, Any] | None = None):
        self.ctx = ctx
        self.opts = build_options(self.Options, options, self.name)

    def validate(self) -> None:
        """Raise a ValueError now for options this run's encoder or stream cannot take (before any encoding)."""

    def setup(self, state: dict[str, torch.Tensor] | None = None, meta: dict | None = None) -> None:
        """Prepare before the first task, or restore from a checkpoint's `state`/`meta`."""
        if state is not None:
            self.load_state(state, meta or {})

    def learn(self, task_id: int) -> None:
        """Train on task `task_id`'s training split (and nothing else of the past)."""
        raise NotImplementedError

    def evaluates_after(self, task_id: int) -> bool:
        """Whether the engine evaluates after learning task `task_id` (False: that matrix row stays null).

        Only a method that learns once, after the last task, says False before it.
        """
        return True

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

    exportable: ClassVar[bool] = False  # whether `export` writes a model (`--export`)

    def export(self, folder, record: dict | None = None):
        """Save the trained model to `folder` (loadable without this toolkit's run); `record` is the
        run's results.json record (None after an intermediate task)."""
        raise NotImplementedError(f"method {self.name!r} has no model to export")
