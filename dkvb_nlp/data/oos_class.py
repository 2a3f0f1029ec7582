"""The out-of-scope texts of a dataset's `oos_train` split as one more class to learn (class_il `oos_train=True`).

CLINC150's standard "oos-train" protocol (Larson et al., 2019): the 100 `oos_train` texts are
labelled with one class, `oos`, which every method learns like an intent. Here that class arrives
with the first task (its train split gains the oos_train rows), so it sits in the shared head right
after the first task's intents, in arrival order. It is never a closed-set answer: the evaluation
predicts among the in-scope classes only and uses the class's probability as an out-of-scope
score (`engine/open_world_eval.py`); it has no validation or test rows of its own (those are the
`oos_validation` and `oos_test` texts the open-world evaluation scores).
"""

from __future__ import annotations

from datasets import Dataset, DatasetDict, concatenate_datasets

from .schema import LABEL, TEXT_PAIR, column_array

OOS_TRAIN_SPLIT = "oos_train"


def oos_train_rows(data: DatasetDict, name: str, oos_train, oos: bool, classes: list[str]) -> Dataset | None:
    """The `oos_train` split when `oos_train=True` (checked), else None.

    Needs `oos=True` (the class is learned to be scored against the out-of-scope texts), a split
    `oos_train` whose rows share one label, and that label not an in-scope class."""
    if not isinstance(oos_train, bool):
        raise ValueError(f"oos_train={oos_train!r}; accepted: true or false")
    if not oos_train:
        return None
    if not oos:
        raise ValueError("oos_train=True needs oos=True: the learned out-of-scope class is scored against the "
                         "oos_validation and oos_test texts")
    if OOS_TRAIN_SPLIT not in data:
        raise ValueError(f"oos_train=True needs a split {OOS_TRAIN_SPLIT}; dataset {name!r} has {sorted(data)} "
                         "(CLINC150 has it)")
    rows = data[OOS_TRAIN_SPLIT]
    if len(rows) == 0:
        raise ValueError(f"oos_train=True: the {OOS_TRAIN_SPLIT} split of {name!r} is empty")
    labels = sorted(set(column_array(rows, LABEL).astype(str).tolist()))
    if len(labels) != 1:
        raise ValueError(f"oos_train=True needs one label in {OOS_TRAIN_SPLIT}; dataset {name!r} has {labels[:5]}")
    if labels[0] in classes:
        raise ValueError(f"oos_train=True: the {OOS_TRAIN_SPLIT} label {labels[0]!r} is also an in-scope class "
                         f"of {name!r}")
    return rows


def oos_label(rows: Dataset) -> str:
    """The one label of the `oos_train` rows (CLINC150: 'oos')."""
    return str(column_array(rows, LABEL)[0])


def with_oos_rows(train: Dataset, rows: Dataset) -> Dataset:
    """`train` with the `oos_train` rows appended, their columns matched to train's (a missing
    domain is '', a missing text_pair is an error)."""
    if TEXT_PAIR in train.column_names and TEXT_PAIR not in rows.column_names:
        raise ValueError(f"oos_train=True: the train split has sentence pairs and {OOS_TRAIN_SPLIT} has none")
    n = len(rows)
    columns = {c: (list(column_array(rows, c)) if c in rows.column_names else [""] * n) for c in train.column_names}
    extra = Dataset.from_dict(columns, features=train.features)  # (no `cast`: it draws a progress bar)
    return concatenate_datasets([train, extra])

