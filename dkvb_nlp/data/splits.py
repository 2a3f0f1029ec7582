"""Choosing train/validation/test splits, carving a validation split, and capping examples per class.

Split rule (used by every scenario), for a dataset with splits S:

- test: ``test`` if S has it (local files keep only labelled test splits; hub loaders drop
  unlabelled ones), else ``validation``;
- validation: ``validation`` if S has it and it is not already the test split, else carved
  from train: `validation_fraction` of each stratum (label, and domain where there is one),
  at least one example of each stratum with two or more, seeded by `seed`.

So GLUE RTE tests on its validation split and carves validation from train; MRPC and QQP test on
their test split and carve validation; SST-2 keeps train/validation/test (its local test split is
labelled); CLINC150 and DSC keep all three; 20 Newsgroups, R8 and MR carve validation.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
from datasets import Dataset, DatasetDict

from .schema import DOMAIN, LABEL, column_array


@dataclass(frozen=True)
class Splits:
    """The train/validation/test splits a scenario uses, and where each came from."""

    train: Dataset
    validation: Dataset
    test: Dataset
    # Human-readable provenance, e.g. {"test": "validation", "validation": "10% of train (stratified)"}.
    sources: dict = field(default_factory=dict)


def strata(ds: Dataset) -> np.ndarray:
    """Per-row stratum key: the label, joined with the domain where the data has domains."""
    labels = column_array(ds, LABEL).astype(str)
    if DOMAIN in ds.column_names:
        return np.char.add(np.char.add(labels, "\x1f"), column_array(ds, DOMAIN).astype(str))
    return labels


def stratified_holdout(keys: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split row indices into (kept, held out): `fraction` of each key's rows held out, seeded.

    Each key with n >= 2 rows holds out between 1 and n - 1 of them, so that no class vanishes
    from either side; a key with a single row stays in the kept part.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation_fraction={fraction!r}; accepted: a number strictly between 0 and 1")
    rng = np.random.default_rng(seed)
    held = []
    for key in sorted(set(keys.tolist())):
        rows = np.flatnonzero(keys == key)
        if rows.size < 2:
            continue
        k = int(np.clip(round(fraction * rows.size), 1, rows.size - 1))
        held.append(rng.choice(rows, size=k, replace=False))
    held_idx = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    kept_idx = np.setdiff1d(np.arange(keys.size), held_idx)
    return kept_idx, held_idx


def cap_per_key(rows: np.ndarray, keys: np.ndarray, max_per_key: int | None, seed: int) -> np.ndarray:
    """At most `max_per_key` of `rows` per key (keys[i] belongs to rows[i]), seeded; sorted rows.

    Each key draws from its own generator seeded by (seed, key), so a class keeps the same
    examples whatever task order or grouping it ends up in.
    """
    if max_per_key is None:
        return np.sort(rows)
    if not isinstance(max_per_key, (int, np.integer)) or isinstance(max_per_key, bool) or max_per_key < 1:
        raise ValueError(f"max_train_per_class={max_per_key!r}; accepted: a positive integer or None")
    chosen = []
    for key in sorted(set(keys.tolist())):
        mine = np.sort(rows[keys == key])
        if mine.size > max_per_key:
            rng = np.random.default_rng([seed, zlib.crc32(str(key).encode())])
            mine = rng.choice(mine, size=max_per_key, replace=False)
        chosen.append(mine)
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def resolve_splits(data: DatasetDict, *, validation_fraction: float = 0.1, seed: int = 0) -> Splits:
    """Pick test and validation by the rule in the module docstring, carving validation if needed."""
    if "train" not in data:
        raise ValueError(f"no 'train' split (splits: {sorted(data)})")
    train = data["train"]
    if "test" in data:
        test, test_from = data["test"], "test"
    elif "validation" in data:
        test, test_from = data["validation"], "validation"
    else:
        raise ValueError(f"no 'test' or 'validation' split to evaluate on (splits: {sorted(data)}); "
                         "accepted: a test split, or a validation split used as test")
    if "validation" in data and test_from != "validation":
        return Splits(train, data["validation"], test, {"train": "train", "validation": "validation",
                                                        "test": test_from})
    kept, held = stratified_holdout(strata(train), validation_fraction, seed)
    carved = f"{validation_fraction:g} of train, stratified, seed {seed}"
    return Splits(train.select(kept), train.select(held), test,
                  {"train": "train minus the carved validation", "validation": carved, "test": test_from})
