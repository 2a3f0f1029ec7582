"""Crash points: a real SIGKILL at a named place, so tests can prove that resume works everywhere.

The engine calls `crash_point(name)` where a kill would be most harmful (between writing a
file and renaming it, between a checkpoint's tensors and its progress, in the middle of
encoding a split, ...). Nothing happens unless the environment variable `DKVB_CRASH_AT` is
`name` or `name:n`; then the process kills itself with SIGKILL the n-th time (default the
first) it reaches that point. The kill is the same signal an out-of-memory killer or a
cluster scheduler sends: no `finally` block, no atexit handler, no flush runs.
"""

from __future__ import annotations

import os
import signal

ENV = "DKVB_CRASH_AT"

# Every crash point in the package, so a test can be parametrised over all of them.
CRASH_POINTS = (
    "cache.batch_written",      # encoding: a batch of token states is in the half-built entry
    "cache.before_rename",      # encoding: the entry is complete but not yet under its final name
    "atomic.before_replace",    # any atomic write: the temporary file is written, not yet renamed
    "dkvb.keys_ready",          # DKVB: keys initialised, nothing trained or checkpointed yet
    "task.learned",             # a task is learned and evaluated, its checkpoint not yet written
    "checkpoint.state_written", # a checkpoint's tensors are written, its progress.json not yet
    "run.method_done",          # one (method, seed) run is finished and recorded, results.json not yet
)

_hits: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Kill this process with SIGKILL if `DKVB_CRASH_AT` names this point (and hit count)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, _, nth = spec.partition(":")
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == (int(nth) if nth else 1):
        os.kill(os.getpid(), signal.SIGKILL)
