"""`python -m dkvb_nlp run|report|presets ...` (the same as the `dkvb-nlp` command)."""

import sys

from .runner.cli import main

if __name__ == "__main__":
    sys.exit(main())
