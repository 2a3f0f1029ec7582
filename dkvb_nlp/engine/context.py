"""What a strategy sees of a run: the stream, each task split's texts, labels and cached features."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from ..data import LABEL_ID, TaskStream
from ..data.schema import TEXT, TEXT_PAIR, column_array
from .distributed import process_state
from .feature_cache import CachedFeatures, FeatureCache, TextPool


@dataclass
class SplitData:
    """One split of one task: texts (and pairs), label ids in the task's head, features on demand."""

    task_id: int
    split: str
    head: int
    texts: list[str]
    pairs: list[str] | None
    labels: np.ndarray  # int64 label ids in `stream.heads[head]`
    _features: Callable[[], CachedFeatures] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.texts)

    def features(self) -> CachedFeatures:
        """Token states and pooled vectors from the feature cache (encoded on first use)."""
        if self._features is None:
            raise RuntimeError("this run has no feature cache")
        return self._features()


class RunContext:
    """Shared by the strategies of one (scenario, dataset, seed) run.

    Args:
        stream: the tasks.
        cache: the feature cache of the frozen encoder (None when no method needs it).
        seed: the run's seed.
        encoder_name: the encoder every method starts from.
        process: an `accelerate.PartialState` (one process when not launched).
        device: where strategies keep their tensors and compute; default the process's device
            (`process.device`: the GPU a launched process owns, else the CPU). Cached features
            stay on disk and in host memory; strategies move what they compute on, batch by batch.
    """

    def __init__(self, stream: TaskStream, cache: FeatureCache | None, seed: int, encoder_name: str,
                 process=None, progress: bool = True, max_length: int = 128, device=None):
        self.stream, self.cache, self.seed, self.encoder_name = stream, cache, seed, encoder_name
        self.process = process if process is not None else process_state()
        self.device = torch.device(device if device is not None else self.process.device)
        self.progress = progress
        self.max_length = max_length
        self._splits: dict[tuple[int, str], SplitData] = {}
        self._features: dict[tuple[int, str], CachedFeatures] = {}
        self._pools: dict[tuple[str, bool], TextPool] = {}
        self._report: Callable[[dict], None] | None = None

    def log(self, values: dict[str, float]) -> None:
        """A strategy's scalars for the run's trackers (e.g. `{"train/loss": 0.41}` after an epoch).

        The engine routes them while a method runs (`engine.tracking`); otherwise they are dropped,
        so a strategy may always call it."""
        if self._report is not None:
            self._report(dict(values))

    def reporting_to(self, report: Callable[[dict], None] | None):
        """Context manager: `log` goes to `report` inside the block."""
        import contextlib

        @contextlib.contextmanager
        def scope():
            previous, self._report = self._report, report
            try:
                yield self
            finally:
                self._report = previous

        return scope()

    @property
    def num_tasks(self) -> int:
        return self.stream.num_tasks

    def split(self, task_id: int, name: str) -> SplitData:
        """The `name` split ('train', 'validation', 'test') of task `task_id`."""
        key = (task_id, name)
        if key not in self._splits:
            task = self.stream[task_id]
            ds = task.splits()[name]
            texts = list(column_array(ds, TEXT))
            pairs = list(column_array(ds, TEXT_PAIR)) if TEXT_PAIR in ds.column_names else None
            labels = np.asarray(column_array(ds, LABEL_ID), dtype=np.int64)
            self._splits[key] = SplitData(task_id, name, task.head, texts, pairs, labels,
                                          (lambda k=key: self._cached(k)) if self.cache is not None else None)
        return self._splits[key]

    def unknown_split(self, name: str) -> SplitData:
        """The stream's out-of-scope texts of split `name` ('validation' or 'test'), as a split of
        head 0 with label id -1 (no class); task id -1. Encoded as a pool of their own."""
        if name not in self.stream.unknown:
            raise ValueError(f"this stream has no out-of-scope {name!r} texts (scenario option oos=true adds them)")
        key = (-1, f"oos_{name}")
        if key not in self._splits:
            texts = list(column_array(self.stream.unknown[name], TEXT))
            self._splits[key] = SplitData(-1, key[1], 0, texts, None, np.full(len(texts), -1, dtype=np.int64),
                                          (lambda k=key: self._cached(k)) if self.cache is not None else None)
        return self._splits[key]

    def _cached(self, key: tuple[int, str]) -> CachedFeatures:
        if key not in self._features:
            data = self._splits[key]
            pool = TextPool(data.texts, None) if key[0] < 0 else self.pool(key[1], data.pairs is not None)
            self._features[key] = self.cache.get(data.texts, data.pairs, pool=pool)
        return self._features[key]

    def pool(self, name: str, pairs: bool) -> TextPool:
        """Texts (and pairs) of split `name` over all tasks that have pairs (or not): the cache's pool.

        The feature cache encodes a pool once and cuts each task's entry from it, so every
        task, seed and class order over the same texts shares one encoding.
        """
        if (name, pairs) not in self._pools:
            parts = [self.split(t, name) for t in range(self.num_tasks)]
            parts = [d for d in parts if (d.pairs is not None) == pairs]
            texts = [x for d in parts for x in d.texts]
            self._pools[name, pairs] = TextPool(texts, [x for d in parts for x in d.pairs] if pairs else None)
        return self._pools[name, pairs]

    def seen_classes(self, after_task: int, head: int) -> list[int]:
        """Label ids of `head` introduced by tasks 0..after_task (what a model may predict then)."""
        return list(self.stream.seen_label_ids(after_task, head))

    def task_seed(self, task_id: int, salt: int = 0) -> int:
        """A seed for task `task_id` of this run: resuming at any task replays the same randomness."""
        return (self.seed * 1_000_003 + task_id * 7919 + salt) % (2**31)

    def describe(self) -> dict[str, Any]:
        """What the results record about the run's data."""
        return {"scenario": self.stream.scenario, "tasks": [t.name for t in self.stream],
                "classes_per_head": list(self.stream.classes_per_head),
                "task_id_at_test": self.stream.task_id_at_test}
