"""Continual-learning methods behind one interface (`Strategy`), found by name in `STRATEGIES`.

Every module of this package is imported here, so a new method is one new file: its
`Strategy` subclass registers itself under its `name` (see `base.py`).
"""

import importlib
import pkgutil

from .base import STRATEGIES, Strategy, build_options

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["STRATEGIES", "Strategy", "build_options"]
