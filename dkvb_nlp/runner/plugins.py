"""Strategies and datasets from outside the package: `--plugin module` and entry points.

A plugin is a module that, when imported, registers what it defines: a `Strategy` subclass
with a `name` registers itself in `STRATEGIES`; a dataset or scenario registers with the
registries of `dkvb_nlp.data`. Give it on the command line (`dkvb-nlp run --plugin my_methods`,
importable from the current folder or the environment) or, for an installed package, as an
entry point in the group `dkvb_nlp.plugins`:

    [project.entry-points."dkvb_nlp.plugins"]
    my_methods = "my_package.my_methods"
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from pathlib import Path

ENTRY_POINT_GROUP = "dkvb_nlp.plugins"


def load_plugins(modules: list[str] | tuple[str, ...] = (), entry_points: bool = True) -> list[str]:
    """Import the entry points of ENTRY_POINT_GROUP (if `entry_points`) and each module named;
    returns what was loaded. A module that cannot be imported is a ValueError naming it."""
    loaded: list[str] = []
    if entry_points:
        for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                point.load()
            except Exception as err:
                raise ValueError(f"plugin entry point {point.name!r} ({point.value}) failed to load: "
                                 f"{type(err).__name__}: {err}") from err
            loaded.append(point.value)
    if modules and str(Path.cwd()) not in sys.path and "" not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # `--plugin my_methods` for my_methods.py here
    for name in modules:
        if name in sys.modules:
            loaded.append(name)
            continue
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name and name.startswith(err.name):
                raise ValueError(f"--plugin {name!r}: no module of that name (give an importable module, e.g. "
                                 "my_methods for ./my_methods.py)") from None
            raise
        loaded.append(name)
    return loaded
