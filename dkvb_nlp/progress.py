"""Progress bars: one helper, so every loop shows (or hides) its bar the same way.

A bar is drawn on stderr only when `enabled` (the run's `progress` option, off with
`--no-progress` or `-q`) and stderr is a terminal: a job whose stderr goes to a file or a pipe
(CI, `nohup`, a test) gets no carriage-return noise. Bars are cleared when they finish
(`leave=False`), so a terminal keeps only the log lines.
"""

from __future__ import annotations

from typing import Iterable


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 enabled: bool = True, unit: str = "it"):
    """A tqdm bar over `iterable` (or a manual one of `total` steps); inert when not shown."""
    from tqdm.auto import tqdm

    # disable=None: tqdm's own test, off when stderr is not a terminal.
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, disable=None if enabled else True,
                dynamic_ncols=True)
