"""The main job as part of the package: configuration, presets, plugins, the run, the command line.

`dkvb-nlp run|report|presets` (console script), `python -m dkvb_nlp`, and `benchmarks/run.py`
(a thin wrapper for `accelerate launch benchmarks/run.py ...`) all call `cli.main`.
"""

from .cli import main, report_main, run_main

__all__ = ["main", "report_main", "run_main"]
