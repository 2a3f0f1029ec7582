"""Continual-learning scenarios: `build_scenario(name, **options)` -> a checked `TaskStream`.

- ``domain_il``: one task per domain, one shared head over the dataset's labels (default DSC,
  10 Amazon domains x negative/positive). Domain order: `order` (a list) or `seed`.
- ``class_il``: disjoint groups of classes arrive one task at a time (default CLINC150, 15 tasks
  x 10 intents). Single head over all classes, no task id at test (default), or `multi_head=True`
  for one head per task with task ids. Groups: `classes_per_task` consecutive classes of the
  class order (must divide the number of classes; pass `class_groups` for uneven groups;
  default per dataset: CLINC150 10, 20 Newsgroups 2, R8 2 (4 tasks), otherwise 2), or
  `class_groups="domain"` (CLINC150's 10 domains x 15 intents), or explicit `class_groups`
  (kept in the order given). `class_order`/`class_groups` may name a subset of the classes; the
  other classes are then left out of the stream. `oos=True` adds out-of-scope texts to the
  evaluation (CLINC150's oos_validation / oos_test); `oos_train=True` also learns the
  `oos_train` texts as one more class that arrives with the first task (`oos_class.py`).
- ``task_type_il``: one dataset per task, one head per task (default GLUE RTE, MRPC, QQP, SST-2).
  `seed` s picks the s-th of the n! task orders (seeds 0..23 enumerate the 24 GLUE orders).
- ``stream_il`` (`stream_il.py`): task-free; classes arrive in one blurry pass, evaluated every
  `chunk_size` examples on the classes seen so far (default CLINC150).

Shared options: `seed` (task/class order; 0 keeps the canonical order: sorted domains, sorted
labels, the datasets as given), `data_seed` (validation carving and per-class caps, kept apart
from `seed` so that every order sees the same examples), `max_train_per_class` (cap per class per
task, for quick runs), `validation_fraction` (used only where a validation split is carved; see
`splits.py`), `encoding` (of local JSONL/CSV files; UTF-8 by default) and `empty_texts`
('error' by default, or 'drop'; see `schema.py`). Datasets are names, folder paths (see
`catalog.py`) or ready DatasetDicts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import os
from typing import Callable, Mapping, Optional, Sequence, Union

import numpy as np
import pyarrow as pa
from datasets import ClassLabel, Dataset, DatasetDict, DatasetInfo, Features
from datasets.table import InMemoryTable

from ..registry import Registry
from .catalog import dataset_spec, load_text_dataset
from .oos_class import OOS_TRAIN_SPLIT, oos_label, oos_train_rows, with_oos_rows
from .ordering import explicit_order, nth_permutation, order_by_seed
from .schema import DOMAIN, LABEL, LABEL_ID, column_array, label_names, normalize_text_dataset, require_columns
from .splits import Splits, cap_per_key, resolve_splits
from .stream import Task, TaskStream, validate_stream

DatasetLike = Union[str, os.PathLike, DatasetDict]

SCENARIOS: Registry[Callable[..., TaskStream]] = Registry("scenario")

DEFAULT_CLASSES_PER_TASK = 2
GLUE_TASKS = ("glue/rte", "glue/mrpc", "glue/qqp", "glue/sst2")


def _load(dataset: DatasetLike, name: str = "<in-memory>", *, encoding: str = "utf-8",
          empty_texts: Optional[str] = None) -> tuple[str, DatasetDict]:
    """(display name, checked DatasetDict) of a name, a folder or a DatasetDict."""
    if isinstance(dataset, DatasetDict):
        return name, normalize_text_dataset(dataset, name=name, empty_texts=empty_texts or "error")
    if isinstance(dataset, (str, os.PathLike)):
        return os.fspath(dataset), load_text_dataset(dataset, encoding=encoding, empty_texts=empty_texts)
    raise ValueError(f"dataset {dataset!r}; accepted: a dataset name, a folder path or a datasets.DatasetDict")


def _task_split(ds: Dataset, rows: np.ndarray, head: Sequence[str]) -> Dataset:
    """Rows of `ds` as an in-memory Dataset with a `label_id` column (a ClassLabel over `head`).

    Built from an Arrow `take` rather than `select().add_column()`, which flattens the selection
    through a `map` (slow, a progress bar per task split). `label_id`'s ClassLabel names are the
    head's labels, so `task.train.features["label_id"].names` says what the ids mean.
    """
    index = {name: i for i, name in enumerate(head)}
    rows = np.asarray(rows, dtype=np.int64)
    table = ds.with_format("arrow")[rows]
    labels = table.column(LABEL).to_numpy(zero_copy_only=False)
    table = table.append_column(LABEL_ID, pa.array([index[name] for name in labels], type=pa.int64()))
    features = Features({**ds.features, LABEL_ID: ClassLabel(names=list(head))})
    # A fingerprint derived from the parent's, the rows and the head: letting `datasets` hash the
    # whole table instead costs more than building the task (~10 ms per split).
    digest = hashlib.sha256(f"{getattr(ds, '_fingerprint', '')}|{'|'.join(head)}".encode() + rows.tobytes())
    return Dataset(InMemoryTable(table), info=DatasetInfo(features=features), fingerprint=digest.hexdigest()[:16])


def _rows(ds: Dataset, column: str, values: Sequence[str]) -> np.ndarray:
    return np.flatnonzero(np.isin(column_array(ds, column).astype(str), np.asarray(list(values), dtype=str)))


def _make_task(task_id: int, name: str, splits: Splits, rows_of: Callable[[Dataset], np.ndarray],
               labels: Sequence[str], head: int, head_names: Sequence[str], dataset: str,
               max_train_per_class: Optional[int], data_seed: int) -> Task:
    """A task from the rows `rows_of` selects in each split, train capped per class."""
    train_rows = rows_of(splits.train)
    train_rows = cap_per_key(train_rows, column_array(splits.train, LABEL)[train_rows].astype(str),
                             max_train_per_class, data_seed)
    position = {n: i for i, n in enumerate(head_names)}
    return Task(task_id=task_id, name=name,
                train=_task_split(splits.train, train_rows, head_names),
                validation=_task_split(splits.validation, rows_of(splits.validation), head_names),
                test=_task_split(splits.test, rows_of(splits.test), head_names),
                label_names=tuple(labels), label_ids=tuple(position[n] for n in labels), head=head,
                dataset=dataset)


@SCENARIOS.register("domain_il")
def domain_il(dataset: DatasetLike = "dsc", *, order: Optional[Sequence[str]] = None, seed: int = 0,
              data_seed: int = 0, max_train_per_class: Optional[int] = None,
              validation_fraction: float = 0.1, encoding: str = "utf-8", empty_texts: Optional[str] = None) -> TaskStream:
    """Domain-incremental: one task per domain, one shared head over the dataset's labels."""
    name, data = _load(dataset, encoding=encoding, empty_texts=empty_texts)
    if DOMAIN not in data["train"].column_names:
        raise ValueError(f"domain_il needs a {DOMAIN!r} column; dataset {name!r} has {data['train'].column_names} "
                         "(datasets with domains: dsc)")
    splits = resolve_splits(data, validation_fraction=validation_fraction, seed=data_seed)
    for split, ds in (("validation", splits.validation), ("test", splits.test)):
        require_columns(ds, [DOMAIN], f"domain_il (the {split} split of {name!r})")
    head = label_names(data)
    train_domains = column_array(splits.train, DOMAIN).astype(str)
    train_labels = column_array(splits.train, LABEL).astype(str)
    domains = sorted(set(train_domains.tolist()))
    # Domain-IL means the same classes in every domain; CLINC150's domains own disjoint intents
    # (use class_il with class_groups="domain" for those).
    for d in domains:
        own = sorted(set(train_labels[train_domains == d].tolist()))
        if own != sorted(head):
            raise ValueError(f"domain_il needs every domain to share the label set ({len(head)} labels: "
                             f"{_short(head)}); domain {d!r} of {name!r} has {len(own)}: {_short(own)} (for domains "
                             "with their own classes use class_il with class_groups='domain')")
    ordered = explicit_order(domains, order, "domain") if order is not None else order_by_seed(domains, seed)
    tasks = tuple(
        _make_task(t, d, splits, lambda ds, d=d: _rows(ds, DOMAIN, [d]), head, 0, head, name,
                   max_train_per_class, data_seed)
        for t, d in enumerate(ordered))
    options = dict(dataset=name, order=list(ordered), seed=seed, data_seed=data_seed,
                   max_train_per_class=max_train_per_class, validation_fraction=validation_fraction)
    return validate_stream(TaskStream("domain_il", tasks, (tuple(head),), task_id_at_test=False,
                                      disjoint_labels=False, split_sources={name: splits.sources}, options=options))


