"""Read a local folder of split files (`train.jsonl.gz`, `test.csv`, ...) into a DatasetDict."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from datasets import Dataset, DatasetDict, Features, Value

from ..registry import Registry


@dataclass(frozen=True)
class FileFormat:
    """How `datasets` reads one kind of split file (a `Dataset.from_*` reader)."""

    # Dataset.from_json/from_csv/from_parquet run the same cached builders as
    # load_dataset("json", ...) but skip its per-call HEAD request to the Hub (a download counter),
    # which costs a DNS timeout per call offline and has no business in reading local files.
    reader: Callable[..., Dataset]
    # Extra builder arguments computed from the split file (CSV needs its header for `features`).
    options: Callable[[str], dict] = field(default=lambda path: {})


def _csv_options(path: str) -> dict:
    # Read every CSV column as a string: otherwise pandas turns a label column 0/1 into integers in
    # one file and a digits-only text into a number, and an empty cell into NaN (not "").
    with open(path, newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle), [])
    return {"features": Features({c: Value("string") for c in header}), "keep_default_na": False}


# Suffix -> reader. Plain ".json" is left out on purpose: folders often hold metadata JSON files.
FILE_FORMATS: Registry[FileFormat] = Registry("split file format")
FILE_FORMATS.register(".jsonl.gz")(FileFormat(Dataset.from_json))
FILE_FORMATS.register(".jsonl")(FileFormat(Dataset.from_json))
FILE_FORMATS.register(".csv")(FileFormat(Dataset.from_csv, _csv_options))
FILE_FORMATS.register(".parquet")(FileFormat(Dataset.from_parquet))


def _split_and_suffix(path: Path) -> tuple[str, str] | None:
    """(split name, suffix) of a split file, or None for a file of another kind (README, LICENSE)."""
    # Longest suffix first, so that a future ".gz" entry could not claim "train.jsonl.gz".
    for suffix in sorted(FILE_FORMATS.names(), key=len, reverse=True):
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            return path.name[: -len(suffix)], suffix
    return None


def split_files(folder: str | Path) -> dict[str, tuple[str, Path]]:
    """The split files of `folder` as {split: (suffix, path)}; one file per split."""
    folder = Path(folder)
    found: dict[str, tuple[str, Path]] = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        parsed = _split_and_suffix(path)
        if parsed is None:
            continue
        split, suffix = parsed
        if split in found:
            raise ValueError(f"{folder}: split {split!r} has two files ({found[split][1].name}, {path.name}); "
                             "keep one")
        found[split] = (suffix, path)
    return found


def is_dataset_folder(folder: str | Path) -> bool:
    """Whether `folder` exists and holds a train split file."""
    folder = Path(folder)
    return folder.is_dir() and "train" in split_files(folder)


def load_local_folder(folder: str | Path) -> DatasetDict:
    """Load every split file of `folder` (`<split>.jsonl.gz|.jsonl|.csv|.parquet`) as-is.

    Splits may use different formats; each is read by the `datasets` reader that fits it.
    Column checks are left to `schema.normalize_text_dataset`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{str(folder)!r} is not a folder")
    files = split_files(folder)
    if "train" not in files:
        listed = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
        raise ValueError(f"folder {str(folder)!r} has no train split: expected a file train"
                         f"{{{'|'.join(FILE_FORMATS.names())}}}; it holds {listed}")
    # One load per split: CSV splits may have different headers (a test file without text_pair).
    splits = {}
    for split, (suffix, path) in files.items():
        fmt = FILE_FORMATS.get(suffix)
        splits[split] = fmt.reader(str(path), split=split, **fmt.options(str(path)))
    # Keep the conventional split order (train first) whatever order the formats were read in.
    return DatasetDict({split: splits[split] for split in sorted(splits, key=lambda s: (s != "train", s))})
