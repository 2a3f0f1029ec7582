"""The order of a task-free "blurry" stream: classes arrive one after another, their examples blurred.

`blurry_order(ranks, blurry, rng)` returns a permutation of the examples (`ranks[i]` is example
i's class in arrival order, 0..C-1) built as follows:

1. The clean stream: class 0's examples, then class 1's, ... (each class's examples shuffled),
   i.e. the class-incremental order with one class per task. Example j of class c sits at
   time p_c + j, p_c being where c's block starts.
2. Blur: of each class's examples after its first, a fraction `blurry` (rounded) is moved to a
   uniformly random time after p_c, anywhere in the rest of the stream; the stream is the
   examples sorted by time.

A class arrives with its first example and never shows up before it (moving an example
earlier would only move the arrival); after arriving it keeps reappearing among newer classes,
as the "blurry" classes of i-Blurry (Koh et al., 2022) and Si-Blurry (Moon et al., 2023) do.
`blurry=0` is the clean class-by-class stream; `blurry=1` keeps only each class's first
example in place. Since moved examples leave their block, classes arrive a little earlier in
the stream than their clean position (compressed towards the start), and the last examples are
mostly stragglers of earlier classes.
"""

from __future__ import annotations

import numpy as np


def check_blurry(blurry) -> float:
    """`blurry` as a float, or a ValueError unless it is a number in [0, 1]."""
    if isinstance(blurry, bool) or not isinstance(blurry, (int, float, np.integer, np.floating)) \
            or not 0.0 <= float(blurry) <= 1.0:
        raise ValueError(f"blurry={blurry!r}; accepted: a number in [0, 1] (the fraction of each class's "
                         "examples moved to random later positions; 0: one class after another)")
    return float(blurry)


def blurry_order(ranks: np.ndarray, blurry: float, rng: np.random.Generator) -> np.ndarray:
    """Example indices in stream order (see the module docstring); deterministic given `rng`."""
    blurry = check_blurry(blurry)
    ranks = np.asarray(ranks, dtype=np.int64)
    n = ranks.size
    if n == 0:
        return np.zeros(0, np.int64)
    times = np.empty(n, dtype=np.float64)
    moved = np.zeros(n, dtype=bool)
    start = 0
    for c in np.unique(ranks):  # ascending arrival order
        mine = rng.permutation(np.flatnonzero(ranks == c))
        times[mine] = start + np.arange(mine.size)  # the clean block
        k = int(round(blurry * (mine.size - 1)))
        if k:
            # Never the first: it marks the arrival. Uniform on [start, n) minus the start itself.
            chosen = rng.choice(mine[1:], size=k, replace=False)
            times[chosen] = start + (n - start) * (1.0 - rng.random(k))  # in (start, n]
            moved[chosen] = True
        start += mine.size
    # Sorted by time; on a tie (measure zero) a block example before a moved one.
    return np.lexsort((moved, times))


def arrivals(ranks_in_stream_order: np.ndarray) -> np.ndarray:
    """Position in the stream of each class's first example, indexed by class rank."""
    ranks = np.asarray(ranks_in_stream_order, dtype=np.int64)
    classes, first = np.unique(ranks, return_index=True)
    out = np.full(int(classes.max()) + 1 if classes.size else 0, -1, dtype=np.int64)
    out[classes] = first
    return out
