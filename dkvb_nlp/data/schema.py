"""The column layout every loaded dataset follows, and the checks that enforce it.

A loaded dataset is a `datasets.DatasetDict` whose splits have the columns

- ``text``: a non-empty string,
- ``text_pair``: a non-empty string, only for sentence-pair tasks,
- ``label``: the label NAME as a string (e.g. ``"positive"``, ``"translate"``),
- ``domain``: a string, only where the data has domains.

Labels stay strings rather than a `ClassLabel` because the integer a label gets depends on the
scenario (arrival order in class-incremental learning, one head per task elsewhere); scenarios
add an integer ``label_id`` column to each task. The ordered list of a dataset's label names is
`label_names(dataset_dict)`: the sorted labels of its ``train`` split.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Value

TEXT = "text"
TEXT_PAIR = "text_pair"
LABEL = "label"
DOMAIN = "domain"
LABEL_ID = "label_id"
COLUMNS = (TEXT, TEXT_PAIR, LABEL, DOMAIN)

# The splits whose labels must lie in the train label space; other splits (CLINC150's oos_*)
# deliberately hold labels the classifier never trains on.
EVAL_SPLITS = ("validation", "test")

EMPTY_TEXT_POLICIES = ("error", "drop")


def column_array(ds: Dataset, column: str) -> np.ndarray:
    """One column as a numpy array, read through Arrow (100x faster than `ds[column]`)."""
    return ds.with_format("arrow")[column].to_numpy(zero_copy_only=False)


def _natural_key(name: str):
    # Integer-like names ("2", "10") sort numerically so that relabelled 0..K-1 data keeps its order.
    return (0, int(name), "") if re.fullmatch(r"-?\d+", name) else (1, 0, name)


def sort_label_names(names: Iterable[str]) -> list[str]:
    """Label names in the canonical order: numeric when integer-like, else alphabetical."""
    return sorted(set(names), key=_natural_key)


def label_names(data: DatasetDict | Dataset) -> list[str]:
    """The ordered label names of a dataset: the sorted labels of its train split."""
    ds = data["train"] if isinstance(data, DatasetDict) else data
    if LABEL not in ds.column_names:
        raise ValueError(f"the dataset has no {LABEL!r} column (columns: {ds.column_names})")
    return sort_label_names(column_array(ds, LABEL))


def _labels_as_names(ds: Dataset, split: str) -> Dataset:
    """Turn a ClassLabel or integer label column into label-name strings."""
    feature = ds.features[LABEL]
    if isinstance(feature, ClassLabel):
        names = np.asarray(feature.names, dtype=object)
        ids = column_array(ds, LABEL).astype(np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= len(names)):
            raise ValueError(f"split {split!r}: label ids outside 0..{len(names) - 1} (unlabelled rows?)")
        return ds.remove_columns(LABEL).add_column(LABEL, names[ids].tolist())
    if isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
        return ds
    if isinstance(feature, Value) and (feature.dtype.startswith("int") or feature.dtype.startswith("uint")
                                       or feature.dtype == "bool"):
        values = column_array(ds, LABEL)
        return ds.remove_columns(LABEL).add_column(LABEL, [str(int(v)) for v in values])
    raise ValueError(f"split {split!r}: label column has type {feature}; accepted: label-name strings, "
                     "integers or a ClassLabel")


def _bad_rows(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks of rows that are not strings, and of strings that are empty or only whitespace."""
    not_str = np.fromiter((not isinstance(v, str) for v in values), bool, len(values))
    empty = np.fromiter((isinstance(v, str) and not v.strip() for v in values), bool, len(values))
    return not_str, empty


def normalize_text_dataset(data: DatasetDict, *, name: str = "dataset", labelled: bool = True,
                           empty_texts: str = "error") -> DatasetDict:
    """Check a DatasetDict against the column layout above and return it in that layout.

    Keeps only the known columns; turns ClassLabel/integer labels into names; raises a ValueError
    naming the split, column and an example row for a missing train split, a missing text or label
    column, texts that are not strings, labels missing in some rows, eval labels unseen in train, and
    empty texts unless `empty_texts="drop"` (MR's source has a few empty reviews).
    """
    if empty_texts not in EMPTY_TEXT_POLICIES:
        raise ValueError(f"empty_texts={empty_texts!r}; accepted: {', '.join(EMPTY_TEXT_POLICIES)}")
    if not isinstance(data, DatasetDict):
        raise ValueError(f"{name}: expected a datasets.DatasetDict of splits, got {type(data).__name__}")
    if "train" not in data:
        raise ValueError(f"{name}: no 'train' split (splits found: {sorted(data) or 'none'}); "
                         "a dataset needs at least a train split")
    out = {}
    for split, ds in data.items():
        where = f"{name}, split {split!r}"
        if TEXT not in ds.column_names:
            raise ValueError(f"{where}: no {TEXT!r} column (columns: {ds.column_names})")
        if labelled and LABEL not in ds.column_names:
            raise ValueError(f"{where}: no {LABEL!r} column (columns: {ds.column_names}); every split of a "
                             "labelled dataset needs one")
        ds = ds.select_columns([c for c in COLUMNS if c in ds.column_names and (labelled or c != LABEL)])
        if labelled:
            ds = _labels_as_names(ds, split)
            labels = column_array(ds, LABEL)
            missing = np.flatnonzero([not isinstance(v, str) or v == "" for v in labels])
            if missing.size:
                raise ValueError(f"{where}: {missing.size} rows have no label (first: row {missing[0]})")
        drop = np.zeros(len(ds), bool)
        for column in (TEXT, TEXT_PAIR):
            if column not in ds.column_names:
                continue
            not_str, empty = _bad_rows(column_array(ds, column))
            if not_str.any():
                i = int(np.flatnonzero(not_str)[0])
                raise ValueError(f"{where}: {int(not_str.sum())} rows have a {column!r} that is not a string "
                                 f"(first: row {i}, value {ds[i][column]!r}); texts must be strings")
            if empty.any() and empty_texts == "error":
                raise ValueError(f"{where}: {int(empty.sum())} rows have an empty {column!r} (first: row "
                                 f"{int(np.flatnonzero(empty)[0])}); pass empty_texts='drop' to drop them (command "
                                 "line: --set scenario_options.empty_texts=drop)")
            drop |= empty
        if drop.any():
            ds = ds.select(np.flatnonzero(~drop))
        # Fixed column order (relabelling above moved `label` to the end).
        out[split] = ds.select_columns([c for c in COLUMNS if c in ds.column_names])
    result = DatasetDict(out)
    if labelled:
        known = set(label_names(result))
        for split in EVAL_SPLITS:
            if split in result:
                unseen = sorted(set(column_array(result[split], LABEL)) - known)
                if unseen:
                    raise ValueError(f"{name}, split {split!r}: labels {unseen[:5]} never occur in train "
                                     f"(train labels: {sort_label_names(known)[:10]}...)")
    return result


def has_pairs(ds: Dataset | DatasetDict) -> bool:
    """Whether examples are sentence pairs (a `text_pair` column)."""
    first = ds["train"] if isinstance(ds, DatasetDict) else ds
    return TEXT_PAIR in first.column_names


def require_columns(ds: Dataset, columns: Sequence[str], what: str) -> None:
    """Raise a ValueError when `ds` lacks one of `columns`, naming `what` needs it."""
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise ValueError(f"{what} needs column(s) {missing}; the dataset has {ds.column_names}")
