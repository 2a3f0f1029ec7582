"""Continual-learning methods behind one interface (`Strategy`), found by name in `STRATEGIES`."""

from . import dkvb, finetune  # noqa: F401  (registers the methods)
from .base import STRATEGIES, Strategy, build_options

__all__ = ["STRATEGIES", "Strategy", "build_options"]
