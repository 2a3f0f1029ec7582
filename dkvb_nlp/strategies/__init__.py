"""Continual-learning methods behind one interface (`Strategy`), found by name in `STRATEGIES`."""

from . import (  # noqa: F401  (registers the methods)
    derpp,
    dkvb,
    dkvb_joint,
    er,
    ewc,
    finetune,
    finetune_joint,
    joint,
    linear,
    lwf,
    mlp,
    nmc,
    ranpac,
)
from .base import STRATEGIES, Strategy, build_options

__all__ = ["STRATEGIES", "Strategy", "build_options"]
