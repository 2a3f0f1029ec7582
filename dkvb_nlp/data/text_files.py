"""Strict readers of JSON-lines and CSV split files: every problem names the file and the line.

A JSONL file holds one JSON object per line; a CSV file has a header row. Both are read as
UTF-8 by default, with or without a byte-order mark; another encoding is an option
(`encoding="latin-1"`, on the command line `--set scenario_options.encoding=latin-1`), and a file
that does not decode names the file, the line and the byte, and offers that option.

What a row may hold is checked here, row by row, rather than left to a type inference that
would silently turn a column into something else (one JSON number among texts made `datasets`
read the whole column as JSON, quotes included): ``text``, ``text_pair`` and ``domain`` must be
strings in every row that has them; ``label`` strings or integers, the same kind in every row
(a missing label is left for the schema check, which counts them). Other fields are ignored.
CSV cells are always strings (an empty cell is "", never NaN).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import json
import zlib
from pathlib import Path
from typing import Iterator

import pyarrow as pa
from datasets import Dataset, DatasetInfo, Features, Value
from datasets.table import InMemoryTable

from .schema import COLUMNS, LABEL, TEXT

STRING_COLUMNS = tuple(c for c in COLUMNS if c != LABEL)  # text, text_pair, domain
ENCODING_HINT = "scenario_options.encoding"  # how the command line names the option

csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))  # long documents (20 Newsgroups) in one cell


def python_encoding(encoding: str) -> str:
    """The codec to read with: UTF-8 also accepts a byte-order mark; unknown names are a ValueError."""
    try:
        name = codecs.lookup(encoding).name
    except (LookupError, TypeError):
        raise ValueError(f"encoding={encoding!r} is not a known text encoding; accepted: a Python codec name such "
                         "as utf-8, latin-1, cp1252, utf-16") from None
    return "utf-8-sig" if name == "utf-8" else name


def _lines(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of a text file, gzip-compressed or not, with decoding errors named."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding=python_encoding(encoding), newline="") as handle:
            for number, line in enumerate(handle, 1):
                yield number, line
    except UnicodeDecodeError:
        line, byte = _undecodable(path, opener, python_encoding(encoding))
        raise ValueError(f"{path}, line {line}: not {encoding} text (byte {byte:#04x} cannot be decoded); give the "
                         f"file's encoding, e.g. --set {ENCODING_HINT}=latin-1 (load_text_dataset(..., "
                         "encoding='latin-1'))") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise ValueError(f"{path}: damaged or truncated gzip file ({err})") from None


def _undecodable(path: Path, opener, encoding: str) -> tuple[int, int]:
    """(line number, byte) of the first line that does not decode (text mode decodes whole chunks)."""
    with opener(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                raw.decode(encoding)
            except UnicodeDecodeError as err:
                return number, raw[err.start]
    return 0, 0


class _Columns:
    """The known columns of a file, filled row by row with each value checked."""

    def __init__(self, path: Path):
        self.path, self.values, self.label_kind, self.rows = path, {c: [] for c in COLUMNS}, None, 0
        self.seen: set[str] = set()
        self.lines: list[int] = []  # the file line of each row

    def add(self, row: dict, line: int) -> None:
        where = f"{self.path}, line {line} (row {self.rows})"
        self.seen.update(row)
        self.lines.append(line)
        for column in STRING_COLUMNS:
            value = row.get(column)
            if column in row and not isinstance(value, str):
                raise ValueError(f"{where}: {column!r} is {value!r:.60} ({_json_kind(value)}), not a string; every "
                                 f"row's {column} must be a string (quote it)")
            self.values[column].append(value)
        label = row.get(LABEL)
        if label is not None:
            kind = "string" if isinstance(label, str) else "integer" if _is_int(label) else None
            if kind is None:
                raise ValueError(f"{where}: 'label' is {label!r:.60} ({_json_kind(label)}); a label is a string "
                                 "(its name) or an integer")
            if self.label_kind not in (None, kind):
                raise ValueError(f"{where}: 'label' is {label!r:.60}, an {kind}, but earlier labels are "
                                 f"{self.label_kind}s; give every label as a string or every label as an integer")
            self.label_kind = kind
        self.values[LABEL].append(label)
        self.rows += 1

    def dataset(self, split: str, fingerprint: str) -> Dataset:
        present = [c for c in COLUMNS if c in self.seen]
        if TEXT not in present:
            raise ValueError(f"{self.path}: no {TEXT!r} column: no row has a {TEXT!r} field (fields: "
                             f"{sorted(self.seen) or 'none'}); a split file needs one")
        for column in (c for c in STRING_COLUMNS if c in present):
            missing = [i for i, v in enumerate(self.values[column]) if v is None]
            if missing:
                raise ValueError(f"{self.path}, line {self.lines[missing[0]]} (row {missing[0]}): no {column!r}, which "
                                 f"{self.rows - len(missing)} other rows have; every row needs one")
        types = {c: pa.int64() if c == LABEL and self.label_kind == "integer" else pa.string() for c in present}
        table = pa.table({c: pa.array(self.values[c], type=types[c]) for c in present})
        features = Features({c: Value("int64" if types[c] == pa.int64() else "string") for c in present})
        return Dataset(InMemoryTable(table), info=DatasetInfo(features=features), split=split,
                       fingerprint=fingerprint)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _json_kind(value) -> str:
    kinds = {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object",
             type(None): "null", str: "a string"}
    return kinds.get(type(value), type(value).__name__)


def _fingerprint(path: Path, encoding: str) -> str:
    h = hashlib.sha256(f"{encoding}|".encode())
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()[:16]


def read_jsonl(path: str | Path, split: str, encoding: str = "utf-8") -> Dataset:
    """A JSON-lines split file (optionally .gz) as a Dataset of the known columns (see the module docstring)."""
    path = Path(path)
    columns = _Columns(path)
    for number, line in _lines(path, encoding):
        if not line.strip():
            continue
        try:
            row = json.loads(line.rstrip("\r\n"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}, line {number}: not valid JSON ({err.msg} at column {err.colno}); each line "
                             "must be one JSON object such as {\"text\": \"...\", \"label\": \"...\"}") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}, line {number}: expected a JSON object such as {{\"text\": \"...\", \"label\": \"...\"}}, got "
                             f"{_json_kind(row)}: {line.strip()[:60]}")
        columns.add(row, number)
    return columns.dataset(split, _fingerprint(path, encoding))


def read_csv(path: str | Path, split: str, encoding: str = "utf-8") -> Dataset:
    """A CSV split file with a header row; every cell a string (see the module docstring)."""
    path = Path(path)
    columns = _Columns(path)
    lines = (line for _, line in _lines(path, encoding))
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file; a CSV split file needs a header row naming its columns")
        repeated = sorted({h for h in header if header.count(h) > 1})
        if repeated:
            raise ValueError(f"{path}, line 1: the header names column(s) {repeated} twice")
        for cells in reader:
            if not cells:  # a blank line
                continue
            if len(cells) != len(header):
                raise ValueError(f"{path}, line {reader.line_num}: {len(cells)} fields, but the header has "
                                 f"{len(header)} ({', '.join(header)}); quote texts that contain commas")
            columns.add(dict(zip(header, cells)), reader.line_num)
    except csv.Error as err:
        raise ValueError(f"{path}, line {reader.line_num}: not valid CSV ({err})") from None
    return columns.dataset(split, _fingerprint(path, encoding))


def read_parquet(path: str | Path, split: str, encoding: str = "utf-8") -> Dataset:
    """A Parquet split file (typed columns; the schema check names non-string texts)."""
    try:
        return Dataset.from_parquet(str(path), split=split)
    except Exception as err:  # pyarrow's errors for a damaged file: say which file
        raise ValueError(f"{path}: not a readable Parquet file ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''})") from None
