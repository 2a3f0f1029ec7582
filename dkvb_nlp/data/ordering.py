"""Task and class orders from a seed or an explicit list.

Convention: seed 0 keeps the canonical order (sorted domain / label names, or the dataset
order given for task-type streams) so that the default stream is the documented one; any other
seed draws a permutation with `numpy.random.default_rng(seed)`.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence, TypeVar

import numpy as np

T = TypeVar("T")


def order_by_seed(items: Sequence[T], seed: int) -> list[T]:
    """`items` in canonical order for seed 0, else shuffled by `seed` (deterministic)."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed={seed!r}; accepted: a non-negative integer")
    if seed == 0:
        return list(items)
    return [items[i] for i in np.random.default_rng(seed).permutation(len(items))]


def nth_permutation(items: Sequence[T], index: int) -> list[T]:
    """The `index % n!`-th permutation of `items` in itertools order (index 0 = `items` itself).

    Used where all orders are meant to be enumerated: seeds 0..23 give the 24 orders of 4 tasks.
    """
    if not isinstance(index, (int, np.integer)) or isinstance(index, bool) or index < 0:
        raise ValueError(f"seed={index!r}; accepted: a non-negative integer")
    n_orders = math.factorial(len(items))
    return list(next(itertools.islice(itertools.permutations(items), index % n_orders, None)))


def explicit_order(items: Sequence[T], order: Sequence[T], what: str) -> list[T]:
    """Check that `order` is a permutation of `items` (or of a subset) and return it as a list."""
    order = list(order)
    unknown = [o for o in order if o not in items]
    if unknown:
        raise ValueError(f"{what} order names unknown value(s) {unknown}; accepted: {list(items)}")
    repeated = sorted({o for o in order if order.count(o) > 1}, key=str)
    if repeated:
        raise ValueError(f"{what} order repeats {repeated}; each may appear once")
    if not order:
        raise ValueError(f"{what} order is empty; accepted: a non-empty list of {list(items)}")
    return order
