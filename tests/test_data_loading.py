"""Dataset loading: the packaged CLINC150, local folders in every format, hub column mapping, errors."""

from __future__ import annotations

import fnmatch
import gzip
import json
import os
import sys
from pathlib import Path

import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from dkvb_nlp.data import (DATA_DIR_ENV, DATASETS, data_roots, label_names, load_text_dataset,
                           normalize_text_dataset, packaged_path)
from dkvb_nlp.data.hub import map_hub_columns

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path | None:
    """The real data folder: $DKVB_DATA_DIR, else <repo>/../shared/data; None when absent (fresh CI clone)."""
    for candidate in (os.environ.get(DATA_DIR_ENV), REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "dsc").is_dir():
            return Path(candidate)
    return None


def write_jsonl(path: Path, rows: list[dict], gz: bool = False) -> None:
    opener = gzip.open if gz else open
    with opener(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


ROWS = [{"text": f"example {i}", "label": ["neg", "pos"][i % 2]} for i in range(6)]


# --- the packaged CLINC150 -------------------------------------------------------------------


def test_packaged_clinc150_loads_from_its_own_folder():
    data = load_text_dataset(packaged_path("clinc150"))  # a Path: read as a folder, no ../shared involved
    assert {k: len(v) for k, v in data.items()} == {"train": 15000, "validation": 3000, "test": 4500,
                                                    "oos_train": 100, "oos_validation": 100, "oos_test": 1000}
    assert len(label_names(data)) == 150 and "oos" not in label_names(data)
    assert data["train"].column_names == ["text", "label", "domain"]
    assert len(set(data["train"]["domain"])) == 10
    assert set(data["oos_test"]["label"]) == {"oos"}


def test_packaged_clinc150_is_the_default_source_without_any_data_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "nowhere"))
    data = load_text_dataset("clinc150")
    assert len(data["train"]) == 15000
    assert len(load_text_dataset("clinc150", source="packaged")["test"]) == 4500


def test_packaged_clinc150_carries_its_license_and_attribution():
    folder = packaged_path("clinc150")
    license_text = (folder / "LICENSE").read_text()
    attribution = (folder / "ATTRIBUTION.md").read_text()
    assert "creativecommons.org/licenses/by/3.0" in license_text
    assert "Larson" in attribution and "clinc/oos-eval" in attribution and "CC BY 3.0" in attribution


def test_pyproject_package_data_ships_every_packaged_file():
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["dkvb_nlp.data"]
    base = REPO / "dkvb_nlp" / "data"
    files = [p.relative_to(base).as_posix() for p in (base / "packaged").rglob("*") if p.is_file()]
    assert files and all(any(fnmatch.fnmatch(f, pat) for pat in patterns) for f in files), files


# --- local folders -----------------------------------------------------------------------------


def test_local_folder_in_mixed_formats(tmp_path):
    write_jsonl(tmp_path / "train.jsonl.gz", ROWS, gz=True)
    write_jsonl(tmp_path / "validation.jsonl", ROWS[:2])
    (tmp_path / "test.csv").write_text("text,label\n\"a, quoted\",pos\n123,neg\n")
    (tmp_path / "README.md").write_text("not a split")
    data = load_text_dataset(str(tmp_path))
    assert list(data) == ["train", "test", "validation"]
    assert data["test"]["text"] == ["a, quoted", "123"]  # a digits-only CSV text stays a string
    assert label_names(data) == ["neg", "pos"]


def test_local_folder_of_parquet_pairs_with_int_labels_and_domains(tmp_path):
    rows = {"text": ["a", "b", "c", "d"], "text_pair": ["w", "x", "y", "z"], "label": [0, 1, 10, 2],
            "domain": ["d1", "d1", "d2", "d2"], "extra": [1, 2, 3, 4]}
    Dataset.from_dict(rows).to_parquet(str(tmp_path / "train.parquet"))
    data = load_text_dataset(tmp_path)
    assert data["train"].column_names == ["text", "text_pair", "label", "domain"]  # unknown columns dropped
    assert label_names(data) == ["0", "1", "2", "10"]  # integer-like names sort numerically


