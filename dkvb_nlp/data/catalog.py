"""Named datasets and `load_text_dataset`, which turns a name or a folder into a checked DatasetDict.

Where a named dataset comes from (`source="auto"` tries these in order):

1. ``packaged``: shipped inside the package (only ``clinc150``), so it loads with no data folder
   and no network.
2. ``local``: a folder ``<root>/<name>`` holding split files, for the first root in
   `data_roots()` that has one: the folders in ``$DKVB_DATA_DIR`` (several may be joined with
   ``os.pathsep``), then ``./data`` and ``../shared/data`` relative to the working directory, then
   ``shared/data`` beside a source checkout (``<repo>/../shared/data``).
3. ``hub``: the Hugging Face Hub copy, mapped to our columns (see `hub.py`).

Anything that is not a registered name is taken as a folder path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from datasets import DatasetDict

from ..registry import Registry
from .hub import HubSource, split_off_label
from .local import FILE_FORMATS, is_dataset_folder, load_local_folder
from .packaged import packaged_path
from .schema import DOMAIN, LABEL, column_array, normalize_text_dataset

DATA_DIR_ENV = "DKVB_DATA_DIR"


@dataclass(frozen=True)
class DatasetSpec:
    """What the toolkit knows about a named dataset: where to find it and how to read it."""

    name: str
    description: str
    labelled: bool = True
    packaged: bool = False
    hub: Optional[HubSource] = None
    # How the loader treats empty texts ("error" or "drop"); MR's source has a few empty reviews.
    empty_texts: str = "error"
    # Default group size for the class-incremental scenario.
    classes_per_task: Optional[int] = None


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def _register(spec: DatasetSpec) -> DatasetSpec:
    return DATASETS.register(spec.name)(spec)


def _add_clinc_domains(data: DatasetDict) -> DatasetDict:
    """Give the hub copy of CLINC150 the `domain` column the packaged copy has (intent -> domain)."""
    train = load_local_folder(packaged_path("clinc150"))["train"]
    domain_of = dict(zip(column_array(train, LABEL), column_array(train, DOMAIN)))
    out = {}
    for split, ds in data.items():
        if split.startswith("oos_"):
            out[split] = ds
            continue
        out[split] = ds.add_column(DOMAIN, [domain_of.get(label, "") for label in column_array(ds, LABEL)])
    return DatasetDict(out)


def _clinc_hub_after(data: DatasetDict) -> DatasetDict:
    return _add_clinc_domains(split_off_label(data, "oos", "oos_"))


def _glue(task: str, text: str, text_pair: Optional[str]) -> HubSource:
    return HubSource("nyu-mll/glue", task, text=text, text_pair=text_pair, label="label")


_register(DatasetSpec(
    "clinc150", "CLINC150 intents (Larson et al., 2019; CC BY 3.0): 150 intents in 10 domains, oos_* splits",
    packaged=True, classes_per_task=10,
    hub=HubSource("clinc/clinc_oos", "plus", text="text", label="intent", after=_clinc_hub_after)))
_register(DatasetSpec("dsc", "DSC: Amazon review sentiment in 10 product domains (local data only)"))
_register(DatasetSpec("20newsgroups", "20 Newsgroups bydate, 20 topics", classes_per_task=2,
                      hub=HubSource("SetFit/20_newsgroups", None, text="text", label="label_text")))
_register(DatasetSpec("r8", "R8: Reuters-21578, 8 topics (local data only)", classes_per_task=2))
_register(DatasetSpec("mr", "MR movie-review polarity; its few empty reviews are dropped", empty_texts="drop",
                      hub=HubSource("cornell-movie-review-data/rotten_tomatoes", None, text="text", label="label",
                                    label_rename={"neg": "negative", "pos": "positive"})))
_register(DatasetSpec("glue/rte", "GLUE RTE entailment (pairs)", hub=_glue("rte", "sentence1", "sentence2")))
_register(DatasetSpec("glue/mrpc", "GLUE MRPC paraphrase (pairs)", hub=_glue("mrpc", "sentence1", "sentence2")))
_register(DatasetSpec("glue/sst2", "GLUE SST-2 sentiment (single sentences)", hub=_glue("sst2", "sentence", None)))
_register(DatasetSpec("glue/qqp", "GLUE QQP duplicate questions (pairs)", hub=_glue("qqp", "question1", "question2")))
_register(DatasetSpec("wiki_sentences", "unlabelled Wikipedia sentences for key initialisation (local data only)",
                      labelled=False))


def data_roots() -> list[Path]:
    """Existing folders searched for named datasets, in search order (see the module docstring)."""
    candidates = [Path(p) for p in os.environ.get(DATA_DIR_ENV, "").split(os.pathsep) if p]
    candidates += [Path.cwd() / "data", Path.cwd().parent / "shared" / "data",
                   # A source checkout (<repo>/dkvb_nlp/data/catalog.py) next to a shared data folder.
                   Path(__file__).resolve().parents[3] / "shared" / "data"]
    roots: list[Path] = []
    for path in candidates:
        if path.is_dir() and path.resolve() not in [r.resolve() for r in roots]:
            roots.append(path)
    return roots


def find_local(name: str) -> Optional[Path]:
    """The first `<root>/<name>` folder with a train split, or None."""
    for root in data_roots():
        if is_dataset_folder(root / name):
            return root / name
    return None


def _from_packaged(spec: DatasetSpec, encoding: str) -> Optional[DatasetDict]:
    return load_local_folder(packaged_path(spec.name)) if spec.packaged else None  # shipped as UTF-8


def _from_local(spec: DatasetSpec, encoding: str) -> Optional[DatasetDict]:
    folder = find_local(spec.name)
    return load_local_folder(folder, encoding) if folder is not None else None


def _from_hub(spec: DatasetSpec, encoding: str) -> Optional[DatasetDict]:
    if spec.hub is None:
        return None
    try:
        return spec.hub.load()
    except Exception as error:  # network, auth or a changed hub layout: say what was tried
        raise RuntimeError(f"dataset {spec.name!r}: not found under {[str(r) for r in data_roots()]} and the hub "
                           f"copy {spec.hub.path!r} failed to load ({error}); set {DATA_DIR_ENV} to a folder "
                           f"holding {spec.name}/train.jsonl.gz") from error


SOURCES: Registry[Callable[[DatasetSpec, str], Optional[DatasetDict]]] = Registry("dataset source")
SOURCES.register("packaged")(_from_packaged)
SOURCES.register("local")(_from_local)
SOURCES.register("hub")(_from_hub)
AUTO_ORDER = ("packaged", "local", "hub")


def dataset_names() -> list[str]:
    """The registered dataset names."""
    return DATASETS.names()


def load_text_dataset(name_or_path: str | os.PathLike, *, source: str = "auto",
                      empty_texts: Optional[str] = None, encoding: str = "utf-8") -> DatasetDict:
    """Load a registered dataset by name, or a folder of split files, as a checked DatasetDict.

    Columns: text, label (name string), text_pair and domain where present; see `schema.py`.
    `source` is "auto" or one of SOURCES; `empty_texts` ("error"/"drop") overrides the dataset's
    default; `encoding` is that of local JSONL/CSV files (UTF-8 by default, with or without a
    byte-order mark). A registered name wins over a relative folder of the same name; pass a `Path` (or an
    absolute path) to force a folder.
    """
    if source != "auto":
        SOURCES.get(source)  # ValueError listing the accepted sources
    key = os.fspath(name_or_path)
    if not isinstance(name_or_path, os.PathLike) and key in DATASETS:
        spec = DATASETS.get(key)
        for tried in AUTO_ORDER if source == "auto" else (source,):
            data = SOURCES.get(tried)(spec, encoding)
            if data is not None:
                return normalize_text_dataset(data, name=spec.name, labelled=spec.labelled,
                                              empty_texts=empty_texts or spec.empty_texts)
        raise ValueError(f"dataset {spec.name!r} is not available from source {source!r}: searched "
                         f"{[str(r) for r in data_roots()] or 'no existing data folder'}"
                         f"{'' if spec.hub else ' and it has no hub copy'}; set {DATA_DIR_ENV} to a folder "
                         f"holding {spec.name}/train.jsonl.gz")
    if Path(key).is_dir():
        return normalize_text_dataset(load_local_folder(key, encoding), name=key, empty_texts=empty_texts or "error")
    raise ValueError(f"unknown dataset {key!r}: not a registered name (accepted: {', '.join(DATASETS.names())}) "
                     f"and not an existing folder of split files (train{{{'|'.join(FILE_FORMATS.names())}}})")


def dataset_spec(name_or_path: str | os.PathLike) -> Optional[DatasetSpec]:
    """The spec of a registered name, or None for a folder path."""
    key = os.fspath(name_or_path)
    return DATASETS.get(key) if not isinstance(name_or_path, os.PathLike) and key in DATASETS else None


__all__ = ["DATASETS", "DATA_DIR_ENV", "DatasetSpec", "SOURCES", "data_roots", "dataset_names", "dataset_spec",
           "find_local", "load_text_dataset"]
