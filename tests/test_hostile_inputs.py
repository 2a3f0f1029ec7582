"""The hostile-input table of issue 16 through the main job's command line (benchmarks/run.py's
`main`): every input a user can get wrong exits 2 with one `error:` line naming the bad value
(and file) and what is accepted, never a traceback, and nothing is encoded before the refusal;
the inputs that are only unusual (a CSV with a byte-order mark, empty texts with
`--set scenario_options.empty_texts=drop`) run to the end.

Cases already walked through the command line elsewhere are not repeated here (test_engine.py's
bad options, test_folder_lock.py's held folder, test_run_identity.py's resume, test_checksums.py's
damaged checkpoint); the readers and bounds behind these cases have unit tests in
test_data_loading.py and test_guard_options.py."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from cli_tools import base_args, run_module, tiny_dataset


@pytest.fixture(scope="module")
def main():
    return run_module().main


def replace_line(path: Path, index: int, line: str) -> None:
    lines = path.read_text().splitlines()
    lines[index] = line
    path.write_text("\n".join(lines) + "\n")


def to_csv(data: Path, prefix: bytes = b"") -> None:
    """Rewrite the tiny dataset's JSONL splits as UTF-8 CSV files starting with `prefix`."""
    for split in ("train", "test"):
        jsonl = data / f"{split}.jsonl"
        rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
        jsonl.unlink()
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["text", "label"])
        writer.writerows([r["text"], r["label"]] for r in rows)
        (data / f"{split}.csv").write_bytes(prefix + buf.getvalue().encode("utf-8"))


def malformed_jsonl_line(data, args):
    replace_line(data / "train.jsonl", 3, '{"text": "alpha cut short", "label": ')


def number_as_text(data, args):
    replace_line(data / "train.jsonl", 3, '{"text": 12345, "label": "alpha"}')


def latin1_byte_in_csv(data, args):
    to_csv(data)
    path = data / "train.csv"
    path.write_bytes(path.read_bytes().replace(b"alpha train sentence number 2", b"caf\xe9 au lait"))


def config_file_is_a_list(data, args):
    config = data.parent / "c.yaml"
    config.write_text("- scenario: class_il\n- seeds: [0]\n")
    args[:0] = ["--config", str(config)]


def output_dir_is_a_file(data, args):
    a_file = data.parent / "a-file"
    a_file.write_text("not a folder\n")
    args[args.index("--output-dir") + 1] = str(a_file)


def an_empty_text(data, args):
    replace_line(data / "train.jsonl", 3, '{"text": "   ", "label": "alpha"}')


# (id, extra command-line arguments, how to spoil the tiny dataset or the arguments, words the error must hold)
REFUSED = [
    ("malformed-jsonl-line", [], malformed_jsonl_line,
     ["train.jsonl, line 4: not valid JSON", 'each line must be one JSON object']),
    ("number-as-text", [], number_as_text,
     ["train.jsonl, line 4 (row 3): 'text' is 12345 (a number), not a string"]),
    ("latin-1-byte-in-csv", [], latin1_byte_in_csv,
     ["train.csv, line 10: not utf-8 text (byte 0xe9", "--set scenario_options.encoding=latin-1"]),
    ("config-file-is-a-list", [], config_file_is_a_list,
     ["c.yaml: expected a mapping of options", "got a YAML list"]),
    ("bad-yaml-in-set", ["--set", "dkvb.lr=["], None,
     ["--set 'dkvb.lr=[': not valid YAML at line 1"]),
    ("infinite-lr", ["--methods", "dkvb", "--set", "dkvb.lr=.inf"], None,
     ["dkvb.lr=inf must be > 0 (a finite number"]),
    ("negative-epochs", ["--methods", "dkvb", "--set", "dkvb.epochs=-3"], None,
     ["dkvb.epochs=-3 must be >= 1 (an integer"]),
    ("repeated-seed", ["--seeds", "0,0"], None,
     ["seeds=[0, 0] repeats seed(s) [0]; each seed runs once"]),
    ("output-dir-is-a-file", [], output_dir_is_a_file,
     ["a-file is a file, not a folder"]),
    ("unknown-key", ["--set", "nosuch=1"], None,
     ["unknown option 'nosuch'; accepted: ", "scenario_options.<option>", "<method>.<option> with a method of"]),
    ("empty-text", [], an_empty_text,
     ["split 'train': 1 rows have an empty 'text' (first: row 3)", "--set scenario_options.empty_texts=drop"]),
]


@pytest.mark.parametrize("extra, spoil, words", [case[1:] for case in REFUSED], ids=[case[0] for case in REFUSED])
def test_a_hostile_input_is_one_clear_error_before_anything_is_encoded(extra, spoil, words, main, tiny_encoder_dir,
                                                                       tmp_path, capsys):
    data, cache = tiny_dataset(tmp_path / "data"), tmp_path / "cache"
    args = base_args(tiny_encoder_dir("bert"), data, tmp_path / "out", cache, *extra)
    if spoil is not None:
        spoil(data, args)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    missing = [w for w in words if w not in errors[0]]
    assert not missing, f"{missing} not in: {errors[0]}"
    assert not cache.exists() or not any(cache.iterdir()), "it encoded before refusing"


def run_to_the_end(main, args, capsys) -> dict:
    assert main(args) == 0, capsys.readouterr().err[-2000:]
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error:" not in err, err
    return json.loads(Path(args[args.index("--output-dir") + 1], "results.json").read_text())


def test_a_csv_with_a_byte_order_mark_runs(main, tiny_encoder_dir, tmp_path, capsys):
    data = tiny_dataset(tmp_path / "data")
    to_csv(data, prefix=b"\xef\xbb\xbf")
    results = run_to_the_end(main, base_args(tiny_encoder_dir("bert"), data, tmp_path / "out", tmp_path / "cache"),
                             capsys)
    assert results["config"]["task_names"] == ["alpha+bravo", "charlie+delta"]  # the labels were read, BOM or not


def test_the_empty_text_hint_works_as_given(main, tiny_encoder_dir, tmp_path, capsys):
    """The refusal above says `--set scenario_options.empty_texts=drop`; passed as said, the run goes on."""
    data = tiny_dataset(tmp_path / "data")
    an_empty_text(data, [])
    args = base_args(tiny_encoder_dir("bert"), data, tmp_path / "out", tmp_path / "cache",
                     "--set", "scenario_options.empty_texts=drop")
    results = run_to_the_end(main, args, capsys)
    assert results["config"]["scenario_options"]["empty_texts"] == "drop"
    assert len(results["runs"]) == 1 and results["runs"][0]["accuracy_matrix"]
