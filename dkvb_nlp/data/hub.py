"""Datasets on the Hugging Face Hub, with the column mapping that brings them to our layout.

Only used when a named dataset is neither packaged nor found in a local data folder. The hub
copies can differ from the local ones: GLUE's QQP there is the full 364k-row train set (the
local folder holds a 2000-row subset), SetFit/20_newsgroups strips headers/footers/quotes, and
rotten_tomatoes is MR with another train/test split. Their unlabelled GLUE test splits
(label -1) are dropped, so a scenario evaluates on the GLUE validation split instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
from datasets import ClassLabel, DatasetDict, load_dataset

from .schema import LABEL, TEXT, TEXT_PAIR, column_array


def map_hub_columns(data: DatasetDict, *, text: str, label: str, text_pair: str | None = None,
                    label_rename: Mapping[str, str] | None = None) -> DatasetDict:
    """Rename a hub DatasetDict's columns to text/text_pair/label with label NAMES as strings.

    ClassLabel ids become their names; splits whose labels are all negative (GLUE's hidden test
    labels, -1) are dropped; `label_rename` maps source names to ours (e.g. "neg" -> "negative").
    """
    out = {}
    for split, ds in data.items():
        wanted = {text: TEXT, label: LABEL, **({text_pair: TEXT_PAIR} if text_pair else {})}
        missing = [c for c in wanted if c not in ds.column_names]
        if missing:
            raise ValueError(f"hub split {split!r} lacks column(s) {missing}; it has {ds.column_names}")
        feature = ds.features[label]
        values = column_array(ds, label)
        if isinstance(feature, ClassLabel):
            ids = values.astype(np.int64)
            if ids.size and (ids < 0).all():
                continue  # an unlabelled test split
            names = np.asarray(feature.names, dtype=object)[ids]
        else:
            names = np.asarray([str(v) for v in values], dtype=object)
        if label_rename:
            names = np.asarray([label_rename.get(n, n) for n in names], dtype=object)
        ds = ds.select_columns(list(wanted)).remove_columns(label).add_column("__label", names.tolist())
        ds = ds.rename_columns({**{k: v for k, v in wanted.items() if k != label}, "__label": LABEL})
        out[split] = ds
    return DatasetDict(out)


def split_off_label(data: DatasetDict, label_name: str, prefix: str) -> DatasetDict:
    """Move the rows labelled `label_name` of each split into a split `<prefix><split>`.

    CLINC150 on the hub mixes the out-of-scope class into its splits; the local copy keeps it in
    separate oos_* splits so that the 150 intents alone form the class-incremental label space.
    """
    out = {}
    for split, ds in data.items():
        is_it = column_array(ds, LABEL) == label_name
        out[split] = ds.select(np.flatnonzero(~is_it))
        if is_it.any():
            out[prefix + split] = ds.select(np.flatnonzero(is_it))
    return DatasetDict(out)


@dataclass(frozen=True)
class HubSource:
    """A hub dataset (`load_dataset(path, config)`) and how its columns map to ours."""

    path: str
    config: str | None
    text: str
    label: str
    text_pair: str | None = None
    label_rename: Mapping[str, str] = field(default_factory=dict)
    # Dataset-specific clean-up after the column mapping (e.g. CLINC150's oos rows).
    after: Callable[[DatasetDict], DatasetDict] | None = None

    def convert(self, raw: DatasetDict) -> DatasetDict:
        """Map a DatasetDict shaped like the hub one to our layout (testable without network)."""
        mapped = map_hub_columns(raw, text=self.text, label=self.label, text_pair=self.text_pair,
                                 label_rename=dict(self.label_rename) or None)
        return self.after(mapped) if self.after else mapped

    def load(self) -> DatasetDict:
        """Download (or read from the hub cache) and convert."""
        args = (self.path, self.config) if self.config else (self.path,)
        return self.convert(load_dataset(*args))
