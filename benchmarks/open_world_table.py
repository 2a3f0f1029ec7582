"""The open-world rows of a run's results.json as a Markdown table (one line per method and seed).

    python benchmarks/open_world_table.py runs/latest/results.json

See `dkvb_nlp/report/open_world_table.py` for the columns (report.html shows the same table).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dkvb_nlp.report.open_world_table import open_world_markdown  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="a results.json written by benchmarks/run.py")
    args = ap.parse_args(argv)
    if not args.results.is_file():
        sys.exit(f"no such file: {args.results}")
    text = open_world_markdown(json.loads(args.results.read_text()))
    print(text or f"{args.results} has no open-world entries (class-incremental runs and scenario_options.oos=true add them)")


if __name__ == "__main__":
    main()
