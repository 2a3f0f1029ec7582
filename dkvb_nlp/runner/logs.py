"""What a run prints and keeps: the `dkvb_nlp` logger on the terminal, `run.log` in the output
folder, and third-party libraries kept quiet.

Verbosity (`-q` / default / `-v`):
- `QUIET` (0): warnings, errors and the final table (records marked `extra=ALWAYS`);
- `NORMAL` (1): also the stream summary and one line per task and method;
- `VERBOSE` (2): also debug lines, and the progress bars and info logs of datasets,
  transformers and huggingface_hub, which a default run hides.

`run.log` always holds every info line (debug ones too with `-v`), with times, whatever the
terminal shows; the run's main process writes it, appending, so a resumed run continues it.
Only the command line configures logging (`console`), and only while its command runs:
`dkvb_nlp` used as a library adds no handler and leaves other libraries' settings alone.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

QUIET, NORMAL, VERBOSE = 0, 1, 2
LEVELS = {QUIET: logging.WARNING, NORMAL: logging.INFO, VERBOSE: logging.DEBUG}
ROOT = "dkvb_nlp"
RUN_LOG = "run.log"
ALWAYS = {"always": True}  # `logger.info(text, extra=ALWAYS)`: shown even with -q (the final table)
_FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Console(logging.StreamHandler):
    """Writes to the current sys.stdout (replaced by pytest and by redirections after set-up)."""

    def __init__(self, threshold: int):
        super().__init__()
        self.threshold = threshold

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):  # logging.StreamHandler.__init__ assigns it; the property wins
        pass

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.threshold or getattr(record, "always", False)


def verbosity_from(verbose: int, quiet: int) -> int:
    """-v / -q counts -> QUIET, NORMAL or VERBOSE (a ValueError when both are given)."""
    if verbose and quiet:
        raise ValueError("-v and -q contradict each other; give one of them")
    return QUIET if quiet else (VERBOSE if verbose else NORMAL)


@contextlib.contextmanager
def console(verbosity: int = NORMAL, main_process: bool = True):
    """While open: the `dkvb_nlp` logger on stdout at `verbosity` (other processes: warnings only)
    and third-party output quietened (`quiet_third_party`); everything is restored on exit."""
    if verbosity not in LEVELS:
        raise ValueError(f"verbosity={verbosity!r}; accepted: {', '.join(map(str, LEVELS))}")
    root = logging.getLogger(ROOT)
    handler = _Console(LEVELS[verbosity] if main_process else logging.WARNING)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbosity == VERBOSE else logging.INFO)
    try:
        with quiet_third_party(verbosity):
            yield root
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@contextlib.contextmanager
def quiet_third_party(verbosity: int = NORMAL):
    """While open: no progress bars or info lines from datasets, transformers and huggingface_hub
    (their split generation, weight loading and shard writing) and no accelerate notices, unless
    `verbosity` is VERBOSE. Their previous settings are restored on exit."""
    import datasets
    import huggingface_hub.utils as hub_utils
    import transformers

    hf_logs = (datasets.utils.logging, transformers.utils.logging)
    before = ([m.is_progress_bar_enabled() for m in hf_logs], [m.get_verbosity() for m in hf_logs],
              hub_utils.are_progress_bars_disabled(), logging.getLogger("accelerate").level)
    loud = verbosity == VERBOSE
    for module in hf_logs:
        (module.enable_progress_bar if loud else module.disable_progress_bar)()
        module.set_verbosity(logging.INFO if loud else logging.ERROR)
    (hub_utils.enable_progress_bars if loud else hub_utils.disable_progress_bars)()
    logging.getLogger("accelerate").setLevel(logging.INFO if loud else logging.ERROR)
    try:
        yield
    finally:
        bars, levels, hub_off, accelerate_level = before
        for module, bar, level in zip(hf_logs, bars, levels):
            (module.enable_progress_bar if bar else module.disable_progress_bar)()
            module.set_verbosity(level)
        (hub_utils.disable_progress_bars if hub_off else hub_utils.enable_progress_bars)()
        logging.getLogger("accelerate").setLevel(accelerate_level)


@contextlib.contextmanager
def run_log(folder, verbosity: int = NORMAL, enabled: bool = True):
    """While open, every `dkvb_nlp` record at info (debug with VERBOSE) is appended to folder/run.log."""
    if not enabled:
        yield None
        return
    path = Path(folder) / RUN_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setLevel(logging.DEBUG if verbosity == VERBOSE else logging.INFO)
    handler.setFormatter(logging.Formatter(_FILE_FORMAT))
    root = logging.getLogger(ROOT)
    level = root.level
    if level == logging.NOTSET or level > handler.level:
        root.setLevel(handler.level)
    root.addHandler(handler)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()
