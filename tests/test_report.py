"""Report layer: atomic writes, results.json schema, CSVs, plots, tables and write_report."""

import csv
import json
import os

import numpy as np
import pytest

from dkvb_nlp.metrics import summarize
from dkvb_nlp.io import atomic_write, atomic_write_bytes, atomic_write_json, atomic_write_text
from dkvb_nlp.report import (
    RUN_FIELDS,
    aggregate,
    format_table,
    make_results,
    make_run,
    read_results,
    validate_results,
    versions,
    write_report,
    write_results,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TASKS = ["books", "dvd", "kitchen"]


def fake_results():
    """2 methods x 2 seeds on 3 tasks, plain python values as a job would produce."""
    rng = np.random.default_rng(0)
    runs = []
    for method in ("dkvb", "finetune"):
        for seed in (0, 1):
            a = np.tril(rng.uniform(0.5, 1.0, (3, 3))) + np.triu(rng.uniform(0.0, 0.3, (3, 3)), 1)
            runs.append(
                make_run(
                    method, seed, "domain_incremental", "amazon", a,
                    macro_f1_matrix=a * 0.9, train_seconds=10.0 + seed,
                    trainable_parameters=1000 if method == "dkvb" else 22_000_000,
                    task_names=TASKS, lr=0.1,
                )
            )
    return make_results(runs, config={"epochs": 2, "tasks": TASKS})


def leftovers(directory):
    return [p for p in os.listdir(directory) if p.endswith(".tmp")]


# --- atomic writes ---------------------------------------------------------------------------


def test_atomic_writes_round_trip_and_leave_no_temp_files(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "héllo\n")
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    atomic_write_json(tmp_path / "c.json", {"x": [1, 2]})
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert json.loads((tmp_path / "c.json").read_text()) == {"x": [1, 2]}
    assert leftovers(tmp_path) == []
    # Not mkstemp's private 0600: readable like a file made by open().
    assert (tmp_path / "a.txt").stat().st_mode & 0o044


def test_failure_mid_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("old")

    def half_then_fail(f):
        f.write(b'{"runs": [')
        raise RuntimeError("serializer exploded")

    with pytest.raises(RuntimeError, match="exploded"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_unserializable_json_keeps_the_old_file(tmp_path):
    target = tmp_path / "c.json"
    target.write_text("old")
    with pytest.raises(TypeError):
        atomic_write_json(target, {"ok": 1, "bad": object()})
    assert target.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_atomic_write_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        atomic_write_text(tmp_path / "missing" / "a.txt", "x")
    with pytest.raises(TypeError, match="bytes-like"):
        atomic_write_bytes(tmp_path / "a", "text")


# --- results.json ----------------------------------------------------------------------------


def test_make_run_fills_the_schema():
    run = fake_results()["runs"][0]
    assert set(RUN_FIELDS) <= set(run)
    assert {k: run[k] for k in summarize(run["accuracy_matrix"])} == summarize(run["accuracy_matrix"])
    assert run["lr"] == 0.1 and run["task_names"] == TASKS
    with pytest.raises(ValueError, match=r"\['bwt'\] clash"):
        make_run("m", 0, "s", "d", [[0.5]], bwt=0.3)


def test_results_json_round_trip(tmp_path):
    results = fake_results()
    path = write_results(results, tmp_path / "results.json")
    assert read_results(path) == json.loads(json.dumps(results))
    assert read_results(path) == results


def test_results_json_converts_numpy_and_nulls_non_finite(tmp_path):
    results = fake_results()
    results["config"]["lr"] = np.float32(0.5)
    results["config"]["steps"] = np.int64(3)
    results["config"]["loss_floor"] = float("nan")
    results["runs"][0]["accuracy_matrix"] = np.asarray(results["runs"][0]["accuracy_matrix"])
    back = read_results(write_results(results, tmp_path / "r.json"))
    assert back["config"]["lr"] == 0.5 and back["config"]["steps"] == 3
    assert back["config"]["loss_floor"] is None
    assert "NaN" not in (tmp_path / "r.json").read_text()


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda r: r.update(runs=[]), "non-empty list"),
        (lambda r: r["runs"][0].pop("seed"), r"lacks fields \['seed'\]"),
        (lambda r: r["runs"][0].update(seed="0"), "seed must be an integer; got '0'"),
        (lambda r: r["runs"][0].update(final_accuracy=0.1), "final_accuracy is 0.1 but"),
        (lambda r: r["runs"][0].update(accuracy_matrix=[[0.5, 0.5]]), "square"),
        (lambda r: r["runs"][0].update(macro_f1_matrix=[[0.5]]), r"macro_f1_matrix has shape \(1, 1\)"),
        (lambda r: r["runs"][0].update(train_seconds=-1.0), "train_seconds must be a number >= 0"),
        (lambda r: r["runs"][0].update(trainable_parameters=1.5), "trainable_parameters must be an integer"),
        (lambda r: r["runs"][0].update(task_names=["a"]), "task_names must be 3 strings"),
        (lambda r: r.update(config=[1]), r"results\['config'\] must be a dict"),
    ],
)
def test_validate_results_names_the_bad_field(edit, match):
    results = fake_results()
    edit(results)
    with pytest.raises(ValueError, match=match):
        validate_results(results)