def _class_groups(data: DatasetDict, name: str, classes: list[str], classes_per_task: Optional[int],
                  class_groups, class_order: Optional[Sequence[str]], seed: int) -> list[list[str]]:
    """The ordered class groups of a class-incremental stream (see the module docstring)."""
    if class_groups is not None and (classes_per_task is not None or class_order is not None):
        raise ValueError("class_groups fixes the groups; pass it without classes_per_task or class_order")
    if class_groups == "domain":
        train = data["train"]
        if DOMAIN not in train.column_names:
            raise ValueError(f"class_groups='domain' needs a {DOMAIN!r} column; dataset {name!r} has "
                             f"{train.column_names}")
        pairs = set(zip(column_array(train, DOMAIN).tolist(), column_array(train, LABEL).tolist()))
        by_domain: dict[str, list[str]] = {}
        for domain, label in sorted(pairs):
            by_domain.setdefault(domain, []).append(label)
        return [by_domain[d] for d in order_by_seed(sorted(by_domain), seed)]
    if class_groups is not None:
        if isinstance(class_groups, str) or not all(isinstance(g, (list, tuple)) and g for g in class_groups):
            raise ValueError(f"class_groups={class_groups!r}; accepted: 'domain' or a list of non-empty lists "
                             "of label names")
        explicit_order(classes, [c for g in class_groups for c in g], "class")  # unknown or repeated labels
        return [list(g) for g in class_groups]
    ordered = explicit_order(classes, class_order, "class") if class_order is not None else order_by_seed(classes, seed)
    size = classes_per_task
    if size is None:
        size = getattr(dataset_spec(name), "classes_per_task", None) or DEFAULT_CLASSES_PER_TASK
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
        raise ValueError(f"classes_per_task={size!r}; accepted: a positive integer")
    if len(ordered) % size:
        divisors = [d for d in range(1, len(ordered) + 1) if len(ordered) % d == 0]
        raise ValueError(f"classes_per_task={size} does not divide the {len(ordered)} classes of {name!r}; accepted: "
                         f"{divisors}, or explicit class_groups for uneven tasks")
    return [list(ordered[i:i + size]) for i in range(0, len(ordered), size)]