def test_csv_integer_labels_and_classlabel_parquet(tmp_path):
    (tmp_path / "train.csv").write_text("label,text\n1,good\n0,bad\n")
    assert load_text_dataset(tmp_path)["train"]["label"] == ["1", "0"]
    other = tmp_path / "classlabel"
    other.mkdir()
    features = Features({"text": Value("string"), "label": ClassLabel(names=["no", "yes"])})
    Dataset.from_dict({"text": ["a", "b"], "label": [1, 0]}, features=features).to_parquet(
        str(other / "train.parquet"))
    assert load_text_dataset(other)["train"]["label"] == ["yes", "no"]


def test_named_dataset_resolves_under_the_data_dir_env(tmp_path, monkeypatch):
    (tmp_path / "r8").mkdir()
    write_jsonl(tmp_path / "r8" / "train.jsonl", ROWS)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert data_roots()[0] == tmp_path
    assert len(load_text_dataset("r8")["train"]) == len(ROWS)


# --- errors --------------------------------------------------------------------------------------


def test_unknown_name_lists_names_and_says_it_is_no_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"'nope'.*accepted: .*clinc150.*dsc.*not an existing folder"):
        load_text_dataset("nope")


def test_folder_without_train_split(tmp_path):
    write_jsonl(tmp_path / "test.jsonl", ROWS)
    with pytest.raises(ValueError, match=r"no train split.*test\.jsonl"):
        load_text_dataset(tmp_path)


@pytest.mark.parametrize("rows, message", [
    ([{"text": "a"}, {"text": "b"}], r"no 'label' column \(columns: \['text'\]\)"),
    ([{"label": "x"}], r"no 'text' column"),
    ([{"text": "a", "label": "x"}, {"text": "  ", "label": "y"}], r"1 rows have an empty 'text'.*empty_texts='drop'"),
    ([{"text": "a", "label": "x"}, {"text": "b", "label": None}], r"1 rows have no label"),
])
def test_bad_rows_raise_naming_the_problem(tmp_path, rows, message):
    write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(ValueError, match=message):
        load_text_dataset(tmp_path)


def test_texts_that_are_not_strings_raise():
    data = DatasetDict({"train": Dataset.from_dict({"text": [1, 2], "label": ["x", "y"]})})
    with pytest.raises(ValueError, match=r"2 rows have a 'text' that is not a string \(first: row 0, value 1\)"):
        normalize_text_dataset(data)


def test_empty_texts_can_be_dropped_and_policy_is_checked(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", ROWS + [{"text": "", "label": "pos"}])
    assert len(load_text_dataset(tmp_path, empty_texts="drop")["train"]) == len(ROWS)
    with pytest.raises(ValueError, match=r"empty_texts='skip'; accepted: error, drop"):
        load_text_dataset(tmp_path, empty_texts="skip")


def test_eval_label_unseen_in_train_and_duplicate_split_files(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", ROWS)
    write_jsonl(tmp_path / "test.jsonl", [{"text": "z", "label": "maybe"}])
    with pytest.raises(ValueError, match=r"split 'test': labels \['maybe'\] never occur in train"):
        load_text_dataset(tmp_path)
    write_jsonl(tmp_path / "train.jsonl.gz", ROWS, gz=True)
    with pytest.raises(ValueError, match=r"split 'train' has two files"):
        load_text_dataset(tmp_path)


def test_unknown_source_lists_sources():
    with pytest.raises(ValueError, match=r"unknown dataset source 'web'; accepted: hub, local, packaged"):
        load_text_dataset("clinc150", source="web")


# --- hub column mapping (the download itself needs network; the mapping does not) ---------------


def test_glue_hub_mapping_names_labels_and_drops_the_unlabelled_test_split():
    features = Features({"sentence1": Value("string"), "sentence2": Value("string"),
                         "label": ClassLabel(names=["entailment", "not_entailment"]), "idx": Value("int32")})
    raw = DatasetDict({
        "train": Dataset.from_dict({"sentence1": ["a", "b"], "sentence2": ["c", "d"], "label": [0, 1], "idx": [0, 1]},
                                   features=features),
        "test": Dataset.from_dict({"sentence1": ["e"], "sentence2": ["f"], "label": [-1], "idx": [0]},
                                  features=features)})
    data = DATASETS.get("glue/rte").hub.convert(raw)
    assert list(data) == ["train"]
    assert data["train"].column_names == ["text", "text_pair", "label"]
    assert data["train"]["label"] == ["entailment", "not_entailment"] and data["train"]["text_pair"] == ["c", "d"]


def test_sst2_and_rotten_tomatoes_and_20newsgroups_hub_mappings():
    sst2 = DatasetDict({"train": Dataset.from_dict(
        {"sentence": ["x"], "label": [1], "idx": [0]},
        features=Features({"sentence": Value("string"), "label": ClassLabel(names=["negative", "positive"]),
                           "idx": Value("int32")}))})
    assert DATASETS.get("glue/sst2").hub.convert(sst2)["train"][0] == {"text": "x", "label": "positive"}
    rt = DatasetDict({"train": Dataset.from_dict(
        {"text": ["meh", "wow"], "label": [0, 1]},
        features=Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])}))})
    assert DATASETS.get("mr").hub.convert(rt)["train"]["label"] == ["negative", "positive"]
    ng = DatasetDict({"train": Dataset.from_dict({"text": ["post"], "label": [3], "label_text": ["sci.space"]})})
    assert DATASETS.get("20newsgroups").hub.convert(ng)["train"][0] == {"text": "post", "label": "sci.space"}