def test_versions_tolerates_missing_packages():
    v = versions()
    for key in ("python", "platform", "torch", "transformers", "datasets", "accelerate", "dkvb_nlp"):
        assert key in v
    assert v["dkvb_nlp"] is not None and v["python"].count(".") == 2


# --- aggregation, tables ---------------------------------------------------------------------


def test_aggregate_means_and_sample_std():
    results = fake_results()
    dkvb = aggregate(results)[0]
    finals = [r["final_accuracy"] for r in results["runs"][:2]]
    assert dkvb.label == "dkvb" and dkvb.seeds == [0, 1] and dkvb.task_names == TASKS
    assert dkvb.scalars["final_accuracy"] == pytest.approx((np.mean(finals), np.std(finals, ddof=1)))
    assert dkvb.scalars["train_seconds"] == pytest.approx((10.5, np.std([10, 11], ddof=1)))


def test_aggregate_rejects_duplicate_seeds_and_keeps_benchmarks_apart():
    results = fake_results()
    results["runs"][1]["seed"] = 0
    with pytest.raises(ValueError, match=r"'dkvb' has several runs with seed\(s\) \[0\]"):
        aggregate(results)
    results = fake_results()
    results["runs"][3]["dataset"] = "yelp"
    labels = [s.label for s in aggregate(results)]
    assert labels == [
        "amazon/domain_incremental/dkvb",
        "amazon/domain_incremental/finetune",
        "yelp/domain_incremental/finetune",
    ]


def test_tables_show_every_method():
    results = fake_results()
    text = format_table(results)
    md = format_table(results, "markdown")
    final = aggregate(results)[1].scalars["final_accuracy"]
    for table in (text, md):
        assert "dkvb" in table and "finetune" in table
        assert f"{100 * final[0]:.2f} ± {100 * final[1]:.2f}" in table
        assert "22,000,000" in table
    lines = text.splitlines()
    assert len({len(line) for line in lines[:2]}) == 1  # header and rule aligned
    assert md.splitlines()[1].startswith("| ---") and md.count("\n") == 4
    with pytest.raises(ValueError, match="unknown table style 'html'; accepted: text, markdown"):
        format_table(results, "html")


def test_single_seed_table_has_no_spread():
    results = fake_results()
    results["runs"] = results["runs"][:1]
    assert "±" not in format_table(results)


# --- write_report ----------------------------------------------------------------------------


def test_write_report_writes_everything(tmp_path, capsys):
    results = fake_results()
    out = tmp_path / "report"
    paths = write_report(results, out)
    assert "dkvb" in capsys.readouterr().out

    expected = {
        "results.json", "summary.txt", "summary.md", "accuracy_curves.png",
        "accuracy_matrix_dkvb.csv", "accuracy_matrix_dkvb_seed0.csv", "accuracy_matrix_dkvb_seed1.csv",
        "accuracy_matrix_finetune.csv", "accuracy_matrix_finetune_seed0.csv",
        "accuracy_matrix_finetune_seed1.csv",
        "accuracy_heatmap_dkvb.png", "accuracy_heatmap_finetune.png", "report.html",
    }
    assert set(paths) == expected
    assert set(os.listdir(out)) == expected  # and no temp files
    assert all(paths[name] == out / name for name in expected)

    assert read_results(paths["results.json"]) == results

    with open(paths["accuracy_matrix_dkvb.csv"], newline="") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 4 and all(len(r) == 4 for r in rows)
    assert rows[0][1:] == TASKS and [r[0] for r in rows[1:]] == TASKS
    mean = np.mean([r["accuracy_matrix"] for r in results["runs"][:2]], axis=0)
    np.testing.assert_allclose(np.array([r[1:] for r in rows[1:]], dtype=float), mean)
    with open(paths["accuracy_matrix_finetune_seed1.csv"], newline="") as f:
        rows = list(csv.reader(f))
    assert np.array([r[1:] for r in rows[1:]], dtype=float).tolist() == results["runs"][3]["accuracy_matrix"]

    for name in expected:
        if name.endswith(".png"):
            data = paths[name].read_bytes()
            assert data.startswith(PNG_MAGIC) and len(data) > 1000

    for name in ("summary.txt", "summary.md"):
        table = paths[name].read_text(encoding="utf-8")
        assert "dkvb" in table and "finetune" in table


