"""The main job from a checkout: `dkvb-nlp run`'s flags (see dkvb_nlp/runner/cli.py).

    accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \\
        benchmarks/run.py --scenario class_il                           # CLINC150 15 x 10, DKVB + fine-tuning
    python benchmarks/run.py --scenario class_il --methods dkvb --seeds 0,1,2
    python benchmarks/run.py --config class_il --set dkvb.ridge=10 --output-dir runs/clinc

The same as `dkvb-nlp run ...` and `python -m dkvb_nlp run ...`; the job itself is
`dkvb_nlp.runner.main_job`.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's dkvb_nlp first

from dkvb_nlp.runner.cli import overrides_from, parse_run_args  # noqa: E402,F401  (kept for scripts)
from dkvb_nlp.runner.cli import run_main as _run_main  # noqa: E402
from dkvb_nlp.runner.main_job import build_stream, run, stream_options  # noqa: E402,F401


def main(argv=None) -> int:
    return _run_main(argv, prog="benchmarks/run.py")


if __name__ == "__main__":
    sys.exit(main())
