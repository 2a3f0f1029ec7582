"""Read a local folder of split files (`train.jsonl.gz`, `test.csv`, ...) into a DatasetDict."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from datasets import Dataset, DatasetDict

from ..registry import Registry
from .text_files import python_encoding, read_csv, read_jsonl, read_parquet


# Suffix -> reader(path, split, encoding) -> Dataset. Plain ".json" is left out on purpose:
# folders often hold metadata JSON files. JSONL and CSV go through our strict readers
# (text_files.py), which name the file and line of any problem.
FILE_FORMATS: Registry[Callable[..., Dataset]] = Registry("split file format")
FILE_FORMATS.register(".jsonl.gz")(read_jsonl)
FILE_FORMATS.register(".jsonl")(read_jsonl)
FILE_FORMATS.register(".csv")(read_csv)
FILE_FORMATS.register(".parquet")(read_parquet)


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


def load_local_folder(folder: str | Path, encoding: str = "utf-8") -> DatasetDict:
    """Load every split file of `folder` (`<split>.jsonl.gz|.jsonl|.csv|.parquet`).

    Splits may use different formats; each is read by the reader that fits it, JSONL and CSV
    as `encoding` text (UTF-8 by default, a byte-order mark accepted). Rows are checked as they
    are read (see `text_files.py`); dataset-wide checks are left to `schema.normalize_text_dataset`.
    """
    python_encoding(encoding)  # an unknown encoding fails before any file is read
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
        splits[split] = FILE_FORMATS.get(suffix)(path, split, encoding)
    # Keep the conventional split order (train first) whatever order the formats were read in.
    return DatasetDict({split: splits[split] for split in sorted(splits, key=lambda s: (s != "train", s))})