def test_write_report_single_seed_and_awkward_names(tmp_path):
    results = fake_results()
    results["runs"] = [results["runs"][0], results["runs"][2]]
    results["runs"][1]["method"] = "fine tune/EWC"
    paths = write_report(results, tmp_path, echo=False)
    # One seed: only the mean file; unsafe characters in file names become "_".
    assert "accuracy_matrix_fine_tune_EWC.csv" in paths
    assert not any("_seed" in name for name in paths)
    assert "fine tune/EWC" in paths["summary.txt"].read_text(encoding="utf-8")


def test_write_report_rejects_colliding_names_before_writing(tmp_path):
    results = fake_results()
    for run in results["runs"][2:]:
        run["method"] = "dkvb?"  # -> "dkvb_", distinct from "dkvb", fine
    write_report(results, tmp_path / "ok", echo=False)
    results["runs"][0]["method"] = results["runs"][1]["method"] = "dkvb!"  # also "dkvb_"
    with pytest.raises(ValueError, match="both map to file name part 'dkvb_'"):
        write_report(results, tmp_path / "bad", echo=False)
    assert not (tmp_path / "bad").exists()


def test_write_report_bad_results_write_nothing(tmp_path):
    results = fake_results()
    results["runs"][0]["bwt"] = 0.42
    with pytest.raises(ValueError, match="bwt is 0.42"):
        write_report(results, tmp_path / "out", echo=False)
    assert not (tmp_path / "out").exists()


def test_many_tasks_plot_without_annotations(tmp_path):
    t = 25
    a = np.tril(np.full((t, t), 0.8)) + np.triu(np.full((t, t), 0.1), 1)
    results = make_results([make_run("m", 0, "s", "d", a)], versions_={})
    paths = write_report(results, tmp_path, echo=False)
    assert paths["accuracy_heatmap_m.png"].read_bytes().startswith(PNG_MAGIC)
    assert "task25" in paths["accuracy_matrix_m.csv"].read_text()


def test_write_report_collision_writes_nothing(tmp_path):
    results = fake_results()
    for run in results["runs"]:
        run["method"] = "a" if run["method"] == "dkvb" else "a_seed1"  # a's seed-1 CSV vs a_seed1's mean
    with pytest.raises(ValueError, match="two outputs would be named accuracy_matrix_a_seed1.csv"):
        write_report(results, tmp_path / "out", echo=False)
    assert not (tmp_path / "out").exists()


def test_a_final_only_run_reports_its_final_accuracy_and_blanks(tmp_path, capsys):
    # finetune_joint's default: evaluated only after the last task, so rows 0 and 1 are null.
    results = fake_results()
    last = [0.7, 0.8, 0.9]
    run = make_run("finetune_joint", 0, "domain_incremental", "amazon", [[None] * 3, [float("nan")] * 3, last],
                   macro_f1_matrix=[[None] * 3, [None] * 3, last], train_seconds=5.0, task_names=TASKS)
    assert run["accuracy_matrix"][:2] == [[None] * 3] * 2  # the record equals its JSON
    assert run["final_accuracy"] == pytest.approx(0.8) and run["bwt"] is None and run["forgetting"] is None
    results["runs"].append(run)
    paths = write_report(results, tmp_path)
    assert read_results(paths["results.json"]) == results
    row = next(line for line in format_table(results).splitlines() if line.startswith("finetune_joint"))
    assert row.split()[1:6] == ["1", "80.00", "-", "-", "-"]
    with open(paths["accuracy_matrix_finetune_joint.csv"], newline="") as f:
        rows = list(csv.reader(f))
    assert rows[1][1:] == ["", "", ""] and [float(v) for v in rows[3][1:]] == last
    assert paths["accuracy_heatmap_finetune_joint.png"].read_bytes().startswith(PNG_MAGIC)
    bad = json.loads(json.dumps(results))
    bad["runs"][-1]["bwt"] = 0.0
    with pytest.raises(ValueError, match=r"runs\[4\].bwt is 0.0 but its accuracy_matrix has unmeasured rows"):
        validate_results(bad)