def test_clinc_hub_mapping_splits_off_oos_and_adds_domains():
    names = ["translate", "oos", "balance"]
    raw = DatasetDict({split: Dataset.from_dict(
        {"text": ["say hi in french", "what is love", "how much money"], "intent": [0, 1, 2]},
        features=Features({"text": Value("string"), "intent": ClassLabel(names=names)}))
        for split in ("train", "test")})
    data = DATASETS.get("clinc150").hub.convert(raw)
    assert sorted(data) == ["oos_test", "oos_train", "test", "train"]
    assert data["train"]["label"] == ["translate", "balance"]
    assert data["train"]["domain"] == ["travel", "banking"]
    assert data["oos_train"]["label"] == ["oos"]


def test_map_hub_columns_names_a_missing_column():
    raw = DatasetDict({"train": Dataset.from_dict({"sentence": ["a"], "label": [0]})})
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['question1'\]"):
        map_hub_columns(raw, text="question1", label="label")


# --- the real data folder ----------------------------------------------------------------------


def test_mr_drops_its_empty_reviews():
    root = shared_data()
    if root is None:
        pytest.skip("needs the real data folder ../shared/data (or $DKVB_DATA_DIR); absent in a fresh clone")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(DATA_DIR_ENV, str(root))
        data = load_text_dataset("mr")
    assert (len(data["train"]), len(data["test"])) == (7108 - 6, 3554 - 4)
    with pytest.raises(ValueError, match="empty 'text'"):
        load_text_dataset(root / "mr")  # a plain folder gets the strict default


# --- strict inputs: every problem names the file and line ------------------------------------


def write_lines(path: Path, lines: list[str], encoding: str = "utf-8") -> Path:
    path.write_bytes("".join(line + "\n" for line in lines).encode(encoding))
    return path


GOOD = [json.dumps(r) for r in ROWS]


@pytest.mark.parametrize("bad_line, message", [
    ('{"text": 12345, "label": "pos"}', r"train\.jsonl, line 4 \(row 3\): 'text' is 12345 \(a number\), not a string"),
    ('{"text": ["a"], "label": "pos"}', r"line 4 \(row 3\): 'text' is \['a'\] \(a list\), not a string"),
    ('{"text": "a", "label": "pos", "text_pair": 7}', r"line 4 \(row 3\): 'text_pair' is 7"),
    ('{"text": "a", "label": "pos", "domain": null}', r"line 4 \(row 3\): 'domain' is None \(null\)"),
    ('{"text": "a", "label": 1}', r"line 4 \(row 3\): 'label' is 1, an integer, but earlier labels are strings"),
    ('{"text": "a", "label": 1.5}', r"line 4 \(row 3\): 'label' is 1\.5 \(a number\); a label is a string"),
    ('{"text": "a", "label": "pos"', r"train\.jsonl, line 4: not valid JSON \(Expecting ',' delimiter at column 29\)"),
    ('["a", "pos"]', r"train\.jsonl, line 4: expected a JSON object .* got a list"),
    ('{"label": "pos"}', r"train\.jsonl, line 4 \(row 3\): no 'text', which 5 other rows have"),
])
def test_a_bad_jsonl_row_names_file_line_and_value(tmp_path, bad_line, message):
    write_lines(tmp_path / "train.jsonl", GOOD[:3] + [bad_line] + GOOD[3:5])
    with pytest.raises(ValueError, match=message):
        load_text_dataset(tmp_path)


