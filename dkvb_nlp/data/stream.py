"""The objects a scenario builds: a `TaskStream` of `Task`s, and the checks every stream passes.

A task's `train`, `validation` and `test` are `datasets.Dataset`s with columns ``text``,
``text_pair`` (pair tasks only), ``label`` (name), ``label_id`` (int) and ``domain`` where the data
has one. ``label_id`` indexes ``stream.heads[task.head]``: with one shared head (domain-IL,
single-head class-IL) it is the global class index in arrival order; with one head per task
(task-aware class-IL, task-type-IL) it indexes that task's own label list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Mapping

import numpy as np
from datasets import Dataset

from .schema import LABEL, LABEL_ID, TEXT, TEXT_PAIR, column_array


@dataclass(frozen=True)
class Task:
    """One task: its splits, the labels it covers, and the head that scores it."""

    task_id: int
    name: str
    train: Dataset
    validation: Dataset
    test: Dataset
    label_names: tuple[str, ...]
    label_ids: tuple[int, ...]  # positions of `label_names` in the head's label list
    head: int
    dataset: str

    @property
    def has_pairs(self) -> bool:
        """Whether examples are sentence pairs (a `text_pair` column)."""
        return TEXT_PAIR in self.train.column_names

    def splits(self) -> dict[str, Dataset]:
        """{"train": ..., "validation": ..., "test": ...}."""
        return {"train": self.train, "validation": self.validation, "test": self.test}


@dataclass(frozen=True)
class TaskStream:
    """An ordered list of tasks plus the label space of each head."""

    scenario: str
    tasks: tuple[Task, ...]
    heads: tuple[tuple[str, ...], ...]
    task_id_at_test: bool  # whether the evaluator may tell the model which task an example is from
    disjoint_labels: bool  # class-incremental: no label occurs in two tasks
    split_sources: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # dataset -> split provenance
    options: Mapping[str, object] = field(default_factory=dict)  # the options it was built with
    # Out-of-scope texts (of no class of any head) by split, 'validation' and 'test': the open-world
    # evaluation scores them beside the tasks' test texts (class_il's `oos=True` on CLINC150).
    unknown: Mapping[str, Dataset] = field(default_factory=dict)
    # A learned out-of-scope class of head 0 (class_il's `oos_train=True`, `oos_class.py`): trained
    # like any class, never a closed-set answer; its probability is an out-of-scope score.
    oos_class: str | None = None

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    def __getitem__(self, index: int) -> Task:
        return self.tasks[index]

    @property
    def num_tasks(self) -> int:
        """Number of tasks."""
        return len(self.tasks)

    @property
    def num_heads(self) -> int:
        """Number of classifier heads (1 = shared head)."""
        return len(self.heads)

    @property
    def classes_per_head(self) -> tuple[int, ...]:
        """Output size of each head."""
        return tuple(len(h) for h in self.heads)

    @property
    def class_order(self) -> tuple[str, ...]:
        """Label names in the order tasks introduce them (repeats in later tasks skipped)."""
        return tuple(dict.fromkeys(name for task in self.tasks for name in task.label_names))

    @property
    def oos_class_id(self) -> int | None:
        """Position of the learned out-of-scope class in head 0, or None when there is none."""
        return None if self.oos_class is None else self.heads[0].index(self.oos_class)

    def seen_label_ids(self, task_id: int, head: int = 0) -> tuple[int, ...]:
        """Ids in `head` of the labels introduced by tasks 0..task_id (for masking unseen classes)."""
        return tuple(sorted({i for t in self.tasks[: task_id + 1] if t.head == head for i in t.label_ids}))

    def summary(self) -> str:
        """One line per task: id, name, head, labels and split sizes."""
        lines = [f"{self.scenario}: {self.num_tasks} tasks, {self.num_heads} head(s) of sizes "
                 f"{list(self.classes_per_head)}, task id at test: {self.task_id_at_test}"]
        for t in self.tasks:
            labels = ", ".join(t.label_names[:4]) + (", ..." if len(t.label_names) > 4 else "")
            lines.append(f"  [{t.task_id}] {t.name} (head {t.head}; {labels}): train {len(t.train)}, "
                         f"validation {len(t.validation)}, test {len(t.test)}")
        return "\n".join(lines)


def validate_stream(stream: TaskStream) -> TaskStream:
    """Raise a ValueError when a stream breaks an invariant; return it unchanged otherwise.

    Checked: task ids are 0..T-1; no split of a task is empty; each task's labels lie in its head
    and its `label_id` column agrees with its `label` column; in class-incremental streams no label
    occurs in two tasks and the tasks of a shared head cover that head exactly.
    """
    if not stream.tasks:
        raise ValueError(f"{stream.scenario}: the stream has no tasks")
    for position, task in enumerate(stream.tasks):
        if task.task_id != position:
            raise ValueError(f"task {task.name!r} has task_id {task.task_id} at position {position}")
        if not 0 <= task.head < stream.num_heads:
            raise ValueError(f"task {task.name!r} uses head {task.head}; the stream has {stream.num_heads}")
        head = np.asarray(stream.heads[task.head], dtype=object)
        if tuple(head[list(task.label_ids)]) != task.label_names:
            raise ValueError(f"task {task.name!r}: label_ids {task.label_ids} do not point at {task.label_names}")
        for split, ds in task.splits().items():
            if len(ds) == 0:
                raise ValueError(f"task {task.task_id} ({task.name!r}) has an empty {split} split with the chosen "
                                 f"options {dict(stream.options)}; use fewer tasks or more examples")
            missing = [c for c in (TEXT, LABEL, LABEL_ID) if c not in ds.column_names]
            if missing:
                raise ValueError(f"task {task.name!r}, {split}: missing column(s) {missing}")
            ids = column_array(ds, LABEL_ID).astype(np.int64)
            if ids.min() < 0 or ids.max() >= head.size or not (head[ids] == column_array(ds, LABEL)).all():
                raise ValueError(f"task {task.name!r}, {split}: label_id disagrees with label")
            outside = set(column_array(ds, LABEL)) - set(task.label_names)
            if outside:
                raise ValueError(f"task {task.name!r}, {split}: labels {sorted(outside)[:5]} are not the task's "
                                 f"{list(task.label_names)}")
    if stream.disjoint_labels:
        owner: dict[tuple[int, str], int] = {}
        for task in stream.tasks:
            for name in task.label_names:
                if (task.head, name) in owner:
                    raise ValueError(f"label {name!r} occurs in tasks {owner[(task.head, name)]} and {task.task_id} "
                                     "of a class-incremental stream; class groups must be disjoint")
                owner[(task.head, name)] = task.task_id
        for h, names in enumerate(stream.heads):
            covered = {name for (head, name) in owner if head == h}
            if covered != set(names):
                raise ValueError(f"head {h}: tasks cover {len(covered)} of its {len(names)} classes")
    if stream.oos_class is not None:
        if stream.num_heads != 1 or stream.task_id_at_test:
            raise ValueError("a learned out-of-scope class needs one shared head and no task id at test")
        if stream.heads[0].count(stream.oos_class) != 1:
            raise ValueError(f"the out-of-scope class {stream.oos_class!r} is not a class of the head")
    return stream
