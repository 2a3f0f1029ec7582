"""``stream_il``: a task-free stream. Classes arrive in one pass with blurred boundaries, and the
model is evaluated every `chunk_size` examples on every class seen so far.

The stream (default CLINC150) orders the training examples as `blurry.py` describes: classes
in the class order of `seed` (seed 0: sorted label names, as class_il), each class's examples
starting at its arrival, a fraction `blurry` of them moved to random later positions. It is cut
into chunks of `chunk_size` examples (a remainder shorter than that joins the last chunk), and
each chunk is a task of one shared head (the classes in arrival order, so a label id is the
class's arrival rank; no task id at test):

- train: the chunk's examples, in stream order; each training example is in exactly one chunk;
- validation / test: the validation / test texts of the classes that arrive in the chunk, so
  that the loop's evaluation after chunk t over tasks 0..t covers exactly the classes seen so far;
- label_names: every class the chunk's examples belong to (newcomers and earlier classes), in
  head order; labels recur across chunks, so `disjoint_labels` is False.

Every chunk must bring a new class (its test split would be empty otherwise); the error names the
smallest chunk_size that guarantees one. Methods that need task boundaries get the chunks; methods
that learn from sums (dkvb's order-free values, nmc, ranpac) learn exactly what one pass gives.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .blurry import arrivals, blurry_order, check_blurry
from .ordering import explicit_order, order_by_seed
from .scenarios import SCENARIOS, DatasetLike, _load, _task_split
from .schema import LABEL, column_array, label_names
from .splits import cap_per_key, resolve_splits
from .stream import Task, TaskStream, validate_stream

DEFAULT_CHUNK_SIZE = 500  # CLINC150: 30 evaluations of 3-6 newly arrived intents each
# i-Blurry-50-10 (Koh et al., 2022), the setting most online-CL papers report: 10% of a blurry
# class's examples appear away from its own part of the stream.
DEFAULT_BLURRY = 0.1
_PLACEMENT_SALT = 0x5EED  # the placement's generator differs from the class order's


def _check_chunk_size(chunk_size) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r}; accepted: a positive integer (training examples between "
                         "two evaluations)")
    return int(chunk_size)


def chunk_bounds(n: int, chunk_size: int) -> list[tuple[int, int]]:
    """[start, end) of each chunk: every `chunk_size` examples, a shorter remainder joining the last."""
    cuts = list(range(0, n, chunk_size))
    ends = cuts[1:] + [n]
    if len(cuts) > 1 and ends[-1] - cuts[-1] < chunk_size:
        cuts.pop()
        ends.pop(-2)
    return list(zip(cuts, ends))


def _longest_gap(first: np.ndarray, n: int) -> int:
    """The longest stretch of the stream without an arrival (between two, or after the last)."""
    points = np.sort(first)
    return int(np.diff(np.append(points, n)).max())


@SCENARIOS.register("stream_il")
def stream_il(dataset: DatasetLike = "clinc150", *, chunk_size: int = DEFAULT_CHUNK_SIZE,
              blurry: float = DEFAULT_BLURRY, class_order: Optional[Sequence[str]] = None, seed: int = 0,
              data_seed: int = 0, max_train_per_class: Optional[int] = None, validation_fraction: float = 0.1,
              encoding: str = "utf-8", empty_texts: Optional[str] = None) -> TaskStream:
    """Task-free blurry class-incremental stream, cut into chunks of `chunk_size` examples."""
    chunk_size, blurry = _check_chunk_size(chunk_size), check_blurry(blurry)
    name, data = _load(dataset, encoding=encoding, empty_texts=empty_texts)
    classes = label_names(data)
    if len(classes) < 2:
        raise ValueError(f"stream_il needs at least 2 classes; dataset {name!r} has {classes}")
    head = explicit_order(classes, class_order, "class") if class_order is not None else order_by_seed(classes, seed)
    splits = resolve_splits(data, validation_fraction=validation_fraction, seed=data_seed)
    rank = {c: i for i, c in enumerate(head)}

    train_labels = column_array(splits.train, LABEL).astype(str)
    rows = np.flatnonzero(np.isin(train_labels, head))
    rows = cap_per_key(rows, train_labels[rows], max_train_per_class, data_seed)
    ranks = np.fromiter((rank[c] for c in train_labels[rows]), np.int64, rows.size)
    order = blurry_order(ranks, blurry, np.random.default_rng([seed, _PLACEMENT_SALT]))
    rows, ranks = rows[order], ranks[order]
    first = arrivals(ranks)

    bounds = chunk_bounds(rows.size, chunk_size)
    arriving = np.searchsorted([s for s, _ in bounds], first, side="right") - 1  # chunk of each class
    empty = sorted(set(range(len(bounds))) - set(arriving.tolist()))
    if empty:
        s, e = bounds[empty[0]]
        raise ValueError(f"stream_il: with chunk_size={chunk_size} and blurry={blurry:g}, chunk {empty[0]} (examples "
                         f"{s}..{e - 1} of {rows.size}) brings no new class, so there is nothing new to evaluate "
                         f"after it; accepted: chunk_size >= {_longest_gap(first, rows.size)} (the longest stretch "
                         "of this stream between class arrivals), or a lower blurry")

    eval_labels = {split: column_array(ds, LABEL).astype(str)
                   for split, ds in (("validation", splits.validation), ("test", splits.test))}
    tasks = []
    for t, (s, e) in enumerate(bounds):
        present = sorted(set(ranks[s:e].tolist()))  # head order
        newcomers = [head[c] for c in np.flatnonzero(arriving == t)]
        evaluated = {split: np.flatnonzero(np.isin(labels, newcomers)) for split, labels in eval_labels.items()}
        tasks.append(Task(task_id=t, name=f"ex {s + 1}-{e}", train=_task_split(splits.train, rows[s:e], head),
                          validation=_task_split(splits.validation, evaluated["validation"], head),
                          test=_task_split(splits.test, evaluated["test"], head),
                          label_names=tuple(head[c] for c in present), label_ids=tuple(present), head=0,
                          dataset=name))
    options = dict(dataset=name, chunk_size=chunk_size, blurry=blurry,
                   class_order=None if class_order is None else list(class_order), seed=seed,
                   data_seed=data_seed, max_train_per_class=max_train_per_class,
                   validation_fraction=validation_fraction)
    return validate_stream(TaskStream("stream_il", tuple(tasks), (tuple(head),), task_id_at_test=False,
                                      disjoint_labels=False, split_sources={name: splits.sources}, options=options))