def _short(names: Sequence[str], shown: int = 4) -> str:
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


def _group_name(group: Sequence[str]) -> str:
    return "+".join(group) if len(group) <= 3 else f"{'+'.join(group[:2])}+{len(group) - 2} more"


@SCENARIOS.register("class_il")
def class_il(dataset: DatasetLike = "clinc150", *, classes_per_task: Optional[int] = None,
             class_groups=None, class_order: Optional[Sequence[str]] = None, multi_head: bool = False,
             seed: int = 0, data_seed: int = 0, max_train_per_class: Optional[int] = None,
             validation_fraction: float = 0.1, encoding: str = "utf-8", empty_texts: Optional[str] = None,
             oos: bool = False, oos_train: bool = False) -> TaskStream:
    """Class-incremental: disjoint class groups, one shared head (or one per task with `multi_head`).

    `oos=True` adds the dataset's out-of-scope texts (splits `oos_validation`, `oos_test`, as
    CLINC150 has) to the stream, for the open-world evaluation (one shared head only).
    `oos_train=True` (with `oos=True`) also teaches the `oos_train` texts as one more class that
    arrives with the first task (`oos_class.py`; CLINC150's "oos-train" protocol)."""
    name, data = _load(dataset, encoding=encoding, empty_texts=empty_texts)
    unknown = _unknown_splits(data, name, oos, multi_head)
    classes = label_names(data)
    if len(classes) < 2:
        raise ValueError(f"class_il needs at least 2 classes; dataset {name!r} has {classes}")
    oos_rows = oos_train_rows(data, name, oos_train, oos, classes)
    groups = _class_groups(data, name, classes, classes_per_task, class_groups, class_order, seed)
    if multi_head and min(len(g) for g in groups) < 2:
        raise ValueError("multi_head=True needs at least 2 classes per task (a 1-class head always answers it); "
                         f"got group sizes {[len(g) for g in groups]}")
    splits = resolve_splits(data, validation_fraction=validation_fraction, seed=data_seed)
    if class_groups == "domain":
        domain_of = dict(zip(column_array(data["train"], LABEL), column_array(data["train"], DOMAIN)))
        task_names = [f"domain {domain_of[g[0]]}" for g in groups]
    else:
        task_names = [_group_name(g) for g in groups]
    oos_class = None
    if oos_rows is not None:  # the first task also brings the out-of-scope class (train rows only)
        oos_class = oos_label(oos_rows)
        splits = dataclasses.replace(splits, train=with_oos_rows(splits.train, oos_rows),
                                     sources={**splits.sources, "train": f"{splits.sources.get('train', 'train')} "
                                              f"+ {OOS_TRAIN_SPLIT} as class {oos_class!r} (task 0)"})
        groups = [list(groups[0]) + [oos_class]] + [list(g) for g in groups[1:]]
        task_names[0] += f" + {oos_class}"
    heads = tuple(tuple(g) for g in groups) if multi_head else (tuple(c for g in groups for c in g),)
    tasks = tuple(
        _make_task(t, task_names[t], splits, lambda ds, g=g: _rows(ds, LABEL, g), g, t if multi_head else 0,
                   heads[t if multi_head else 0], name, max_train_per_class, data_seed)
        for t, g in enumerate(groups))
    options = dict(dataset=name, classes_per_task=classes_per_task, class_groups=class_groups,
                   class_order=None if class_order is None else list(class_order), multi_head=multi_head,
                   seed=seed, data_seed=data_seed, max_train_per_class=max_train_per_class,
                   validation_fraction=validation_fraction, oos=oos, oos_train=oos_train)
    return validate_stream(TaskStream("class_il", tasks, heads, task_id_at_test=multi_head, disjoint_labels=True,
                                      split_sources={name: splits.sources}, options=options, unknown=unknown,
                                      oos_class=oos_class))