def test_one_number_among_texts_no_longer_turns_the_column_into_json(tmp_path):
    """The silent failure: `datasets` read the column as JSON, so every text got literal quotes."""
    write_lines(tmp_path / "train.jsonl", GOOD + ['{"text": "12345", "label": "pos"}'])
    texts = load_text_dataset(tmp_path)["train"]["text"]
    assert texts[0] == "example 0" and texts[-1] == "12345"


def test_byte_order_marks_are_accepted_in_csv_and_jsonl(tmp_path):
    (tmp_path / "train.csv").write_bytes(b"\xef\xbb\xbftext,label\nhello there,pos\nbye now,neg\n")
    write_lines(tmp_path / "test.jsonl", GOOD[:2])
    (tmp_path / "test.jsonl").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "test.jsonl").read_bytes())
    data = load_text_dataset(tmp_path)
    assert data["train"]["text"] == ["hello there", "bye now"] and data["test"]["text"] == ["example 0", "example 1"]


def test_a_file_in_another_encoding_names_the_file_and_the_option(tmp_path):
    write_lines(tmp_path / "train.csv", ["text,label", "caf\xe9 au lait,pos", "th\xe9,neg"], encoding="latin-1")
    with pytest.raises(ValueError, match=r"train\.csv, line 2: not utf-8 text \(byte 0xe9 .*"
                                         r"scenario_options\.encoding=latin-1"):
        load_text_dataset(tmp_path)
    assert load_text_dataset(tmp_path, encoding="latin-1")["train"]["text"] == ["caf\xe9 au lait", "th\xe9"]
    from dkvb_nlp.data import build_scenario

    more = [f"caf\xe9 {i},pos" for i in range(10)] + [f"th\xe9 {i},neg" for i in range(10)]
    write_lines(tmp_path / "train.csv", ["text,label"] + more, encoding="latin-1")
    write_lines(tmp_path / "test.csv", ["text,label", "caf\xe9,pos", "th\xe9 vert,neg"], encoding="latin-1")
    stream = build_scenario("class_il", dataset=str(tmp_path), encoding="latin-1", classes_per_task=1)
    assert stream.num_tasks == 2 and "th\xe9 vert" in list(stream[0].test["text"]) + list(stream[1].test["text"])
    with pytest.raises(ValueError, match=r"encoding='klingon' is not a known text encoding"):
        load_text_dataset(tmp_path, encoding="klingon")


@pytest.mark.parametrize("lines, message", [
    (["text,label", "a,pos,extra"], r"train\.csv, line 2: 3 fields, but the header has 2 \(text, label\)"),
    (["text,label", '"unclosed,pos'], r"train\.csv, line \d+: not valid CSV"),
    (["text,text,label", "a,b,pos"], r"train\.csv, line 1: the header names column\(s\) \['text'\] twice"),
    ([], r"train\.csv: empty file"),
])
def test_a_bad_csv_names_file_and_line(tmp_path, lines, message):
    write_lines(tmp_path / "train.csv", lines)
    with pytest.raises(ValueError, match=message):
        load_text_dataset(tmp_path)


def test_csv_cells_stay_strings_and_empty_texts_name_the_command_line_option(tmp_path):
    write_lines(tmp_path / "train.csv", ["text,label", "12345,0", "007,1", ",1"])
    with pytest.raises(ValueError, match=r"--set scenario_options\.empty_texts=drop"):
        load_text_dataset(tmp_path)
    data = load_text_dataset(tmp_path, empty_texts="drop")["train"]
    assert data["text"] == ["12345", "007"] and data["label"] == ["0", "1"]


def test_a_truncated_gzip_split_names_the_file(tmp_path):
    write_jsonl(tmp_path / "train.jsonl.gz", ROWS * 50, gz=True)
    blob = (tmp_path / "train.jsonl.gz").read_bytes()
    (tmp_path / "train.jsonl.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match=r"train\.jsonl\.gz: damaged or truncated gzip file"):
        load_text_dataset(tmp_path)
