"""What a run records besides results.json: the --report-to tracker (CSV, TensorBoard event files
read back with tensorboard's own reader), run.log, and the -v/-q flags on the terminal."""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import math

import pytest

from cli_tools import base_args, run_module, tiny_dataset

EPOCHS = 2
DKVB = ["--methods", "nmc,dkvb", "--set", "dkvb.values=sgd", "--set", f"dkvb.epochs={EPOCHS}",
        "--set", "dkvb.num_keys=16", "--set", "dkvb.num_codebooks=4", "--set", "dkvb.key_init_epochs=1",
        "--export", "none"]
TASK_LINE = "[nmc seed 0] task 1/2"


@pytest.fixture(scope="module")
def runs(tiny_encoder_dir, tmp_path_factory):
    """run(name, *flags) -> (exit code, stdout, results, output folder) of a tiny nmc + dkvb (SGD) job."""
    module = run_module()
    tmp = tmp_path_factory.mktemp("tracking")
    data = tiny_dataset(tmp / "data")
    done = {}

    def run(name: str, *flags, capsys):
        if name not in done:
            out = tmp / name
            rc = module.main(base_args(tiny_encoder_dir("bert"), data, out, tmp / "cache", *DKVB, *flags))
            stdout = capsys.readouterr().out
            results = json.loads((out / "results.json").read_text()) if rc == 0 else None
            done[name] = rc, stdout, results, out
        return done[name]

    return run


def matrix(results, method):
    return next(r for r in results["runs"] if r["method"] == method)["accuracy_matrix"]


def test_csv_tracker_holds_losses_accuracy_rows_timings_and_config(runs, capsys):
    rc, _, results, out = runs("default", capsys=capsys)  # csv is the default tracker
    assert rc == 0
    with (out / "logs" / "dkvb_seed0" / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 2 * EPOCHS and all(math.isfinite(x) and x > 0 for x in losses)
    steps = [int(r["step"]) for r in rows if r.get("train/loss")]
    assert steps == sorted(set(steps))  # one step per epoch, growing
    evaluated = [r for r in rows if r.get("eval/accuracy_task1")]
    a = matrix(results, "dkvb")
    assert [int(r["task"]) for r in evaluated] == [1, 2]
    for i, r in enumerate(evaluated):
        assert float(r["eval/accuracy_task1"]) == a[i][0] and float(r["eval/accuracy_task2"]) == a[i][1]
        assert float(r["time/learn_seconds"]) >= 0 and float(r["time/eval_seconds"]) >= 0
        assert int(r["step"]) == steps[EPOCHS * (i + 1) - 1]  # the task's last epoch's step
    final = next(r for r in rows if r.get("final/accuracy"))
    run = next(r for r in results["runs"] if r["method"] == "dkvb")
    assert float(final["final/accuracy"]) == run["final_accuracy"]
    assert float(final["final/train_seconds"]) == run["train_seconds"]
    config = json.loads((out / "logs" / "dkvb_seed0" / "config.json").read_text())
    assert config["method"] == "dkvb" and config["seed"] == 0 and config["method_options.epochs"] == EPOCHS
    assert config["report_to"] == "csv"
    # A method that reports no loss still gets one growing step per task.
    with (out / "logs" / "nmc_seed0" / "metrics.csv").open(newline="") as f:
        nmc = [r for r in csv.DictReader(f) if r.get("eval/accuracy_seen")]
    assert [int(r["step"]) for r in nmc] == [1, 2] and "train/loss" not in nmc[0]


def test_tensorboard_event_files_read_back(runs, capsys):
    if importlib.util.find_spec("tensorboard") is None:
        pytest.skip("tensorboard is not installed (pip install 'dkvb-nlp[tracking]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rc, stdout, results, out = runs("quiet_tensorboard", "-q", "--report-to", "tensorboard", capsys=capsys)
    assert rc == 0
    events = EventAccumulator(str(out / "logs" / "dkvb_seed0"))
    events.Reload()
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == list(range(1, 2 * EPOCHS + 1)) and all(e.value > 0 for e in losses)
    a = matrix(results, "dkvb")
    for j in range(2):
        logged = [e.value for e in events.Scalars(f"eval/accuracy_task{j + 1}")]
        assert logged == pytest.approx([a[0][j], a[1][j]], abs=1e-6)  # float32 in the event file
    assert events.Scalars("final/accuracy")[0].value == pytest.approx(results["runs"][1]["final_accuracy"], abs=1e-6)
    assert not (out / "logs" / "dkvb_seed0" / "metrics.csv").exists()


def test_default_prints_task_lines_and_run_log_keeps_them(runs, capsys):
    rc, stdout, _, out = runs("default", capsys=capsys)
    assert rc == 0 and TASK_LINE in stdout and "final acc" in stdout
    log = (out / "run.log").read_text()
    assert TASK_LINE in log and "final acc" in log
    assert any(line[:4].isdigit() and TASK_LINE in line for line in log.splitlines())  # time-stamped


def test_quiet_prints_only_the_table_but_run_log_keeps_every_line(runs, capsys):
    rc, stdout, _, out = runs("quiet_tensorboard", "-q", "--report-to", "tensorboard", capsys=capsys)
    assert rc == 0
    assert TASK_LINE not in stdout and "class_il: 2 tasks" not in stdout and "final acc" in stdout
    assert TASK_LINE in (out / "run.log").read_text()


def test_verbose_and_quiet_together_is_one_clear_error(tiny_encoder_dir, tmp_path, capsys):
    rc = run_module().main(base_args(tiny_encoder_dir("bert"), tiny_dataset(tmp_path / "d"), tmp_path / "o",
                                     tmp_path / "c", "-v", "-q"))
    assert rc == 2 and "-v and -q contradict" in capsys.readouterr().err


def test_the_command_leaves_third_party_logging_as_it_found_it(runs, capsys):
    import transformers

    level = transformers.utils.logging.get_verbosity()
    runs("default", capsys=capsys)
    assert transformers.utils.logging.get_verbosity() == level
    assert not [h for h in logging.getLogger("dkvb_nlp").handlers if type(h).__name__ == "_Console"]


def test_unknown_or_missing_tracker_is_refused_by_name(monkeypatch):
    from dkvb_nlp.engine import tracking
    from dkvb_nlp.runner.config import load_config

    with pytest.raises(ValueError, match="unknown tracker for report_to 'neptune'; accepted: csv, mlflow, none"):
        load_config(None, {"report_to": "neptune"})
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match=r"report_to='wandb' needs the wandb package.*pip install wandb"):
        load_config(None, {"report_to": "wandb"})
    load_config(None, {"report_to": "none"})  # needs nothing


def test_progress_bars_hide_when_stderr_is_not_a_terminal():
    from dkvb_nlp.progress import progress_bar

    import sys

    assert progress_bar(range(3), enabled=False).disable
    assert progress_bar(range(3), enabled=True).disable == (not sys.stderr.isatty())  # captured: not a terminal