def _unknown_splits(data: DatasetDict, name: str, oos, multi_head: bool) -> dict:
    """The out-of-scope texts for `oos=True`: {'validation': oos_validation, 'test': oos_test}."""
    if not isinstance(oos, bool):
        raise ValueError(f"oos={oos!r}; accepted: true or false")
    if not oos:
        return {}
    if multi_head:
        raise ValueError("oos=True needs one shared head (multi_head=False): with task ids at test, no text is "
                         "out of scope of its own task")
    missing = [s for s in ("oos_validation", "oos_test") if s not in data]
    if missing:
        raise ValueError(f"oos=True needs splits oos_validation and oos_test; dataset {name!r} has "
                         f"{sorted(data)} (CLINC150 has them)")
    return {"validation": data["oos_validation"], "test": data["oos_test"]}


@SCENARIOS.register("task_type_il")
def task_type_il(datasets: Union[Sequence[DatasetLike], Mapping[str, DatasetLike]] = GLUE_TASKS, *,
                 seed: int = 0, data_seed: int = 0, max_train_per_class: Optional[int] = None,
                 validation_fraction: float = 0.1, encoding: str = "utf-8",
                 empty_texts: Optional[str] = None) -> TaskStream:
    """Task-type-incremental: one dataset (task type) per task, one head per task, task ids at test."""
    if isinstance(datasets, (str, os.PathLike, DatasetDict)):
        raise ValueError(f"task_type_il takes several datasets; got one ({datasets!r}); accepted: a list of names, "
                         "folders or DatasetDicts, or a {name: dataset} mapping")
    entries = list(datasets.items()) if isinstance(datasets, Mapping) else [
        (f"<in-memory {i}>" if isinstance(d, DatasetDict) else os.fspath(d), d) for i, d in enumerate(datasets)]
    if len({n for n, _ in entries}) != len(entries):
        raise ValueError(f"task_type_il got the same dataset twice: {[n for n, _ in entries]}")
    loaded = {}
    for entry_name, d in entries:
        data = _load(d, entry_name, encoding=encoding, empty_texts=empty_texts)[1]
        labels = label_names(data)
        if len(labels) < 2:
            raise ValueError(f"task_type_il: dataset {entry_name!r} has labels {labels}; a task needs at least 2")
        loaded[entry_name] = (data, labels)
    ordered = nth_permutation([n for n, _ in entries], seed)
    tasks, sources = [], {}
    for t, entry_name in enumerate(ordered):
        data, labels = loaded[entry_name]
        splits = resolve_splits(data, validation_fraction=validation_fraction, seed=data_seed)
        sources[entry_name] = splits.sources
        tasks.append(_make_task(t, entry_name, splits, lambda ds: np.arange(len(ds)), labels, t, labels,
                                entry_name, max_train_per_class, data_seed))
    options = dict(datasets=list(ordered), seed=seed, data_seed=data_seed, max_train_per_class=max_train_per_class,
                   validation_fraction=validation_fraction)
    return validate_stream(TaskStream("task_type_il", tuple(tasks), tuple(tuple(loaded[n][1]) for n in ordered),
                                      task_id_at_test=True, disjoint_labels=False, split_sources=sources,
                                      options=options))


def scenario_options(name: str) -> list[str]:
    """The options a scenario accepts."""
    return list(inspect.signature(SCENARIOS.get(name)).parameters)


def dataset_options(name: str, dataset: str | None) -> dict:
    """The builder keyword for a dataset given on a command line: task_type_il takes
    comma-separated `datasets`, the other scenarios one `dataset`; None keeps the scenario's default."""
    if dataset is None:
        return {}
    if name == "task_type_il":
        return {"datasets": [d.strip() for d in str(dataset).split(",")]}
    return {"dataset": dataset}


def build_scenario(name: str, **options) -> TaskStream:
    """Build the scenario `name` (one of SCENARIOS) with `options`; unknown options raise a ValueError."""
    builder = SCENARIOS.get(name)
    accepted = scenario_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"scenario {name!r} does not take option(s) {unknown}; accepted: {', '.join(accepted)}")
    return builder(**options)
